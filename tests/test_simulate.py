"""The simulated annotator: one click per component, negatives far from every defect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defectcam.cli import main
from defectcam.core.postprocess import mask_to_proposals
from defectcam.data.cvat_xml import clicks_from_annotations, read_cvat_xml
from defectcam.data.simulate import (
    add_negative_clicks,
    hard_negative_clicks,
    negative_clicks,
    positive_clicks,
    simulate_clicks,
)
from defectcam.data.sources import ImagePair, list_pairs, load_defect_mask
from tests.helpers import save_untrained


def synthetic_mask(h: int = 120, w: int = 160) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[10:20, 10:60] = True  # a bar
    cv2.line(mask.view(np.uint8), (100, 10), (150, 70), 1, 2)  # a thin diagonal crack
    mask[90:110, 20:40] = True  # a blob
    mask[100:102, 140:142] = True  # a 4-pixel speck
    return mask


def min_distance_to(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    d = np.hypot(points[:, None, 0] - xs[None], points[:, None, 1] - ys[None])
    return d.min(axis=1)


def test_one_click_per_component_inside_it():
    mask = synthetic_mask()
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    clicks = positive_clicks(mask, np.random.default_rng(0), min_area=10)
    assert clicks.shape == (3, 2)
    hit = labels[clicks[:, 1], clicks[:, 0]]
    assert (hit > 0).all() and len(set(hit.tolist())) == 3  # one per big component
    with_speck = positive_clicks(mask, np.random.default_rng(0), min_area=1)
    assert len(with_speck) == 4
    largest = positive_clicks(mask, np.random.default_rng(0), min_area=1, max_clicks=2)
    assert sorted(labels[largest[:, 1], largest[:, 0]].tolist()) == sorted(
        np.argsort(-np.bincount(labels.ravel())[1:])[:2] + 1)
    assert positive_clicks(np.zeros((5, 5), bool), np.random.default_rng(0)).shape == (0, 2)


def test_negatives_far_from_defects_and_deterministic():
    mask = synthetic_mask()
    a = negative_clicks(mask, np.random.default_rng(1), count=8, min_distance=25)
    assert a.shape == (8, 2) and len({tuple(p) for p in a.tolist()}) == 8
    assert (min_distance_to(mask, a) >= 25).all()
    b = negative_clicks(mask, np.random.default_rng(1), count=8, min_distance=25)
    np.testing.assert_array_equal(a, b)
    c = negative_clicks(mask, np.random.default_rng(2), count=8, min_distance=25)
    assert not np.array_equal(a, c)
    # nowhere far enough: no negatives rather than wrong ones
    assert negative_clicks(mask, np.random.default_rng(1), 5, min_distance=500).shape == (0, 2)
    # no defect at all: anywhere is fine
    empty = negative_clicks(np.zeros((50, 60), bool), np.random.default_rng(0), 5, 30)
    assert empty.shape == (5, 2) and (empty[:, 0] < 60).all() and (empty[:, 1] < 50).all()


def test_negatives_on_a_large_downsampled_mask():
    mask = np.zeros((2100, 3300), dtype=bool)
    cv2.line(mask.view(np.uint8), (0, 1000), (3299, 1200), 1, 3)
    mask[200:260, 2900:2990] = True
    neg = negative_clicks(mask, np.random.default_rng(0), count=30, min_distance=150,
                          max_side=400)
    assert len(neg) == 30
    assert (neg[:, 0] < 3300).all() and (neg[:, 1] < 2100).all()
    assert (min_distance_to(mask, neg) >= 150).all()


def write_pair(tmp_path, name: str, mask: np.ndarray) -> ImagePair:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    image = np.full((*mask.shape, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "images" / f"{name}.jpg"), image)
    cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
    return ImagePair(tmp_path / "images" / f"{name}.jpg", tmp_path / "masks" / f"{name}.png",
                     "deepcrack", f"images/{name}.jpg")


def test_simulate_clicks_writes_cvat_xml(tmp_path):
    pairs = [write_pair(tmp_path, "a", synthetic_mask()),
             write_pair(tmp_path, "b", np.zeros((64, 80), bool))]
    xml = tmp_path / "sim.xml"
    ann = simulate_clicks(pairs, "crack", seed=3, min_area=10, negatives_per_image=4,
                          min_distance=20, path=xml)
    again = simulate_clicks(pairs, "crack", seed=3, min_area=10, negatives_per_image=4,
                            min_distance=20)
    assert [s.points.tolist() for s in ann.images[0].shapes] == [
        s.points.tolist() for s in again.images[0].shapes]
    back = read_cvat_xml(xml)
    assert back.label_names == ("crack", "spalling", "rust", "no-defect")
    assert [(i.name, i.width, i.height) for i in back.images] == [
        ("images/a.jpg", 160, 120), ("images/b.jpg", 80, 64)]
    assert {s.kind for i in back.images for s in i.shapes} == {"points"}
    assert {s.source for i in back.images for s in i.shapes} == {"manual"}
    a, b = clicks_from_annotations(back, "crack")
    assert len(a.positives) == 3 and len(a.negatives) == 4
    assert len(b.positives) == 0 and len(b.negatives) == 4
    mask = synthetic_mask()
    assert mask[a.positives[:, 1].astype(int), a.positives[:, 0].astype(int)].all()
    assert (min_distance_to(mask, a.negatives) >= 20).all()


def test_simulate_on_real_images(shared_data):
    pairs = list_pairs("deepcrack", shared_data)[:1] + list_pairs("corrosion", shared_data)[:1]
    for pair, defect in zip(pairs, ("crack", "rust"), strict=True):
        ann = simulate_clicks([pair], defect, seed=0, min_distance=32)
        (clicks,) = clicks_from_annotations(ann, defect)
        mask = load_defect_mask(pair, defect)
        assert (clicks.height, clicks.width) == mask.shape
        assert len(clicks.positives) >= 1
        pos = clicks.positives.astype(int)
        assert mask[pos[:, 1], pos[:, 0]].all()
        _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        hit = labels[pos[:, 1], pos[:, 0]]
        assert len(set(hit.tolist())) == len(hit)  # never two clicks on one component
        if len(clicks.negatives):
            assert (min_distance_to(mask, clicks.negatives) >= 32).all()


@pytest.mark.parametrize(("shape", "max_side"), [((120, 160), 1024), ((700, 900), 200)])
def test_crop_size_keeps_defects_out_of_negative_crops(tmp_path, shape, max_side):
    from defectcam.data.crops import build_crop_set

    mask = np.zeros(shape, dtype=bool)
    mask[: shape[0] // 4, : shape[1] // 5] = True
    cv2.line(mask.view(np.uint8), (shape[1] // 2, 0), (shape[1] // 2 + 10, shape[0] - 1), 1, 1)
    pair = write_pair(tmp_path, "m", mask)
    ann = simulate_clicks([pair], "crack", seed=0, negatives_per_image=20, min_distance=1,
                          crop_size=48, max_side=max_side)
    clicks = clicks_from_annotations(ann, "crack")
    crops = build_crop_set(clicks, tmp_path, crop_size=48, crops_per_click=8)
    negatives = crops.origins[crops.labels == 0]
    assert len(negatives) == 8 * len(clicks[0].positives) > 0
    for x0, y0 in negatives:
        assert not mask[y0 : y0 + 48, x0 : x0 + 48].any()
    # without crop_size, a bare 1-px distance puts defects into some negative crops
    loose = simulate_clicks([pair], "crack", seed=0, negatives_per_image=400, min_distance=1,
                            max_side=max_side)
    crops = build_crop_set(clicks_from_annotations(loose, "crack"), tmp_path, crop_size=48,
                           negative_ratio=100)
    assert any(mask[y0 : y0 + 48, x0 : x0 + 48].any()
               for x0, y0 in crops.origins[crops.labels == 0])


def test_hard_negatives_click_inside_rejected_proposals_only(tmp_path):
    # The "product" proposes a blob on the truth and two elsewhere; the annotator rejects
    # the two: one negative click inside each, far from the defect; the kept one gets none.
    mask = np.zeros((300, 400), bool)
    mask[40:80, 40:120] = True
    pair = write_pair(tmp_path, "a", mask)
    answer = np.zeros_like(mask)
    answer[50:70, 60:100] = True  # on the defect: kept
    answer[200:260, 250:330] = True  # far away: rejected
    answer[85:100, 125:140] = True  # next to the defect: rejected, but too close to click

    def propose(image):
        assert image.shape[:2] == (150, 200)  # shrunk to max_side, as the photo's longer side
        small = cv2.resize(answer.astype(np.uint8), (200, 150), interpolation=cv2.INTER_NEAREST)
        return mask_to_proposals(small.astype(bool), "crack", min_area=4)

    found = hard_negative_clicks(propose, [pair], "crack", min_distance=40, max_side=200)
    assert (found.images, found.proposals, found.false_positives) == (1, 3, 2)
    (clicks,) = found.clicks.values()
    assert len(clicks) == 1 and clicks[0].label == "no-defect"
    x, y = clicks[0].x, clicks[0].y
    assert 250 <= x < 330 and 200 <= y < 260
    assert min_distance_to(mask, np.array([[x, y]])) >= 40
    ann = simulate_clicks([pair], "crack", seed=0, min_area=10, negatives_per_image=2,
                          min_distance=40)
    before = len(ann.images[0].shapes)
    assert add_negative_clicks(ann, found.clicks) == 1
    assert len(ann.images[0].shapes) == before + 1
    assert ann.images[0].shapes[-1].label == "no-defect"
    assert add_negative_clicks(ann, {"elsewhere.jpg": [(1.0, 1.0)]}) == 0


def test_hard_negatives_on_another_defect_click_that_defect(tmp_path):
    """A phinet photo (1 crack, 2 spalling): a spalling proposal on the crack is rejected by
    the simulated annotator as the feedback rule does: a crack click inside the overlap (the
    spalling classifier's negative), none on the spalling; one on clean concrete gives a
    no-defect click clear of both defects."""
    classes = np.zeros((300, 400), np.uint8)
    classes[40:60, 20:380] = 1  # a wide crack band
    classes[200:280, 20:100] = 2  # a spalled patch
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "p.jpg"), np.full((300, 400, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "p.png"), classes)
    pair = ImagePair(tmp_path / "images" / "p.jpg", tmp_path / "masks" / "p.png", "phinet",
                     "concrete/phinet/images/p.jpg")
    answer = np.zeros((300, 400), bool)
    answer[30:70, 250:330] = True  # on the crack, far from the spalling
    answer[120:170, 250:330] = True  # clean concrete
    answer[210:260, 40:80] = True  # on the spalling itself: kept, no click

    def propose(image):
        return mask_to_proposals(answer, "spalling", min_area=4)

    found = hard_negative_clicks(propose, [pair], "spalling", min_distance=20, max_side=400)
    assert (found.proposals, found.false_positives) == (3, 2)
    clicks = found.clicks[pair.name]
    by_label = {c.label: c for c in clicks}
    assert sorted(by_label) == ["crack", "no-defect"] and len(clicks) == 2
    crack = by_label["crack"]
    assert classes[int(crack.y), int(crack.x)] == 1 and 250 <= crack.x < 330
    clean = by_label["no-defect"]
    assert 120 <= clean.y < 170 and classes[int(clean.y), int(clean.x)] == 0
    assert min_distance_to(classes > 0, np.array([[clean.x, clean.y]])) >= 20
    # what spalling training reads from it: the crack click is a spalling negative
    ann = simulate_clicks([pair], "spalling", seed=0, negatives_per_image=0, min_distance=20)
    assert add_negative_clicks(ann, found.clicks) == 2
    (clicks,) = clicks_from_annotations(ann, "spalling", other_labels=("crack", "rust"),
                                        clearance=30)
    assert clicks.other_label_negatives == 1 and len(clicks.negatives) == 2


def test_simulate_command_mines_hard_negatives_with_real_weights(tmp_path, shared_data,
                                                                 capsys):
    weights = save_untrained(tmp_path / "weights", labels=("rust",), cam_threshold=0.001,
                             tile_overlap=32)
    out = tmp_path / "clicks.xml"
    for defect, extra, message in (("rust", ["--hard-images", "0"], "--hard-images must be at "
                                    "least 1, got 0"),
                                   ("crack", [], "no crack classifier there (found: rust)")):
        code = main(["simulate", "--defect", defect, "--data-root", str(shared_data), "--out",
                     str(out), "--hard-negatives", str(weights), *extra])
        assert code != 0 and message in capsys.readouterr().err
        assert not out.exists()
    plain = tmp_path / "plain.xml"
    chosen = ["--max-images-per-source", "1", "--other-sources", "1"]  # 1 rust + 3 others
    assert main(["simulate", "--defect", "rust", "--data-root", str(shared_data), *chosen,
                 "--out", str(plain)]) == 0
    assert main(["simulate", "--defect", "rust", "--data-root", str(shared_data), *chosen,
                 "--out", str(out), "--hard-negatives", str(weights), "--hard-images", "4"]) == 0
    # an untrained classifier at threshold ~0 proposes the whole photo: on the other
    # defects' photos (no rust) that is rejected and becomes an extra negative; the simulated
    # clicks themselves are unchanged
    old, new = read_cvat_xml(plain), read_cvat_xml(out)
    assert [i.name for i in old.images] == [i.name for i in new.images]
    counts = [(len(a.shapes), len(b.shapes)) for a, b in zip(old.images, new.images,
                                                             strict=True)]
    assert sum(b - a for a, b in counts) >= 1 and all(b >= a for a, b in counts)


def test_simulate_other_defects_on_real_phinet_photos(shared_data):
    """On phinet (crack and spalling masks) a spalling annotator that labels every defect
    clicks the cracks too, keeps no-defect clicks off both, and leaves its own spalling
    clicks as they were without the option."""
    pairs = [p for p in list_pairs("phinet", shared_data)
             if {1, 2} <= set(np.unique(cv2.imread(str(p.mask), cv2.IMREAD_UNCHANGED)))][:3]
    assert pairs, "no phinet photo with both crack and spalling"
    plain = simulate_clicks(pairs, "spalling", seed=1, min_distance=10)
    full = simulate_clicks(pairs, "spalling", seed=1, min_distance=10, other_defects=True)
    for pair, a, b in zip(pairs, plain.images, full.images, strict=True):
        crack = load_defect_mask(pair, "crack")
        spalling = load_defect_mask(pair, "spalling")
        same = [s.points.tolist() for s in a.shapes if s.label == "spalling"]
        assert same == [s.points.tolist() for s in b.shapes if s.label == "spalling"]
        cracks = np.array([s.points[0] for s in b.shapes if s.label == "crack"], int)
        assert len(cracks) and crack[cracks[:, 1], cracks[:, 0]].all()
        clean = np.array([s.points[0] for s in b.shapes if s.label == "no-defect"])
        if len(clean):
            assert (min_distance_to(crack | spalling, clean) >= 10).all()
    (c, *_) = clicks_from_annotations(full, "spalling", other_labels=("crack",), clearance=0)
    assert c.other_label_negatives > 0
