"""``defectcam evaluate``: baselines, settings, CVAT truth, report files, and an end-to-end run
on two real images (untrained weights: only validity is checked, never what they detect)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectcam.cli import main
from defectcam.data.cvat_xml import CvatImage, CvatShape, read_cvat_xml, write_cvat_xml
from defectcam.evaluation import match_instances
from defectcam.evaluation.baselines import baseline_map, baseline_proposals
from defectcam.evaluation.report import PROPOSAL_RGB, TRUTH_RGB, render_overlay
from defectcam.evaluation.run import (
    cvat_truth,
    downscale,
    folder_items,
    load_item,
    plan_settings,
)
from tests.helpers import rust_export


def _rng_image(h: int = 96, w: int = 128, level: int = 170, noise: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    grey = np.clip(level + rng.normal(0, noise, (h, w)), 0, 255)
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def test_crack_baseline_finds_a_thin_dark_line() -> None:
    image = _rng_image()
    image[40:42, 10:118] = 60
    found = baseline_map(image, "crack")
    assert found.shape == image.shape[:2] and found.dtype == bool
    assert found[40:42, 12:116].mean() > 0.9
    assert found[:30].mean() < 0.02 and found[55:].mean() < 0.02


def test_rust_baseline_finds_orange_not_grey() -> None:
    image = _rng_image()
    image[20:60, 30:80] = (190, 95, 40)  # rust orange
    found = baseline_map(image, "rust")
    assert found[20:60, 30:80].mean() > 0.95
    assert found.sum() == found[20:60, 30:80].sum()


def test_spalling_baseline_prefers_dark_rough_patch() -> None:
    image = _rng_image(noise=1.0)
    rng = np.random.default_rng(1)
    patch = np.clip(100 + rng.normal(0, 40, (40, 50)), 0, 255).astype(np.uint8)
    image[30:70, 40:90] = patch[..., None]
    found = baseline_map(image, "spalling")
    inside = found[30:70, 40:90].mean()
    far = np.ones_like(found)
    far[22:78, 32:98] = False  # the 15 px window blurs the patch edge by up to 8 px
    outside = found[far].mean()
    assert inside > 0.3 and outside < 0.05


def test_baseline_proposals_use_the_post_processing() -> None:
    image = _rng_image()
    image[20:60, 30:80] = (190, 95, 40)
    image[5:7, 5:7] = (190, 95, 40)  # 4 px: below min_area
    proposals = baseline_proposals(image, "rust", closing_size=5, min_area=64)
    assert len(proposals) == 1 and proposals[0].label == "rust"
    assert proposals[0].area == 40 * 50
    with pytest.raises(ValueError, match="no baseline"):
        baseline_map(image, "dust")


def test_plan_settings_main_first_ablation_screening_baseline() -> None:
    names = [s.name for s in plan_settings(2, ablation=(0, 1, 2, 4), baseline=True)]
    assert names == ["advcam-T2", "gradcam-T0", "advcam-T1", "advcam-T4", "advcam-T2-screen",
                     "baseline"]
    names = [s.name for s in plan_settings(0, ablation=(0, 1))]
    assert names == ["gradcam-T0", "advcam-T1", "advcam-T1-screen"]
    assert [s.name for s in plan_settings(2, screen=True)] == ["advcam-T2-screen"]
    assert [s.name for s in plan_settings(2, baseline=True, with_model=False)] == ["baseline"]


def test_downscale_keeps_cells_at_least_half_defect() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    truth = np.zeros((40, 80), bool)
    truth[:, :40] = True
    truth[0:2, 40:42] = True  # a quarter of one 4x4 cell: dropped
    small_image, small_truth, scale = downscale(image, truth, 20)
    assert scale == 0.25 and small_image.shape == (10, 20, 3) and small_truth.shape == (10, 20)
    assert small_truth[:, :10].all() and not small_truth[:, 10:].any()
    assert downscale(image, truth, None)[2] == 1.0


def test_cvat_truth_rasterises_polygons_and_masks_of_one_label() -> None:
    mask = np.ones((3, 4), bool)
    im = CvatImage(0, "a.png", 20, 10, [
        CvatShape("polygon", "rust", np.array([[1, 1], [5, 1], [5, 4], [1, 4]], float)),
        CvatShape("mask", "rust", mask=mask, box=(18, 8, 21, 10)),  # clipped at the border
        CvatShape("polygon", "crack", np.array([[10, 1], [12, 1], [12, 3]], float)),
        CvatShape("points", "rust", np.array([[15.0, 5.0]])),
    ])
    truth = cvat_truth(im, "rust")
    assert truth.shape == (10, 20)
    assert truth[1:5, 1:6].all() and truth[8:10, 18:20].all()
    assert truth.sum() == 4 * 5 + 2 * 2


def test_render_overlay_colours_and_size() -> None:
    image = np.full((10, 12, 3), 100, np.uint8)
    truth = np.zeros((10, 12), bool)
    truth[2:8, 2:5] = True
    pred = np.zeros((10, 12), bool)
    pred[2:8, 7:10] = True
    out = render_overlay(image, truth, pred)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[4, 3]) != (100, 100, 100) and tuple(out[4, 8]) != (100, 100, 100)
    assert tuple(out[2, 2]) == TRUTH_RGB and tuple(out[2, 7]) == PROPOSAL_RGB  # outlines
    assert tuple(out[0, 0]) == (100, 100, 100)


def _check_summary(d: dict) -> None:
    for key in ("iou", "precision", "recall", "f1"):
        assert 0.0 <= d["pixels"][key] <= 1.0
    assert 0 <= d["n_found"] <= d["n_instances"]
    assert 0.0 <= d["instance_recall"] <= 1.0
    assert 0 <= d["n_false_positives"] <= d["n_proposals"]
    assert 0.0 <= d["time"]["eq3"]["saving"] <= 0.95
    assert d["time"]["eq3"]["n"] == d["n_instances"]
    assert d["time"]["edit_cost"]["saving"] <= 1.0


def test_baselines_alone_on_a_cvat_export(tmp_path: Path) -> None:
    xml = rust_export(tmp_path, _rng_image(48, 64), (10, 20, 30, 50))
    out = tmp_path / "eval"
    assert main(["evaluate", "--baseline", "--defect", "rust", "--cvat-xml", str(xml),
                 "--images", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["baseline"]
    rust = report["runs"][0]["summary"]["per_defect"]["rust"]
    _check_summary(rust)
    assert rust["n_instances"] == 1 and rust["n_found"] == 1 and rust["pixels"]["iou"] > 0.9
    assert (out / "report.md").read_text().startswith("# defectcam evaluation")


def test_evaluate_rejects_inconsistent_options(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--defect", "crack", "--out", str(tmp_path)]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert main(["evaluate", "--baseline", "--cvat-xml", "x.xml", "--out", str(tmp_path)]) == 2


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory) -> Path:
    from defectcam.core.model import build_classifier
    from defectcam.core.weights import WeightsMetadata, save_weights

    folder = tmp_path_factory.mktemp("weights")
    # One 544x384 tile per deepcrack image keeps the run to one forward per image and setting.
    save_weights(build_classifier(0), WeightsMetadata(label="crack", tile_size=544,
                                                      tile_overlap=16),
                 folder / "crack.safetensors")
    return folder


def test_end_to_end_on_two_real_images(shared_data: Path, untrained_weights: Path,
                                       tmp_path: Path) -> None:
    from defectcam.core.proposer import DefectProposer

    out = tmp_path / "eval"
    argv = ["evaluate", "--weights", str(untrained_weights), "--defect", "crack",
            "--data-root", str(shared_data), "--source", "deepcrack", "--limit", "2",
            "--iterations", "0", "--sweep", "--baseline", "--gallery", "1", "--device", "cpu",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "defectcam-evaluation" and report["main"] == "gradcam-T0"
    assert {"config", "rules", "runs", "sweep", "gallery", "failures"} <= set(report)
    assert not report["failures"]
    assert [r["name"] for r in report["runs"]] == ["gradcam-T0", "baseline"]
    for run in report["runs"]:
        assert len(run["images"]) == 2 and run["seconds_per_image"]["all"] > 0
        for d in (*run["summary"]["per_defect"].values(), run["summary"]["overall"]):
            _check_summary(d)
    sweep = report["sweep"]["per_defect"]["crack"]["points"]
    assert [p["threshold"] for p in sweep] == report["sweep"]["thresholds"]
    assert all(0 <= p["raw"]["iou"] <= 1 for p in sweep)

    # The report's counts are what the metrics layer gives for the same proposals.
    items = folder_items(["crack"], "val", shared_data, ["deepcrack"], limit=2, seed=0)
    proposer = DefectProposer.from_weights(untrained_weights, device="cpu")
    by_id = {im["image_id"]: im for im in report["runs"][0]["images"]}
    assert set(by_id) == {it.image_id for it in items}
    total_tp = 0
    for item in items:
        loaded = load_item(item)
        proposals = proposer.propose(loaded.image, iterations=0, labels=["crack"])
        expected = match_instances(proposals, loaded.truth, label="crack",
                                   image_id=item.image_id)
        got = by_id[item.image_id]
        assert got["pixels"] == expected.pixels.to_dict()
        assert (got["n_instances"], got["n_found"], got["n_proposals"],
                got["n_false_positives"]) == (expected.n_instances, expected.n_found,
                                              expected.n_proposals,
                                              expected.n_false_positives)
        total_tp += expected.pixels.tp
    assert report["runs"][0]["summary"]["overall"]["pixels"]["tp"] == total_tp

    assert len(report["gallery"]) == 2  # best 1 and worst 1
    for entry in report["gallery"]:
        png = cv2.imread(str(out / entry["file"]))
        image = cv2.imread(str(shared_data / entry["image_id"]))
        assert png is not None and png.shape == image.shape
    markdown = (out / "report.md").read_text()
    assert "## Main setting: gradcam-T0" in markdown and "**0.10 (used)**" in markdown
    assert "baseline" in markdown and "gallery/" in markdown


def _export_with_an_empty_frame(tmp_path: Path) -> Path:
    """``rust_export``'s frame plus a finished frame without shapes whose rust-coloured patch
    every rust rule proposes (a false positive only when that frame counts as finished)."""
    xml = rust_export(tmp_path, _rng_image(48, 64), (10, 20, 30, 50))
    plain = _rng_image(48, 64)
    plain[12:30, 8:40] = (190, 95, 40)
    cv2.imwrite(str(tmp_path / "plain.png"), cv2.cvtColor(plain, cv2.COLOR_RGB2BGR))
    annotations = read_cvat_xml(xml)
    annotations.images.append(CvatImage(1, "plain.png", 64, 48, []))
    return write_cvat_xml(annotations, xml)


def test_all_frames_counts_proposals_on_finished_empty_frames(tmp_path: Path) -> None:
    xml = _export_with_an_empty_frame(tmp_path)
    rows = {}
    for flag in ([], ["--all-frames"]):
        out = tmp_path / f"eval{len(flag)}"
        assert main(["evaluate", "--baseline", "--defect", "rust", "--cvat-xml", str(xml),
                     "--images", str(tmp_path), "--out", str(out), "--no-progress", *flag]) == 0
        report = json.loads((out / "report.json").read_text())
        rows[bool(flag)] = report["runs"][0]["summary"]["per_defect"]["rust"]
    assert rows[False]["n_images"] == 1 and rows[False]["n_false_positives"] == 0
    assert rows[True]["n_images"] == 2 and rows[True]["n_false_positives"] >= 1
    assert rows[True]["n_instances"] == rows[False]["n_instances"] == 1


def test_cvat_export_images_resolve_by_exact_path_only(tmp_path: Path, capsys) -> None:
    xml = rust_export(tmp_path, _rng_image(48, 64), (10, 20, 30, 50))
    annotations = read_cvat_xml(xml)
    annotations.images[0].name = "other-task/rusty.png"  # same base name, another folder
    write_cvat_xml(annotations, xml)
    assert main(["evaluate", "--baseline", "--defect", "rust", "--cvat-xml", str(xml),
                 "--images", str(tmp_path), "--out", str(tmp_path / "eval"),
                 "--no-progress"]) == 2
    assert "other-task/rusty.png" in capsys.readouterr().err


def test_all_frames_needs_a_cvat_export(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--baseline", "--all-frames", "--out", str(tmp_path)]) == 2
    assert "--all-frames" in capsys.readouterr().err
