"""Every click is a training label: logged interactions -> ``defectcam feedback`` clicks, beside
the detector's proposals in the same log (real SQLite, a CVAT export written as CVAT does)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from defectcam.cli import main as cli
from defectcam.core.postprocess import mask_to_polygon, mask_to_proposals
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatLabel,
    CvatShape,
    read_cvat_xml,
    write_cvat_xml,
)
from defectcam.serving.interaction_log import INTERACTION_KIND, ProposalLog, log_proposals, read_log

WIDTH, HEIGHT = 160, 120


def _mask(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _polygon(mask: np.ndarray) -> CvatShape:
    return CvatShape("polygon", "crack", mask_to_polygon(mask), source="semi-auto")


def test_interactions_become_clicks_beside_the_detector(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
        images / "frame.png")
    sha = hashlib.sha256((images / "frame.png").read_bytes()).hexdigest()
    log = ProposalLog(tmp_path / "log.sqlite")
    # the detector's request: one proposal, which the annotator keeps as it is
    detector_mask = _mask(80, 100, 100, 140)
    log_proposals(log, sha, (WIDTH, HEIGHT), None, {"output": "mask"}, {"crack": "x"},
                  mask_to_proposals(detector_mask, "crack", 1), 1.0)
    # an interaction kept by the annotator, one near and one far negative point
    kept = _mask(25, 35, 20, 60)
    kept_params = {"kind": INTERACTION_KIND, "label": "crack", "output": "mask",
                   "pos_points": [[40.0, 30.0]], "neg_points": [[62.0, 30.0], [150.0, 10.0]]}
    log_proposals(log, sha, (WIDTH, HEIGHT), None, kept_params, {"crack": "x"},
                  mask_to_proposals(kept, "crack", 1), 0.5)
    # an interaction the annotator threw away
    thrown = _mask(50, 60, 10, 30)
    thrown_params = {**kept_params, "pos_points": [[20.0, 55.0]], "neg_points": []}
    log_proposals(log, sha, (WIDTH, HEIGHT), None, thrown_params, {"crack": "x"},
                  mask_to_proposals(thrown, "crack", 1), 0.5)
    assert sum(r.is_interaction for r in read_log(log.path)) == 2

    export = CvatAnnotations([CvatLabel("crack", "polygon"), CvatLabel("no-defect", "points")],
                             [CvatImage(0, "frame.png", WIDTH, HEIGHT,
                                        [_polygon(kept), _polygon(detector_mask)])])
    xml = write_cvat_xml(export, tmp_path / "annotations.xml")
    out = tmp_path / "out"
    assert cli(["feedback", "--annotations", str(xml), "--images", str(images), "--log",
                str(log.path), "--out", str(out), "--min-distance", "20"]) == 0

    report = json.loads((out / "feedback-report.json").read_text())
    row = report["interactions"]["per_defect"]["crack"]
    assert (row["interactions"], row["accepted"], row["modified"], row["deleted"]) == (
        2, 1, 0, 1)
    assert row["clicks"] == {"positive": 1, "negative": 1}
    # the detector's proposal is still judged (an interaction never supersedes it), and the
    # shape the interaction answered is not also a missed defect of the detector's
    assert report["per_defect"]["crack"]["accepted"] == 1
    assert report["per_defect"]["crack"]["missed"] == 0
    assert report["interactions"]["missed_shapes_answered_by_an_interaction"] == 1

    clicks = read_cvat_xml(out / "feedback-clicks.xml").images[0].shapes
    points = {(s.label, tuple(np.round(s.points[0], 1))) for s in clicks}
    assert ("crack", (40.0, 30.0)) in points  # the kept interaction's click
    assert ("no-defect", (150.0, 10.0)) in points  # a negative far from every kept defect
    assert ("no-defect", (62.0, 30.0)) not in points  # next to the kept crack: no label
    assert not any(p[1] == (20.0, 55.0) for p in points)  # the deleted interaction
