"""Evaluation metrics and time-saving arithmetic on hand-made masks with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectcam.core.postprocess import mask_to_proposals
from defectcam.evaluation import (
    AnnotatorModel,
    Eq3Groups,
    GroupThresholds,
    MatchRule,
    PixelCounts,
    best_threshold,
    eq3_saving,
    estimate_time_saving,
    groups_from_ious,
    match_instances,
    perimeter_px,
    pixel_counts,
    summarize,
    threshold_sweep,
)

H = W = 40
STRICT = MatchRule(tolerance_px=0)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Boolean image with rows y0..y1-1, columns x0..x1-1 set."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


SQUARE = box(10, 20, 10, 20)  # 100 px, contour perimeter 36


# --- pixel counts -------------------------------------------------------------------------

def test_pixel_counts_sum_and_empty_definitions():
    half = pixel_counts(box(10, 20, 15, 25), SQUARE)
    assert (half.tp, half.fp, half.fn) == (50, 50, 50)
    assert half.iou == pytest.approx(1 / 3)
    assert (half.precision, half.recall, half.f1) == (0.5, 0.5, 0.5)
    total = half + PixelCounts(tp=50)
    assert (total.tp, total.fp, total.fn) == (100, 50, 50)
    assert total.f1 == pytest.approx(200 / 300)
    empty = PixelCounts()
    assert (empty.iou, empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0, 1.0)
    nothing_predicted = PixelCounts(fn=7)
    assert (nothing_predicted.precision, nothing_predicted.recall) == (1.0, 0.0)
    assert (nothing_predicted.iou, nothing_predicted.f1) == (0.0, 0.0)
    with pytest.raises(ValueError):
        pixel_counts(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_perimeter_of_square_and_line():
    assert perimeter_px(SQUARE) == 36.0
    line = np.zeros((H, W), bool)
    line[10, 5:35] = True
    assert perimeter_px(line) == 58.0  # traced there and back: 2 x 29


# --- instance matching --------------------------------------------------------------------

def test_perfect_proposal():
    m = match_instances([SQUARE.copy()], SQUARE, label="spalling", image_id="a")
    assert (m.pixels.tp, m.pixels.fp, m.pixels.fn) == (100, 0, 0)
    (inst,) = m.instances
    assert inst.proposals == (0,)
    assert (inst.iou, inst.iou_tolerant, inst.coverage, inst.coverage_tolerant) == (1, 1, 1, 1)
    assert inst.boundary_mismatch_px == 0.0
    assert inst.found and m.n_found == 1 and m.false_positives == ()
    t = estimate_time_saving(m.instances)
    assert t.eq3.to_dict() == {"G95": 1, "G75": 0, "G50": 0, "none": 0, "n": 1,
                               "saving": 0.95}
    # scratch: 10 + 2 x max(4, 36/10) = 18 s; refine: review only, 5 s.
    assert t.edit_cost.scratch_s == 18.0 and t.edit_cost.assisted_s == 5.0
    assert t.edit_cost.saving == pytest.approx(13 / 18)


def test_half_overlap_strict_and_tolerant():
    proposal = box(10, 20, 15, 25)
    strict = match_instances([proposal], SQUARE, STRICT).instances[0]
    assert strict.iou == pytest.approx(1 / 3) and strict.iou_tolerant == pytest.approx(1 / 3)
    assert strict.coverage == 0.5 and strict.found  # coverage 0.5 meets the >= 0.5 rule
    # 36 outline px, 10 of them (top and bottom rows under the proposal) lie on its outline.
    assert strict.boundary_mismatch_px == pytest.approx(26.0)
    t = estimate_time_saving([strict])
    assert t.eq3.g50 == 0 and t.eq3.none == 1 and t.eq3.saving == 0.0
    assert t.edit_cost.assisted_s == pytest.approx(5 + 2 * 2.6)

    tolerant = match_instances([proposal], SQUARE, MatchRule(tolerance_px=2)).instances[0]
    assert tolerant.iou == pytest.approx(1 / 3)  # the plain IoU never uses the tolerance
    assert tolerant.coverage_tolerant == pytest.approx(0.7)  # columns 13..19 within 2 px
    assert tolerant.iou_tolerant == pytest.approx(0.7 / 1.3)  # Dice 140/200 as IoU
    assert groups_from_ious([tolerant.iou_tolerant]).g50 == 1


def test_not_found_below_half_coverage():
    m = match_instances([box(10, 20, 16, 25)], SQUARE, STRICT)
    assert m.instances[0].coverage == pytest.approx(0.4)
    assert not m.instances[0].found and m.n_found == 0
    assert m.false_positives == ()  # it touches the instance, so it is no false positive


def test_split_instance_two_proposals():
    truth = box(10, 20, 10, 30)
    left, right = box(10, 20, 10, 20), box(10, 20, 20, 30)
    m = match_instances([left, right], truth, STRICT)
    (inst,) = m.instances
    assert inst.proposals == (0, 1)
    assert inst.area == 200 and inst.iou == 1.0 and inst.coverage == 1.0
    assert inst.boundary_mismatch_px == 0.0
    assert m.pixels.to_dict()["iou"] == 1.0 and m.n_false_positives == 0


def test_false_positive_and_proposal_objects():
    far = box(30, 35, 30, 35)  # 25 px, 10 px away from the square
    proposals = mask_to_proposals(SQUARE | far, "rust", min_area=1)  # Proposal objects
    assert [p.area for p in proposals] == [100, 25]
    m = match_instances(proposals, SQUARE, label="rust")
    assert m.false_positives == (1,) and m.n_proposals == 2
    assert (m.pixels.tp, m.pixels.fp, m.pixels.fn) == (100, 25, 0)
    assert m.instances[0].proposals == (0,) and m.instances[0].iou == 1.0
    t = estimate_time_saving(m.instances, m.n_false_positives)
    assert t.edit_cost.assisted_s == 5.0 + 2.0  # refine + one deletion click
    assert t.eq3.saving == 0.95  # false positives do not enter Eq. 3


def test_empty_image_and_no_instances():
    empty = np.zeros((H, W), bool)
    m = match_instances([], empty)
    assert m.n_instances == 0 and m.n_proposals == 0
    assert m.pixels.to_dict() == {"tp": 0, "fp": 0, "fn": 0, "iou": 1.0, "precision": 1.0,
                                  "recall": 1.0, "f1": 1.0, "near": 0, "total": 0,
                                  "iou_tolerant": 1.0}
    t = estimate_time_saving(m.instances)
    assert t.eq3.saving == 0.0 and t.edit_cost.saving == 0.0

    m = match_instances([box(5, 10, 5, 10)], empty)  # a proposal on a defect-free image
    assert m.false_positives == (0,) and m.pixels.fp == 25
    assert (m.pixels.precision, m.pixels.recall, m.pixels.f1) == (0.0, 1.0, 0.0)
    t = estimate_time_saving(m.instances, m.n_false_positives)
    assert t.edit_cost.scratch_s == 0.0 and t.edit_cost.saved_s == -2.0
    assert t.edit_cost.saving == 0.0 and t.eq3.n == 0

    s = summarize([m])
    assert s.per_defect[""].instance_recall == 1.0
    assert s.per_defect[""].proposal_precision == 0.0
    json.dumps(s.to_dict())


def test_missed_instance_costs_scratch():
    m = match_instances([], SQUARE)
    inst = m.instances[0]
    assert inst.proposals == () and not inst.found and inst.iou == 0.0
    assert (m.pixels.tp, m.pixels.fn) == (0, 100)
    t = estimate_time_saving(m.instances)
    assert t.edit_cost.n_missed == 1 and t.edit_cost.assisted_s == t.edit_cost.scratch_s
    assert t.per_instance[0].action == "draw" and t.eq3.none == 1


def test_thin_crack_one_pixel_offset_uses_tolerance():
    crack = np.zeros((H, W), bool)
    crack[10, 5:35] = True
    shifted = np.zeros((H, W), bool)
    shifted[11, 5:35] = True
    strict = match_instances([shifted], crack, STRICT)
    assert strict.false_positives == (0,) and strict.n_found == 0
    assert strict.instances[0].proposals == ()

    m = match_instances([shifted], crack, MatchRule(tolerance_px=1))
    (inst,) = m.instances
    assert m.false_positives == () and inst.found
    assert inst.iou == 0.0 and inst.coverage == 0.0  # plain overlap is empty
    assert inst.coverage_tolerant == 1.0 and inst.iou_tolerant == 1.0
    assert inst.boundary_mismatch_px == 0.0
    t = estimate_time_saving(m.instances)
    assert t.eq3.g95 == 1
    assert t.edit_cost.scratch_s == pytest.approx(10 + 2 * 5.8)  # perimeter 58 px
    assert t.edit_cost.assisted_s == 5.0
    # Grouping on the plain IoU instead would put the same crack in no group.
    assert estimate_time_saving(m.instances, thresholds=GroupThresholds(tolerant=False)
                                ).eq3.none == 1


def test_min_area_ignores_specks_without_false_positives():
    speck = np.zeros((H, W), bool)
    speck[30, 30] = speck[31, 31] = True  # 8-connected: one 2-px component
    truth = SQUARE | speck
    m = match_instances([box(29, 33, 29, 33)], truth, MatchRule(min_instance_area=5))
    assert m.n_instances == 1 and m.n_ignored_components == 1
    assert m.false_positives == () and m.instances[0].proposals == ()
    assert match_instances([], truth).n_instances == 2  # default keeps every component


def test_proposal_touching_two_instances_counts_for_both():
    a, b = box(10, 20, 5, 15), box(10, 20, 25, 35)
    m = match_instances([box(10, 20, 5, 35)], a | b, STRICT)
    assert [i.proposals for i in m.instances] == [(0,), (0,)]
    assert [i.iou for i in m.instances] == pytest.approx([1 / 3, 1 / 3])
    assert [i.coverage for i in m.instances] == [1.0, 1.0]


# --- Eq. 3 and the annotator model ----------------------------------------------------------

# Paper Table 2: instances, |G95|, |G75|, |G50|, reported time saved (%).
TABLE2 = {"crack": (111, 19, 40, 30, 57), "spalling": (65, 17, 19, 14, 58),
          "rust": (89, 22, 14, 9, 40)}


@pytest.mark.parametrize("defect", sorted(TABLE2))
def test_eq3_reproduces_paper_table2(defect):
    n, g95, g75, g50, percent = TABLE2[defect]
    saving = eq3_saving(g95, g75, g50, n)
    assert round(100 * saving) == percent
    expected = {"crack": 63.05 / 111, "spalling": 37.4 / 65, "rust": 35.9 / 89}[defect]
    assert saving == pytest.approx(expected)


def test_eq3_overall_pooled_and_macro():
    groups = {k: Eq3Groups(g95, g75, g50, n) for k, (n, g95, g75, g50, _) in TABLE2.items()}
    pooled = groups["crack"] + groups["spalling"] + groups["rust"]
    assert (pooled.n, pooled.g95, pooled.g75, pooled.g50) == (265, 58, 73, 53)
    assert pooled.saving == pytest.approx(136.35 / 265)
    assert round(100 * pooled.saving) == 51  # Table 2 "all defects" row
    macro = np.mean([g.saving for g in groups.values()])
    assert round(100 * macro) == 52  # the "52 % overall" of the text is the per-defect mean


def test_group_boundaries():
    g = groups_from_ious([0.8, 0.7999, 0.65, 0.5, 0.4999, 0.0])
    assert (g.g95, g.g75, g.g50, g.none, g.n) == (1, 2, 1, 2, 6)
    assert g.saving == pytest.approx((0.95 + 1.5 + 0.5) / 6)
    assert eq3_saving(0, 0, 0, 0) == 0.0


def test_annotator_model_calibration_to_paper_spalling():
    model = AnnotatorModel()
    assert model.scratch_seconds(850.0) == pytest.approx(180.0)
    assert model.refine_seconds(850.0, 130.0) == pytest.approx(31.0)
    assert AnnotatorModel.calibrated() == model
    fitted = AnnotatorModel.calibrated(scratch_s=100.0, refine_s=20.0)
    assert fitted.per_vertex_s == pytest.approx(90 / 85)
    assert fitted.refine_seconds(850.0, 130.0) == pytest.approx(20.0)
    # A hopeless proposal costs at most deleting it and drawing from scratch.
    assert model.refine_seconds(850.0, 10_000.0) == pytest.approx(182.0)
    assert model.scratch_seconds(0.0) == 18.0  # at least min_vertices


# --- aggregation and the threshold sweep ----------------------------------------------------

def test_summarize_per_defect_and_overall():
    perfect = match_instances([SQUARE.copy()], SQUARE, label="spalling")
    missed = match_instances([box(30, 35, 30, 35)], SQUARE, label="rust")
    s = summarize([perfect, missed, perfect])
    assert list(s.per_defect) == ["rust", "spalling"]
    sp, rust = s.per_defect["spalling"], s.per_defect["rust"]
    assert (sp.n_images, sp.n_instances, sp.n_found, sp.pixels.tp) == (2, 2, 2, 200)
    assert (rust.n_found, rust.n_false_positives, rust.pixels.fp) == (0, 1, 25)
    assert (s.overall.label, s.overall.n_images, s.overall.n_instances) == ("all", 3, 3)
    assert (s.overall.pixels.tp, s.overall.pixels.fp, s.overall.pixels.fn) == (200, 25, 100)
    assert s.overall.time.eq3.saving == pytest.approx(1.9 / 3)
    assert s.macro_eq3_saving == pytest.approx((0.95 + 0.0) / 2)
    assert s.overall.time.edit_cost.assisted_s == pytest.approx(5 + 5 + 18 + 2)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["overall"]["time"]["eq3"]["G95"] == 2
    assert "Chebyshev" in d["rules"][0] and "calibrated" in d["overall"]["time"]["assumptions"]


def test_threshold_sweep_counts():
    cam = np.array([[0.0, 0.1, 0.2, 0.3, 0.4]])
    truth = np.array([[False, False, True, True, True]])
    points = threshold_sweep([(cam, truth), (cam, truth)], thresholds=[0.05, 0.1, 0.25, 0.5])
    counts = [(p.pixels.tp, p.pixels.fp, p.pixels.fn) for p in points]
    assert counts == [(6, 2, 0), (6, 0, 0), (4, 0, 2), (0, 0, 6)]  # strict ">" at 0.1
    assert best_threshold(points).threshold == 0.1
    assert best_threshold(points, "precision").threshold == 0.1  # ties: lowest threshold
    assert points[3].to_dict()["f1"] == 0.0


def test_threshold_sweep_matches_direct_binarisation():
    rng = np.random.default_rng(0)
    pairs = [(rng.random((16, 16)), rng.random((16, 16)) > 0.7) for _ in range(3)]
    pairs[0][0][0, 0] = np.nan  # NaN counts as 0
    for p in threshold_sweep(pairs):
        direct = PixelCounts()
        for cam, truth in pairs:
            direct = direct + pixel_counts(np.nan_to_num(cam) > p.threshold, truth)
        assert p.pixels == direct


def test_time_saving_counts_add_field_by_field():
    """Per-image Eq. 3 groups and edit costs sum to the totals the reports print."""
    from defectcam.evaluation.timesave import EditCost, Eq3Groups

    total = sum([Eq3Groups(1, 2, 3, 10), Eq3Groups(0, 1, 0, 4)], Eq3Groups())
    assert total == Eq3Groups(g95=1, g75=3, g50=3, n=14)
    cost = EditCost(2, 1, 1, 0, 30.0, 12.5) + EditCost(1, 0, 1, 3, 20.0, 26.0)
    assert cost == EditCost(3, 1, 2, 3, 50.0, 38.5)
    assert cost.saved_s == 11.5


def test_tolerant_pixel_iou_forgives_a_one_pixel_shift_only_within_the_tolerance() -> None:
    truth = np.zeros((40, 40), bool)
    truth[5:35, 20] = True  # a 1 px crack label
    beside = np.zeros_like(truth)
    beside[5:35, 21] = True  # the proposal one pixel to the right
    far = np.zeros_like(truth)
    far[5:35, 26] = True  # six pixels away
    near = pixel_counts(beside, truth, tolerance_px=2)
    assert near.iou == 0.0 and near.iou_tolerant == pytest.approx(1.0)
    assert pixel_counts(far, truth, tolerance_px=2).iou_tolerant == 0.0
    assert pixel_counts(beside, truth).iou_tolerant == 0.0  # no tolerance: the plain IoU
    half = pixel_counts(beside, truth, 2) + pixel_counts(far, truth, 2)
    assert half.iou_tolerant == pytest.approx((0.5) / (2 - 0.5))
