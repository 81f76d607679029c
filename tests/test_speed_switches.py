"""The CPU speed switches (issue 12): precision, working scale, balanced tiles, screening.

Each switch must leave the engine's contract intact: maps and proposals in the image's own
pixels, fp32 and the new defaults agreeing within a stated tolerance, today's engine one
option away (``precision="fp32"``, ``tiling="fixed"``, working scale 1, ``screen=False``),
and weights sidecars written before the new metadata fields loading unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defectcam.cli import main
from defectcam.commands.propose import options_from_args
from defectcam.core import device as device_module
from defectcam.core.advcam import AdvCAMSettings, advcam_climb
from defectcam.core.device import cpu_supports_bf16, resolve_precision
from defectcam.core.model import INPUT_MULTIPLE, build_classifier
from defectcam.core.options import ProposeOptions
from defectcam.core.postprocess import enlarge_proposals, mask_to_proposals
from defectcam.core.predictor import (
    DefectMapPredictor,
    ImageScales,
    MapParts,
    parse_working_scale,
    working_size,
)
from defectcam.core.proposer import DefectProposer, screen_threshold
from defectcam.core.tiling import TileGrid, tile_starts
from defectcam.core.transforms import normalize_batch
from defectcam.core.weights import WeightsError, WeightsMetadata, read_metadata, save_weights
from defectcam.data.crops import at_working_scale
from defectcam.data.cvat_xml import ImageClicks
from defectcam.faces.nuclio import options_from_body
from tests.helpers import concrete_texture, draw_crack, rust_export, save_untrained
from tests.test_engine import crack_scene


def union(proposals, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for p in proposals:
        mask |= p.full_mask(*shape)
    return mask


# ------------------------------------------------------------------------------ precision


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch) -> None:
    # One helper, shared with training (moved from defectcam/training/loop.py).
    from defectcam.training import loop

    assert loop.cpu_supports_bf16 is cpu_supports_bf16
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"  # emulated bf16 is slower than fp32
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for explicitly: allowed anywhere
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp32"  # fp16 only when asked for
    assert resolve_precision("fp16", cuda) == "fp16"
    with pytest.raises(ValueError, match="--precision=fp16 needs CUDA"):
        resolve_precision("fp16", cpu, "--precision")
    with pytest.raises(ValueError, match=r"DEFECTCAM_PRECISION must be one of \['auto'"):
        resolve_precision("fp64", cpu, "DEFECTCAM_PRECISION")


def test_predictor_default_precision_is_auto(fitted_crack_model) -> None:
    meta = WeightsMetadata(label="crack", tile_size=64)
    predictor = DefectMapPredictor(fitted_crack_model, meta, "cpu")
    assert predictor.precision == ("bf16" if cpu_supports_bf16() else "fp32")
    assert predictor.tiling == "balanced" and predictor.working_scale == 1.0


@pytest.mark.parametrize("seed", [100, 101])
def test_bf16_maps_and_proposals_agree_with_fp32(fitted_crack_model, seed) -> None:
    """bf16 autocast (forward passes and climb) against fp32, AdvCAM T = 2.

    Tolerance: bf16 keeps 8 significant bits (0.4 % rounding per operation) and the climb
    adds its own: each step follows a gradient computed in bf16. Measured on this fixture
    (seeds 100-103) the normalised maps differ by 0.005-0.026. The bar, 0.05, is half the
    CAM threshold (0.1): only pixels that close to the threshold can change sides, so the
    proposal masks must agree but for boundary pixels: IoU >= 0.99 (measured >= 0.9998).
    Tile probabilities: measured within 0.0013, bar 0.01 (a proposal's confidence).
    """
    image, _ = crack_scene(seed, 320, 320, cracks=2)
    meta = WeightsMetadata(label="crack", tile_size=320)
    results = {}
    for precision in ("fp32", "bf16"):
        predictor = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision=precision)
        results[precision] = DefectProposer([predictor]).propose_detailed(image, iterations=2)
    a, b = results["fp32"], results["bf16"]
    diff = float(np.abs(a.maps["crack"].cam_map - b.maps["crack"].cam_map).max())
    assert 0 < diff < 0.05, f"bf16 map differs by {diff:.4f} (0 would mean bf16 never ran)"
    mask_a, mask_b = union(a.proposals, image.shape[:2]), union(b.proposals, image.shape[:2])
    assert mask_a.any()
    iou = (mask_a & mask_b).sum() / (mask_a | mask_b).sum()
    assert iou >= 0.99, f"proposal IoU fp32 vs bf16 {iou:.4f}"
    np.testing.assert_allclose(b.maps["crack"].tile_probability,
                               a.maps["crack"].tile_probability, atol=0.01)


# ------------------------------------------------------------------------------ working scale


def test_working_scale_runs_small_and_answers_in_image_pixels(fitted_crack_model) -> None:
    image, _ = crack_scene(5, 200, 328)
    meta = WeightsMetadata(label="crack", tile_size=96, tile_overlap=32, working_scale=0.5)
    half = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32")
    assert half.working_scale == 0.5  # from the metadata
    result = half.predict(image, iterations=1)
    assert result.cam_map.shape == image.shape[:2] and result.working_size == (100, 164)
    assert (result.grid.height, result.grid.width) == (100, 164)

    # Exactly: the full-scale engine on the shrunk image, its raw map enlarged back.
    small = cv2.resize(image, (164, 100), interpolation=cv2.INTER_AREA)
    full = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32",
                              working_scale=1.0)  # the override wins over the metadata
    reference = full.predict(small, iterations=1)
    raw = cv2.resize(reference.cam_map * np.float32(reference.normaliser), (328, 200),
                     interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(result.cam_map * np.float32(result.normaliser), raw,
                               rtol=1e-6, atol=1e-7)
    assert float(result.cam_map.max()) == pytest.approx(1.0)
    np.testing.assert_array_equal(result.tile_probability, reference.tile_probability)

    # Confidence lookups go through the working-size grid: image pixel (y, x) belongs to
    # the tile that owns working pixel (y / 2, x / 2).
    for y, x in [(0, 0), (199, 327), (120, 40), (30, 300)]:
        i, j = reference.grid.owner(y // 2, x // 2)
        assert result.probability_at(y, x) == reference.tile_probability[i, j]

    # Never below one tile on the shorter side: 0.5 would give 70 px, 96 px is the floor.
    assert half.working_size(140, 400) == (96, 274)
    assert half.working_size(90, 400) == (90, 400)  # under one tile already: not shrunk

    proposals = DefectProposer([half]).propose(image, iterations=1, cam_threshold=0.3)
    assert proposals
    assert max(p.box[2] for p in proposals) >= 164  # image pixels, beyond the working width
    for p in proposals:
        assert p.full_mask(200, 328).sum() == p.area
        assert 0 <= p.box[0] <= p.box[2] < 328 and 0 <= p.box[1] <= p.box[3] < 200


@pytest.mark.parametrize(("height", "width", "scale", "max_side"), [
    (1200, 1600, 0.5, 0), (3456, 4608, 0.5, 0), (1201, 1599, 0.37, 0), (5000, 5000, 0.25, 0),
    (3456, 4608, 1.0, 1024), (4608, 3456, 1.0, 1024), (1537, 2049, 0.5, 1000),
    (3456, 5184, 0.5, 2048)])
def test_working_size_rounds_as_training_crops(height, width, scale, max_side) -> None:
    """The classifier must see defects at the size training showed them: the size training's
    crops are cut at (``at_working_scale``) is the size the predictor shrinks a frame to."""
    clicks = ImageClicks("photo.jpg", width, height, np.zeros((0, 2)), np.zeros((0, 2)))
    (trained,), _ = at_working_scale([clicks], scale, max_side=max_side)
    assert working_size(height, width, scale, 64, max_side) == (trained.height, trained.width)
    assert (trained.height, trained.width) != (height, width)
    if max_side:
        assert max(trained.height, trained.width) == min(max_side, round(max(height, width)
                                                                         * scale))


def test_working_max_side_shrinks_large_frames_only(tmp_path, fitted_crack_model) -> None:
    """``working_max_side``: every camera's frame reaches the classifier at one longer side
    (a 5K frame and its 1K copy give the same map), frames already that small untouched."""
    meta = WeightsMetadata(label="crack", tile_size=96, tile_overlap=32, working_max_side=160)
    capped = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32")
    assert capped.working_size(3456, 4608) == (120, 160)
    assert capped.working_size(4608, 3456) == (160, 120)
    assert capped.working_size(150, 100) == (150, 100)
    assert capped.working_size(200, 1000) == (96, 480)  # the one-tile floor still holds

    image, _ = crack_scene(5, 200, 328)
    result = capped.predict(image, iterations=0)
    assert result.working_size == (98, 160) and result.cam_map.shape == (200, 328)
    small = cv2.resize(image, (160, 98), interpolation=cv2.INTER_AREA)
    reference = capped.predict(small, iterations=0)  # fits already: runs as it is
    assert reference.working_size is None  # None: the image's own size
    raw = cv2.resize(reference.cam_map * np.float32(reference.normaliser), (328, 200),
                     interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(result.cam_map * np.float32(result.normaliser), raw,
                               rtol=1e-6, atol=1e-7)

    path = save_weights(fitted_crack_model, meta, tmp_path / "crack.safetensors")
    assert read_metadata(path).working_max_side == 160


def test_defects_of_a_request_share_the_shrunk_image(tmp_path) -> None:
    weights = save_untrained(tmp_path / "w", tile_size=64, tile_overlap=16, working_scale=0.5)
    proposer = DefectProposer.from_weights(weights, device="cpu", precision="fp32",
                                           working_scale={"crack": 1.0})
    assert {k: p.working_scale for k, p in proposer.predictors.items()} == {
        "crack": 1.0, "spalling": 0.5, "rust": 0.5}
    image = concrete_texture(160, 240, np.random.default_rng(0))
    scales = ImageScales(image)
    result = proposer.propose_detailed(scales, iterations=0)
    assert list(scales._copies) == [(80, 120)]  # one copy for spalling and rust
    assert {k: m.cam_map.shape for k, m in result.maps.items()} == dict.fromkeys(
        ("crack", "spalling", "rust"), (160, 240))
    plain = proposer.propose_detailed(image, iterations=0)  # the same with a bare array
    for label in result.maps:
        np.testing.assert_array_equal(plain.maps[label].cam_map, result.maps[label].cam_map)


def test_working_scale_checks_and_overrides(tmp_path) -> None:
    weights = save_untrained(tmp_path / "w", labels=("crack", "rust"), tile_size=64,
                             tile_overlap=16)
    with pytest.raises(ValueError, match=r"unknown labels \['spalling'\]"):
        DefectProposer.from_weights(weights, device="cpu", working_scale={"spalling": 0.5})
    model = build_classifier(0)
    for bad in (0, 1.5, -0.5, True):
        with pytest.raises(ValueError, match=r"working scale must be a number in \(0, 1\]"):
            DefectMapPredictor(model, WeightsMetadata(label="crack"), "cpu", working_scale=bad)
    with pytest.raises(ValueError, match="tiling must be one of"):
        DefectMapPredictor(model, WeightsMetadata(label="crack"), "cpu", tiling="square")
    assert parse_working_scale("0.5") == 0.5
    assert parse_working_scale("rust=0.5, spalling=0.25") == {"rust": 0.5, "spalling": 0.25}
    with pytest.raises(ValueError, match="label=factor pairs"):
        parse_working_scale("rust=2")


def test_sidecars_without_the_new_fields_load_as_before(tmp_path) -> None:
    path = save_weights(build_classifier(0), WeightsMetadata(label="rust"),
                        tmp_path / "rust.safetensors")
    side = path.with_suffix(".json")
    data = json.loads(side.read_text())
    assert (data["working_scale"], data["screen_threshold"], data["working_max_side"]) == (
        1.0, 0.0, 0)
    # a sidecar of an earlier release
    del data["working_scale"], data["screen_threshold"], data["working_max_side"]
    side.write_text(json.dumps(data))
    meta = read_metadata(path)
    assert (meta.working_scale, meta.screen_threshold, meta.working_max_side) == (1.0, 0.0, 0)
    for key, bad in [("working_scale", 0), ("working_scale", 2), ("working_scale", "half"),
                     ("working_max_side", -1), ("working_max_side", 512.5),
                     ("working_max_side", True),
                     ("screen_threshold", 1.0), ("screen_threshold", -0.1),
                     ("screen_threshold", True)]:
        side.write_text(json.dumps({**data, key: bad}))
        with pytest.raises(WeightsError, match=key):
            read_metadata(path)


def test_deadline_parts_merge_at_a_working_scale() -> None:
    """The deadline runs parts of a shrunk image: they merge into the whole image's map."""
    meta = WeightsMetadata(label="crack", tile_size=64, tile_overlap=16, working_scale=0.5)
    predictor = DefectMapPredictor(build_classifier(seed=4), meta, "cpu", precision="fp32")
    image = concrete_texture(150, 260, np.random.default_rng(9))
    whole = predictor.predict(image, iterations=1)
    assert whole.working_size == (75, 130)
    tiles = whole.grid.tiles()
    parts = MapParts(meta)
    parts.add(predictor.predict(image, 1, tiles=tiles[::2]))
    parts.add(predictor.predict(image, 1, tiles=tiles[1::2]))
    merged = parts.finish()
    assert merged.working_size == (75, 130) and merged.cam_map.shape == (150, 260)
    assert merged.normaliser == pytest.approx(whole.normaliser, rel=1e-5)
    np.testing.assert_allclose(merged.cam_map, whole.cam_map, rtol=1e-4, atol=1e-6)
    assert merged.probability_at(149, 259) == whole.probability_at(149, 259)


# ------------------------------------------------------------------------------ balanced tiles


@pytest.mark.parametrize("length", [1600, 1200, 800, 600, 544, 1000, 5000, 513, 300])
def test_balanced_tiles_keep_the_count_and_the_overlap(length) -> None:
    fixed = TileGrid.build(length, 64, 512, 128, multiple=INPUT_MULTIPLE)
    grid = TileGrid.build(length, 64, 512, 128, multiple=INPUT_MULTIPLE, balanced=True)
    assert len(grid.ys) == len(fixed.ys)
    assert grid.tile_h % INPUT_MULTIPLE == 0 and grid.tile_h <= fixed.tile_h
    assert grid.ys[0] == 0 and grid.ys[-1] + grid.tile_h == max(length, grid.tile_h)
    # never less overlap than asked: the seam argument (test_engine) still holds
    assert all(b - a <= grid.tile_h - 128 for a, b in zip(grid.ys, grid.ys[1:], strict=False))
    total = np.zeros(length)
    for i in range(len(grid.ys)):
        ys, _ = grid.window(i, 0)
        total[ys] += grid.wy[i][: ys.stop - ys.start]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if length == 1600:
        assert (grid.tile_h, grid.ys) == (496, [0, 368, 736, 1104])  # 4 x 496, not 4 x 512
    assert tile_starts(length, grid.tile_h, 128) == grid.ys


def test_balanced_and_fixed_tiles_give_the_same_grad_cam(fitted_crack_model) -> None:
    """With enough overlap a stitched Grad-CAM equals the whole image's (test_engine), so
    the tiling changes no T = 0 map beyond float rounding."""
    image, _ = crack_scene(3, 200, 328)
    meta = WeightsMetadata(label="crack", tile_size=192, tile_overlap=128)
    maps = {}
    for tiling in ("fixed", "balanced"):
        predictor = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32",
                                       tiling=tiling)
        maps[tiling] = predictor.predict(image, iterations=0)
    assert maps["balanced"].grid.tile_w < maps["fixed"].grid.tile_w
    assert len(maps["balanced"].grid) == len(maps["fixed"].grid)
    np.testing.assert_allclose(maps["balanced"].cam_map, maps["fixed"].cam_map, atol=1e-4)


# ------------------------------------------------------------------------------ screening


class CountingModel(torch.nn.Module):
    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_screened_climb_reuses_the_first_forward(fitted_crack_model) -> None:
    rng = np.random.default_rng(3)
    tiles = []
    for k in range(4):
        img = concrete_texture(48, 48, rng)
        if k % 2 == 0:
            draw_crack(img, rng)
        tiles.append(img)
    x0 = normalize_batch(np.stack(tiles))
    settings = AdvCAMSettings(iterations=2)
    model = CountingModel(fitted_crack_model)
    plain = advcam_climb(model, x0, settings)
    assert model.calls == 3 and plain.climbed.all()  # T forward+backward passes + one forward
    probability = torch.sigmoid(plain.logit)

    model.calls = 0  # every tile passes: no extra screening pass, the same result
    passing = advcam_climb(model, x0, settings, screen_threshold=float(probability.min()))
    assert model.calls == 3 and passing.climbed.all()
    assert torch.equal(passing.cam, plain.cam)

    threshold = float(probability.median())
    model.calls = 0
    screened = advcam_climb(model, x0, settings, screen_threshold=threshold)
    keep = probability >= threshold
    assert keep.any() and (~keep).any()
    assert model.calls == 1 + 3  # the screening pass, then the passing tiles' climb
    assert torch.equal(screened.climbed, keep)
    alone = advcam_climb(fitted_crack_model, x0[keep], settings)
    torch.testing.assert_close(screened.cam[keep], alone.cam, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        first = fitted_crack_model(x0[~keep]).cam
    torch.testing.assert_close(screened.cam[~keep], first * 3, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(screened.logit, plain.logit)


def test_screening_default_comes_from_the_weights(fitted_crack_model) -> None:
    image, _ = crack_scene(7)
    meta = WeightsMetadata(label="crack", tile_size=48, tile_overlap=16)
    predictor = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32")
    threshold = float(np.median(predictor.predict(image, iterations=1).tile_probability))
    proposer = DefectProposer([predictor])
    assert proposer.propose_detailed(image, iterations=1).maps["crack"].climbed.all()
    meta.screen_threshold = threshold
    by_default = proposer.propose_detailed(image, iterations=1).maps["crack"]
    assert np.array_equal(by_default.climbed, by_default.tile_probability >= threshold)
    assert not by_default.climbed.all()
    off = proposer.propose_detailed(image, iterations=1, screen=False).maps["crack"]
    assert off.climbed.all()
    # screen=True: the weights' threshold where set, else 0.5; a number is a threshold.
    assert screen_threshold(True, meta) == threshold
    assert screen_threshold(True, WeightsMetadata(label="crack")) == 0.5
    assert screen_threshold(None, WeightsMetadata(label="crack")) is None
    assert screen_threshold(0.3, meta) == 0.3
    with pytest.raises(ValueError, match="screening threshold"):
        screen_threshold(1.5, meta)


def test_the_request_contract_leaves_screening_to_the_weights() -> None:
    assert ProposeOptions().screen is None and options_from_body({}).screen is None
    assert options_from_body({"screen": False}).screen is False
    cli = argparse.Namespace(min_confidence=None, iterations=None, cam_threshold=None,
                             labels=None, output=None, screen=False)  # --no-screen
    assert options_from_args(cli).screen is False
    assert ProposeOptions(screen=None).propose_kwargs()["screen"] is None


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_takes_the_switches_and_records_them(tmp_path: Path, capsys) -> None:
    weights = save_untrained(tmp_path / "w", labels=("rust",), tile_size=64, tile_overlap=16)
    rng = np.random.default_rng(0)
    xml = rust_export(tmp_path, concrete_texture(96, 128, rng), (20, 40, 60, 100))
    out = tmp_path / "eval"
    argv = ["evaluate", "--weights", str(weights), "--cvat-xml", str(xml), "--images",
            str(tmp_path), "--iterations", "1", "--device", "cpu", "--gallery", "0",
            "--no-progress", "--out", str(out), "--precision", "fp32", "--working-scale",
            "rust=0.5", "--tiling", "fixed"]
    assert main(argv) == 0
    config = json.loads((out / "report.json").read_text())["config"]
    rust = config["weights"]["rust"]
    assert (rust["precision"], rust["working_scale"], rust["tiling"]) == ("fp32", 0.5, "fixed")
    assert "fp32, working scale 0.5, fixed tiles" in config["weights_description"]
    with pytest.raises(SystemExit):  # argparse: a usage line and the reason
        main([*argv[:-4], "--working-scale", "2"])
    assert "--working-scale '2': expected a factor in (0, 1]" in capsys.readouterr().err


def test_a_working_longer_side_post_processes_where_its_settings_were_chosen(
        fitted_crack_model) -> None:
    """Pixel settings (closing, minimum area, refinement) were chosen on frames at the working
    longer side: a large frame is post-processed at that size and the proposals enlarged, so
    it gets what its shrunk copy gets, in its own pixels."""
    meta = WeightsMetadata(label="crack", tile_size=96, tile_overlap=32, working_max_side=160,
                           cam_threshold=0.3, min_area=12, refinement={
                               "evidence": "dark-lines", "dilation": 4, "kernel_px": 9, "k": 1.0})
    proposer = DefectProposer([DefectMapPredictor(fitted_crack_model, meta, "cpu",
                                                  precision="fp32")])
    image, _ = crack_scene(5, 200, 328)
    scales = ImageScales(image)
    large = proposer.propose(scales, iterations=0)
    assert list(scales._copies) == [(98, 160)]  # one shrunk copy: classifier and post-process
    small = proposer.propose(cv2.resize(image, (160, 98), interpolation=cv2.INTER_AREA),
                             iterations=0)
    assert len(large) == len(small) > 0

    def union(proposals, height, width):
        out = np.zeros((height, width), bool)
        for p in proposals:
            out |= p.full_mask(height, width)
        return out

    enlarged = cv2.resize(union(small, 98, 160).astype(np.uint8), (328, 200),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    got = union(large, 200, 328)
    assert (got & enlarged).sum() / (got | enlarged).sum() >= 0.9
    for p in large:
        assert p.area == p.mask.sum() == p.full_mask(200, 328).sum()
        x1, y1, x2, y2 = p.box
        assert 0 <= x1 <= x2 < 328 and 0 <= y1 <= y2 < 200
        assert (p.polygon[:, 0].min() >= x1 - 1 and p.polygon[:, 0].max() <= x2 + 1
                and p.polygon[:, 1].min() >= y1 - 1 and p.polygon[:, 1].max() <= y2 + 1)


def test_enlarged_proposals_cover_the_frame_pixels_of_theirs() -> None:
    mask = np.zeros((10, 10), bool)
    mask[3:7, 2:6] = True
    (small,) = mask_to_proposals(mask, "rust", 1)
    (big,) = enlarge_proposals([small], (10, 10), 20, 30)
    assert big.box == (6, 6, 17, 13) and big.area == 12 * 8
    assert big.full_mask(20, 30)[6:14, 6:18].all() and big.area == big.full_mask(20, 30).sum()
    assert (big.confidence, big.label) == (small.confidence, small.label)
    # the outline runs through pixel centres: the first small column (x 2) covers frame
    # columns 6..8, whose centre is 7; the first row (y 3) covers rows 6..7, centre 6.5
    np.testing.assert_allclose(big.polygon.min(axis=0), [7.0, 6.5])


def test_training_checks_the_working_longer_side_before_cutting_crops(tmp_path) -> None:
    """Fine-tuning must keep the size the weights see frames at; a bad value names the option."""
    from defectcam.training.pipeline import ClickTraining, train_from_clicks

    resume = save_weights(build_classifier(0), WeightsMetadata(label="rust"),
                          tmp_path / "rust.safetensors")
    missing = [tmp_path / "never-read.xml"]  # the checks come before the clicks are read
    job = ClickTraining(defect="rust", clicks=missing, images=tmp_path, out=tmp_path / "out",
                        resume=resume, working_max_side=1024)
    with pytest.raises(ValueError, match="trained at --working-max-side 0; pass the same"):
        train_from_clicks(job)
    for bad in (-1, 512.5):
        with pytest.raises(ValueError, match="--working-max-side must be a whole number"):
            train_from_clicks(ClickTraining(defect="rust", clicks=missing, images=tmp_path,
                                            out=tmp_path / "out", working_max_side=bad))
