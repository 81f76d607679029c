"""``defectcam evaluate --interactive``: the simulated annotator's clicks, and a run on a CVAT
export with the interactor beside the click baseline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from defectcam.cli import main
from defectcam.core.interact import Clicks, InteractSettings
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatLabel,
    CvatShape,
    write_cvat_xml,
)
from defectcam.evaluation.interactive import (
    baseline_method,
    corrective_click,
    interior_point,
    shared_settings,
)


def test_interior_point_is_the_deepest_pixel() -> None:
    mask = np.zeros((40, 60), bool)
    mask[5:35, 10:20] = True  # 10 wide
    mask[15:25, 20:58] = True  # a thinner arm
    x, y = interior_point(mask)
    assert 13 <= x <= 16 and 17 <= y <= 22
    assert interior_point(np.zeros((4, 4), bool)) is None


def test_the_click_baseline_shares_the_fill_but_not_the_classifier_part() -> None:
    settings = InteractSettings(fill=8, max_side=300, cam_threshold=0.6, dilation=3,
                                region="component", evidence="weights")
    shared = shared_settings(settings)
    assert (shared.fill, shared.max_side) == (8, 300)
    assert (shared.cam_threshold, shared.dilation, shared.region, shared.evidence) == (
        None, None, "cut", None)
    # a rust-coloured ring: the baseline's answer is the ring, filled when the fill is shared
    image = np.full((120, 120, 3), 200, np.uint8)
    cv2.circle(image, (60, 60), 30, (180, 70, 20), thickness=4)
    plain = baseline_method("rust", 64)(image, Clicks(((60.0, 30.0),)))
    full = baseline_method("rust", 64, settings=settings)(image, Clicks(((60.0, 30.0),)))
    assert not plain.full_mask(120, 120)[60, 60] and full.full_mask(120, 120)[60, 60]


def test_corrective_click_goes_to_the_larger_error() -> None:
    instance = np.zeros((40, 60), bool)
    instance[10:30, 10:30] = True
    missed_half = instance.copy()
    missed_half[:, 20:] = False
    (x, y), positive = corrective_click(missed_half, instance)
    assert positive and 20 <= x < 30 and instance[y, x] and not missed_half[y, x]
    too_much = instance.copy()
    too_much[10:30, 30:55] = True
    (x, y), positive = corrective_click(too_much, instance)
    assert not positive and x >= 30 and not instance[y, x]
    assert corrective_click(instance, instance) is None


def test_interactive_run_on_a_cvat_export(tmp_path: Path, untrained_weights: Path) -> None:
    rng = np.random.default_rng(4)
    image = np.clip(rng.normal(150, 6, (96, 128, 3)), 0, 255).astype(np.uint8)
    cv2.line(image, (10, 20), (120, 30), (40, 40, 40), 3)
    cv2.line(image, (20, 80), (70, 60), (40, 40, 40), 3)
    cv2.imwrite(str(tmp_path / "cracks.png"), image)
    shapes = [CvatShape("polygon", "crack", np.array(p, float)) for p in (
        [[9, 18], [121, 28], [121, 32], [9, 22]], [[19, 78], [71, 58], [71, 62], [19, 82]])]
    xml = write_cvat_xml(CvatAnnotations([CvatLabel("crack", "polygon")],
                                         [CvatImage(0, "cracks.png", 128, 96, shapes)]),
                         tmp_path / "annotations.xml")
    out = tmp_path / "eval"
    assert main(["evaluate", "--weights", str(untrained_weights), "--defect", "crack",
                 "--interactive", "--cvat-xml", str(xml), "--images", str(tmp_path),
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    report = json.loads((out / "interactive.json").read_text())
    assert set(report["summary"]) == {"interactor", "click-baseline"}
    for method in ("interactor", "click-baseline"):
        rounds = report["summary"][method]["crack"]
        assert set(rounds) == {"clicks_1", "clicks_2"}
        for row in rounds.values():
            assert row["instances"] == 2 and row["images"] == 1
            assert 0.0 <= row["mean_iou"] <= row["mean_iou_tolerant"] <= 1.0
            assert row["eq3"]["n"] == 2
        outcomes = [o for o in report["outcomes"][method] if o["round"] == 1]
        assert len(outcomes) == 2 and all(o["seconds"] >= 0 for o in outcomes)
    # the baseline finds a drawn dark line from a click on it
    baseline = report["summary"]["click-baseline"]["crack"]["clicks_1"]
    assert baseline["mean_iou_tolerant"] > 0.3
    assert "| crack | interactor | 1 | 2 |" in (out / "interactive.md").read_text()
