"""One training round (issue 25): old and new clicks with the images of both in one call, and
a fine-tune that never silently degrades the weights it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectcam.cli import main as cli
from defectcam.core.digest import file_sha256
from defectcam.core.weights import WeightsMetadata, read_metadata, save_weights
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    write_cvat_xml,
)
from defectcam.training.pipeline import holdout_split
from tests.helpers import concrete_texture, draw_crack

SIZE = 96
CAM_SCALE = 0.37
FAST = ["--epochs", "2", "--batch-size", "8", "--micro-batch", "8", "--max-steps-per-epoch",
        "3", "--device", "cpu", "--precision", "fp32", "--no-progress", "--holdout", "0.34"]


def _photo(path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A crack photo: (crack pixel x,y, clean pixel x,y far from it)."""
    rng = np.random.default_rng(seed)
    image = concrete_texture(SIZE, SIZE, rng)
    crack = draw_crack(image, rng, width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ys, xs = np.nonzero(crack)
    k = len(ys) // 2
    dist = cv2.distanceTransform((~crack).astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([xs[k], ys[k]], float), np.array([x, y], float)


def _export(path: Path, images: list[tuple[str, str | None, list[tuple[str, np.ndarray]]]]):
    cvat_images = [CvatImage(k, name, SIZE, SIZE,
                             [CvatShape("points", label, xy[None]) for label, xy in clicks],
                             sha256=sha)
                   for k, (name, sha, clicks) in enumerate(images)]
    return write_cvat_xml(CvatAnnotations(defect_labels(), cvat_images), path)


@pytest.fixture
def resumed(tmp_path, fitted_crack_model) -> Path:
    """Weights as a previous round left them: 48 px crops, 2 per click, a calibrated scale."""
    metadata = WeightsMetadata(label="crack", tile_size=48, cam_scale=CAM_SCALE,
                               training={"crops": {"size": 48, "per_click": 2}})
    return save_weights(fitted_crack_model, metadata, tmp_path / "weights" / "crack.safetensors")


def test_one_round_merges_data_set_and_export_and_inherits_settings(tmp_path, resumed):
    data, export = tmp_path / "data", tmp_path / "export" / "images"
    old, new = [], []
    for k in range(4):  # the data set's names are relative to its root
        name = f"crack/images/{k}.png"
        pos, neg = _photo(data / name, k)
        old.append((name, None, [("crack", pos), ("no-defect", neg)]))
    for k in range(3):  # the export's are bare frame names, with content hashes
        name = f"{k}.png"
        pos, neg = _photo(export / name, 10 + k)
        new.append((name, file_sha256(export / name), [("crack", pos), ("rust", neg)]))
    (data / "0.png").write_bytes(b"not the export's frame")  # a same-named stranger
    old_xml, new_xml = _export(tmp_path / "old.xml", old), _export(tmp_path / "new.xml", new)
    out = tmp_path / "round2"
    assert cli(["train", "--defect", "crack", "--resume", str(resumed), "--clicks", str(old_xml),
                str(new_xml), "--images", str(data), str(export), "--out", str(out),
                "--force", *FAST]) == 0
    meta = read_metadata(out / "crack.safetensors")
    assert meta.training["crops"]["size"] == 48 and meta.training["crops"]["per_click"] == 2
    assert meta.training["images"] == [str(data), str(export)]
    assert meta.training["positive_clicks"] == 7
    # the export's rust clicks lie far from its cracks: crack negatives, as no-defect ones
    assert meta.training["other_label_negative_clicks"] == 3
    assert meta.training["negative_clicks"] == 7
    assert meta.working_scale == 1.0 and meta.working_max_side == 0
    assert "held_apart_vs_resumed" in meta.metrics
    # a bare name two folders hold differently, without a content hash: one clear error
    ambiguous = _export(tmp_path / "amb.xml", [("0.png", None, new[0][2])])
    (data / "0.png").write_bytes((export / "0.png").read_bytes()[:-1] + b"\0")
    assert cli(["train", "--defect", "crack", "--clicks", str(ambiguous), "--images",
                str(data), str(export), "--out", str(tmp_path / "x"), *FAST]) == 2


def test_calibration_without_held_apart_positives_keeps_the_scale(tmp_path, resumed, capsys):
    names = [f"{k}.png" for k in range(6)]
    _, held = holdout_split(names, 0.34, 0)
    images = []
    for k, name in enumerate(names):
        pos, neg = _photo(tmp_path / "images" / name, 20 + k)
        clicks = [("no-defect", neg)] if name in held else [("crack", pos), ("no-defect", neg)]
        images.append((name, None, clicks))
    xml = _export(tmp_path / "clicks.xml", images)
    out = tmp_path / "tuned" / "crack.safetensors"
    assert cli(["train", "--defect", "crack", "--resume", str(resumed), "--clicks", str(xml),
                "--images", str(tmp_path / "images"), "--out", str(out), "--force",
                *FAST]) == 0
    printed = capsys.readouterr().out
    assert f"cam_scale kept at {CAM_SCALE:g} (the resumed weights)" in printed
    meta = read_metadata(out)
    assert meta.cam_scale == pytest.approx(CAM_SCALE)
    assert meta.metrics["held_apart_vs_resumed"]["figure"] == "accuracy"


def test_worse_fine_tune_is_not_written_over_the_resumed_weights(tmp_path, resumed, capsys):
    """Held-apart photos clicked right, the others clicked backwards (crack called clean and
    clean called crack): the fine-tune gets worse on the held-apart crops and is refused;
    the resumed file stays byte for byte; --force writes it and says so."""
    names = [f"{k}.png" for k in range(9)]
    _, held = holdout_split(names, 0.34, 0)
    images = []
    for k, name in enumerate(names):
        pos, neg = _photo(tmp_path / "images" / name, 40 + k)
        good, bad = ("crack", "no-defect"), ("no-defect", "crack")
        a, b = good if name in held else bad
        near = np.clip(pos + 1, 0, SIZE - 1), np.clip(neg - 1, 0, SIZE - 1)
        images.append((name, None, [(a, pos), (b, neg), (a, near[0]), (b, near[1])]))
    xml = _export(tmp_path / "clicks.xml", images)
    before = resumed.read_bytes(), resumed.with_suffix(".json").read_text()
    args = ["train", "--defect", "crack", "--resume", str(resumed), "--clicks", str(xml),
            "--images", str(tmp_path / "images"), "--out", str(resumed), *FAST, "--lr", "3e-3",
            "--epochs", "3"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not written" in err and "--force" in err
    assert (resumed.read_bytes(), resumed.with_suffix(".json").read_text()) == before
    candidate = resumed.parent / "candidate" / "crack.safetensors"
    assert candidate.is_file()
    assert not candidate.with_name("crack.checkpoint.safetensors").exists()
    assert cli([*args, "--force"]) == 0
    out = capsys.readouterr().out
    assert "--force: writing weights worse than" in out
    summary = json.loads(out.strip().splitlines()[-1])
    scores = summary["held_apart"]
    assert scores["fine_tuned"] < scores["resumed"] and scores["figure"] == "f1"
    assert resumed.read_bytes() != before[0]


def test_resume_refuses_another_working_size(tmp_path, resumed, capsys):
    _photo(tmp_path / "images" / "0.png", 0)
    xml = _export(tmp_path / "c.xml", [("0.png", None, [("crack", np.array([5.0, 5.0]))])])
    assert cli(["train", "--defect", "crack", "--resume", str(resumed), "--clicks", str(xml),
                "--images", str(tmp_path / "images"), "--out", str(tmp_path / "o"),
                "--working-max-side", "64", *FAST]) == 2
    assert "trained at --working-max-side 0" in capsys.readouterr().err
