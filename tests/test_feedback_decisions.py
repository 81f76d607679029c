"""Every decision an annotator makes in CVAT becomes a label (issue 25): relabels, rejections
on another defect, hand-drawn boxes; and what training reads from them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectcam.cli import main as cli
from defectcam.core.postprocess import polygon_to_mask
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatLabel,
    CvatShape,
    clicks_from_annotations,
    read_cvat_xml,
    write_cvat_xml,
)
from defectcam.data.image_roots import ImageNotFoundError, ImageRoots
from defectcam.feedback.clicks import box_click
from defectcam.feedback.match import shape_region
from defectcam.serving.interaction_log import ProposalLog, log_proposals, read_log

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import call_function, file_b64, start_function  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "crack_deepcrack_11116-3.jpg"
LABELS = [CvatLabel(n, "polygon") for n in ("crack", "spalling", "rust", "no-defect")]


def _polygon(shape: dict) -> np.ndarray:
    return np.asarray(shape["points"], float).reshape(-1, 2)


@pytest.fixture(scope="module")
def handler_round(tmp_path_factory):
    """The Nuclio handler (shipped weights) answers the sample crack photo and logs it;
    the export keeps the largest crack proposal relabelled as spalling (cvat-core leaves
    ``source: auto`` on a label change) and deletes the rest."""
    tmp = tmp_path_factory.mktemp("relabel")
    function = start_function(DEFECTCAM_WEIGHTS=str(REPO / "weights"), DEFECTCAM_DEVICE="cpu",
                              DEFECTCAM_LOG_DB=str(tmp / "log.sqlite"))
    status, shapes = call_function(function, {"image": file_b64(SAMPLE), "labels": ["crack"],
                                              "iterations": 0})
    assert status == 200 and len(shapes) >= 2, shapes
    (tmp / "export" / "images").mkdir(parents=True)
    shutil.copy(SAMPLE, tmp / "export" / "images" / SAMPLE.name)
    height, width = cv2.imread(str(SAMPLE)).shape[:2]
    areas = [polygon_to_mask(_polygon(s), height, width).sum() for s in shapes]
    largest = shapes[int(np.argmax(areas))]
    kept = CvatShape("polygon", "spalling", _polygon(largest), source="auto")
    xml = write_cvat_xml(CvatAnnotations(LABELS, [CvatImage(0, SAMPLE.name, width, height,
                                                            [kept])]),
                         tmp / "export" / "annotations.xml")
    return tmp, xml, shapes, kept


def test_relabel_and_deleted_proposals_all_teach_the_crack_classifier(handler_round):
    tmp, xml, shapes, kept = handler_round
    out = tmp / "feedback"
    assert cli(["feedback", "--annotations", str(xml), "--images", str(tmp / "export" / "images"),
                "--log", str(tmp / "log.sqlite"), "--out", str(out),
                "--min-distance", "8"]) == 0
    report = json.loads((out / "feedback-report.json").read_text())
    crack = report["per_defect"]["crack"]
    assert (crack["proposals"], crack["relabelled"], crack["rejected"]) == (
        len(shapes), 1, len(shapes) - 1)
    assert report["unlogged_auto_shapes"] == 0 and crack["missed"] == 0
    spalling_px = shape_region(kept, *cv2.imread(str(SAMPLE)).shape[:2])
    requests = {r.id: r for r in read_log(tmp / "log.sqlite")}
    exported = read_cvat_xml(out / "feedback-clicks.xml").images[0]
    assert exported.sha256 == requests[1].image_sha256  # the image's content travels along
    # every deleted proposal gave a click inside itself: no-defect away from the spalling,
    # or spalling where it lies on the relabelled one
    rejected = [c for c in report["clicks"] if c["decision"].startswith("rejected")]
    assert {(c["request_id"], c["proposal"]) for c in rejected} == {
        (p["request_id"], p["proposal"]) for p in report["proposals"]
        if p["decision"] == "rejected"}
    for c in rejected:
        x, y = (int(v) for v in c["click"])
        region = requests[c["request_id"]].proposals[c["proposal"]].region(*spalling_px.shape)
        assert region[y, x]
        expected = "spalling" if c["decision"] == "rejected_on_other_defect" else "no-defect"
        assert c["click_label"] == expected and spalling_px[y, x] == (expected == "spalling")
    assert crack["clicks"]["rejected_without_negative"] == 0
    assert crack["clicks"]["negative"] == 1 + len(rejected)
    assert report["per_defect"]["spalling"]["clicks"]["by_decision"]["positive"]["relabelled"] == 1
    # ... and crack training reads all of them as negatives
    (clicks,) = clicks_from_annotations(read_cvat_xml(out / "feedback-clicks.xml"), "crack",
                                        other_labels=("spalling", "rust"), clearance=40)
    assert len(clicks.positives) == 0 and len(clicks.negatives) == 1 + len(rejected)


def _log_answer(log: ProposalLog, image: Path, proposals: list[tuple[str, np.ndarray]]) -> None:
    import hashlib

    height, width = cv2.imread(str(image)).shape[:2]
    shapes = [{"label": label, "type": "polygon", "points": poly.ravel().tolist(),
               "confidence": "0.8"} for label, poly in proposals]
    log_proposals(log, hashlib.sha256(image.read_bytes()).hexdigest(), (width, height), None,
                  {"output": "polygon"}, {}, shapes, 0.1)


def _rect(x1, y1, x2, y2) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float)


@pytest.fixture
def rusty_export(tmp_path):
    """A 200 x 160 photo with a rust patch; the function proposed spalling on the rust and
    spalling on clean concrete; the annotator deleted both, kept the rust (drawn by hand)
    and boxed a thin crack loosely."""
    image = np.full((160, 200, 3), 150, np.uint8)
    image[20:80, 20:90] = (190, 95, 40)  # rust
    cv2.line(image, (150, 20), (185, 140), (40, 40, 40), 2)  # a thin dark crack
    folder = tmp_path / "export" / "images"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "0.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    log = ProposalLog(tmp_path / "log.sqlite")
    # IoU with the rust 0.16: not a relabel (that would be >= 0.3), a rejection on rust
    _log_answer(log, folder / "0.png", [("spalling", _rect(30, 30, 55, 55)),
                                        ("spalling", _rect(30, 110, 80, 150)),
                                        ("spalling", _rect(91, 20, 97, 40))])  # by the rust
    shapes = [CvatShape("polygon", "rust", _rect(20, 20, 89, 79)),
              CvatShape("box", "crack", np.array([[120.0, 10.0], [199.0, 150.0]]))]
    xml = write_cvat_xml(CvatAnnotations(LABELS, [CvatImage(0, "0.png", 200, 160, shapes)]),
                         tmp_path / "export" / "annotations.xml")
    return tmp_path, xml, folder, image


def test_rejection_on_another_defect_and_a_loose_box(rusty_export):
    tmp, xml, folder, image = rusty_export
    out = tmp / "fb"
    assert cli(["feedback", "--annotations", str(xml), "--images", str(folder), "--log",
                str(tmp / "log.sqlite"), "--out", str(out), "--min-distance", "10"]) == 0
    report = json.loads((out / "feedback-report.json").read_text())
    spalling = report["per_defect"]["spalling"]
    assert spalling["rejected"] == 3 and spalling["clicks"]["rejected_without_negative"] == 0
    assert spalling["clicks"]["by_decision"]["negative"] == {
        "rejected": 1, "rejected_near_other_defect": 1, "rejected_on_other_defect": 1}
    clicks = {c["decision"]: c for c in report["clicks"]}
    x, y = clicks["rejected_on_other_defect"]["click"]
    assert clicks["rejected_on_other_defect"]["click_label"] == "rust"
    assert 30 <= x <= 55 and 30 <= y <= 55  # inside the spalling proposal, on the rust
    x, y = clicks["rejected"]["click"]
    assert clicks["rejected"]["click_label"] == "no-defect" and 110 <= y <= 150
    # the loose box's click lies on the crack, its centre does not
    (boxed,) = [c for c in report["clicks"] if c["decision"] == "missed"
                and c["label"] == "crack"]
    x, y = boxed["click"]
    dark = image.mean(axis=2) < 100
    assert dark[int(y), int(x)] and not dark[80, 159]
    assert report["per_defect"]["crack"]["clicks"]["by_decision"]["positive"] == {"missed": 1}
    assert report["per_defect"]["rust"]["clicks"]["by_decision"]["positive"] == {
        "missed": 1, "rejected_on_other_defect": 1}
    # beside the rust (closer than --min-distance) and on none: "no spalling here" only
    x, y = clicks["rejected_near_other_defect"]["click"]
    assert 91 <= x <= 97 and 20 <= y <= 40
    written = read_cvat_xml(out / "feedback-clicks.xml")
    (near,) = [s for s in written.images[0].shapes if s.attributes]
    assert near.label == "no-defect" and near.attributes == {"for": "spalling"}
    negatives = {d: {tuple(p) for p in clicks_from_annotations(written, d)[0].negatives}
                 for d in ("spalling", "rust")}
    assert (near.points[0][0], near.points[0][1]) in negatives["spalling"]
    assert (near.points[0][0], near.points[0][1]) not in negatives["rust"]


def test_box_click_falls_back_to_the_centre_without_evidence():
    flat = np.full((50, 50, 3), 128, np.uint8)
    box = CvatShape("box", "crack", np.array([[10.0, 10.0], [30.0, 20.0]]))
    assert box_click(box, flat).tolist() == [[20.0, 15.0]]
    assert box_click(box, None).tolist() == [[20.0, 15.0]]


def test_other_labels_clicks_are_negatives_only_where_they_apply():
    shapes = [CvatShape("points", "spalling", np.array([[100.0, 100.0]])),
              CvatShape("points", "rust", np.array([[110.0, 100.0]])),  # beside the spalling
              CvatShape("points", "rust", np.array([[300.0, 100.0]])),  # far from it
              CvatShape("polygon", "spalling", _rect(200, 200, 260, 260)),
              CvatShape("polygon", "rust", _rect(270, 210, 300, 250)),  # 20 px off its edge
              CvatShape("points", "no-defect", np.array([[20.0, 380.0]]))]
    ann = CvatAnnotations(LABELS, [CvatImage(0, "a.jpg", 400, 400, shapes)])
    (c,) = clicks_from_annotations(ann, "spalling", other_labels=("crack", "rust"),
                                   clearance=30)
    assert sorted(map(tuple, c.negatives.tolist())) == [(20.0, 380.0), (300.0, 100.0)]
    assert c.other_label_negatives == 1 and len(c.positives) == 2
    (wider,) = clicks_from_annotations(ann, "spalling", other_labels=("rust",), clearance=5)
    assert wider.other_label_negatives == 3
    (plain,) = clicks_from_annotations(ann, "spalling")
    assert plain.other_label_negatives == 0 and len(plain.negatives) == 1
    # a function of the image's size (the crop's reach at its working size)
    (scaled,) = clicks_from_annotations(ann, "spalling", other_labels=("rust",),
                                        clearance=lambda w, h: w / 50)  # 8 px
    assert scaled.other_label_negatives == 3


def test_feedback_without_matching_images_is_an_error_naming_images(rusty_export, capsys):
    tmp, xml, folder, image = rusty_export
    common = ["feedback", "--annotations", str(xml), "--log", str(tmp / "log.sqlite"),
              "--out", str(tmp / "fb")]
    assert cli(common) == 2
    err = capsys.readouterr().err
    assert "pass --images" in err and len(err.strip().splitlines()) == 1
    other = tmp / "other"
    other.mkdir()
    cv2.imwrite(str(other / "0.png"), np.zeros((160, 200, 3), np.uint8))
    assert cli([*common, "--images", str(other)]) == 2
    assert "under --images" in capsys.readouterr().err
    assert not (tmp / "fb").exists()


def test_image_roots_resolve_by_path_or_content_never_a_bare_name(tmp_path):
    data, export = tmp_path / "data", tmp_path / "export"
    (data / "rust" / "images").mkdir(parents=True)
    export.mkdir()
    (data / "rust" / "images" / "0.jpg").write_bytes(b"data set photo")
    (export / "0.jpg").write_bytes(b"export photo")
    roots = ImageRoots.of([data, export])
    assert roots.resolve("rust/images/0.jpg") == data / "rust" / "images" / "0.jpg"
    assert roots.resolve("0.jpg") == export / "0.jpg"  # the only root with that exact path
    with pytest.raises(ImageNotFoundError, match="not found under"):
        roots.resolve("images/0.jpg")  # no base-name fallback
    (data / "0.jpg").write_bytes(b"another photo")
    with pytest.raises(ImageNotFoundError, match="ambiguous"):
        ImageRoots.of([data, export]).resolve("0.jpg")
    digest = roots.digest(export / "0.jpg")
    assert ImageRoots.of([data, export]).resolve("0.jpg", digest) == export / "0.jpg"
    moved = ImageRoots.of([data])  # renamed elsewhere: found by content
    (data / "frame_7.jpg").write_bytes(b"export photo")
    assert moved.resolve("0.jpg", digest) == data / "frame_7.jpg"
    with pytest.raises(ImageNotFoundError, match="no such folder"):
        ImageRoots.of([tmp_path / "nope"])
