"""The second stage: pseudo-masks, annotated masks, the pixel head and its training."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defectcam.cli import main as cli
from defectcam.core.model import build_classifier
from defectcam.core.proposer import DefectProposer
from defectcam.core.weights import WeightsError, WeightsMetadata, load_weights, save_weights
from defectcam.data.crops import ClickCropDataset, augment_pair, build_crop_set
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    ImageClicks,
    defect_labels,
    read_cvat_xml,
    write_cvat_xml,
)
from defectcam.training.pixel_loop import pixel_loss
from defectcam.training.pseudo_masks import (
    BACKGROUND,
    DEFECT,
    UNSURE,
    PseudoMaskSettings,
    annotated_masks,
    label_mask,
    mask_file,
    mask_loader,
    pseudo_mask,
)
from tests.helpers import concrete_texture, draw_crack


def clicks(positives=(), negatives=(), size=(64, 64)) -> ImageClicks:
    return ImageClicks("a.png", size[1], size[0], np.asarray(positives, float).reshape(-1, 2),
                       np.asarray(negatives, float).reshape(-1, 2))


def test_image_without_positive_clicks_is_background_everywhere():
    high = np.ones((64, 64), np.float32)
    mask = label_mask(high, high > 0, clicks(negatives=[(5, 5)]), PseudoMaskSettings())
    assert (mask == BACKGROUND).all()


def test_label_mask_keeps_clicked_components_and_leaves_the_rest_unsure():
    cam = np.zeros((64, 64), np.float32)
    defect = np.zeros((64, 64), bool)
    defect[10:14, 5:30] = True  # clicked
    defect[50:54, 40:60] = True  # no click near: not vouched for
    cam[defect] = 0.8
    mask = label_mask(cam, defect, clicks(positives=[(10, 12)], negatives=[(58, 5)]),
                      PseudoMaskSettings(margin=3, click_radius=6))
    assert (mask[10:14, 5:30] == DEFECT).all()
    assert (mask[50:54, 40:60] == UNSURE).all()
    assert mask[30, 32] == BACKGROUND  # low map far from any defect
    assert mask[8, 20] == UNSURE  # the defect's outline margin
    assert mask[58, 5] == BACKGROUND  # the negative click's disc


def test_pixel_loss_ignores_unsure_pixels_and_rewards_the_right_answer():
    mask = torch.tensor([[[1, 0], [UNSURE, 0]]], dtype=torch.uint8)
    right = torch.tensor([[[5.0, -5.0], [0.0, -5.0]]])
    wrong = -right
    assert pixel_loss(right, mask) < 0.05 < pixel_loss(wrong, mask)
    changed = right.clone()
    changed[0, 1, 0] = 40.0  # an unsure pixel: no effect
    assert torch.isclose(pixel_loss(changed, mask), pixel_loss(right, mask))
    assert pixel_loss(right, torch.full_like(mask, UNSURE)) == 0


def test_augment_pair_turns_the_mask_with_the_crop():
    rng = np.random.default_rng(3)
    mask = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    crop = np.repeat((mask * 200 + 20)[:, :, None], 3, axis=2).astype(np.uint8)
    for seed in range(8):
        out, out_mask = augment_pair(crop, mask, np.random.default_rng(seed), 0, 0, 0)
        assert np.array_equal(out[..., 0] > 100, out_mask > 0)


def test_crops_carry_their_masks_and_padding_is_unsure(tmp_path):
    rng = np.random.default_rng(0)
    image = concrete_texture(40, 60, rng)
    truth = draw_crack(image, rng, width=3)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(mask_file(masks, "a.png")), truth.astype(np.uint8))
    ys, xs = np.nonzero(truth)
    item = ImageClicks("a.png", 60, 40, np.array([[xs[0], ys[0]]], float), np.zeros((0, 2)))
    crops = build_crop_set([item], tmp_path, crop_size=48, crops_per_click=3,
                           load_mask=mask_loader([masks]))
    assert crops.masks.shape == (3, 48, 48)
    for crop, mask in zip(crops.crops, crops.masks, strict=True):
        inside = mask != UNSURE
        assert inside.sum() == 40 * 48  # the 40 rows of the image; the padding is unsure
        assert (mask[:4] == UNSURE).all() and (mask[-4:] == UNSURE).all()
        dark = crop[..., 0] < 90
        assert (dark[inside & (mask == 1)]).mean() > 0.9  # the mask sits on the drawn line
    image_t, label, mask_t = ClickCropDataset(crops, augment=True, layout="hwc")[0]
    assert mask_t.shape == (48, 48) and label == 1 and image_t.shape == (48, 48, 3)


def test_pixel_weights_round_trip_and_sidecar_checks(tmp_path):
    model = build_classifier(seed=0, pixel_head=True)
    meta = WeightsMetadata(label="crack", serves="pixel", cam_scale=1.0)
    path = save_weights(model, meta, tmp_path / "crack.safetensors")
    loaded, loaded_meta = load_weights(path)
    assert loaded.serves == "pixel" and loaded_meta.serves == "pixel"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = loaded(x)
        assert torch.allclose(out.cam, torch.sigmoid(out.pixel_logit))
        assert torch.allclose(out.cam, model.eval()(x).cam)
    side = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**side, "serves": "cam"}))
    with pytest.raises(WeightsError, match="unexpected.*pixel_head"):
        load_weights(path)
    path.with_suffix(".json").write_text(json.dumps({**side, "serves": "pixels"}))
    with pytest.raises(WeightsError, match="serves must be one of"):
        load_weights(path)


def test_annotated_masks_from_a_cvat_export(tmp_path):
    crop = np.zeros((4, 6), bool)
    crop[1:3, 1:5] = True
    frame = CvatImage(0, "sub/f.jpg", 20, 10, [
        CvatShape("mask", "rust", mask=crop, box=(2, 2, 7, 5)),
        CvatShape("box", "rust", points=np.array([[12.0, 1.0], [15.0, 4.0]])),
        CvatShape("polygon", "crack", points=np.array([[0, 8], [5, 8], [5, 9], [0, 9.0]])),
    ])
    export = tmp_path / "annotations.xml"
    write_cvat_xml(CvatAnnotations(defect_labels(), [frame]), export)
    assert annotated_masks(read_cvat_xml(export), "rust", tmp_path / "m") == 1
    mask = cv2.imread(str(mask_file(tmp_path / "m", "sub/f.jpg")), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((10, 20), np.uint8)
    expected[3:5, 3:7] = DEFECT
    expected[1:5, 12:16] = UNSURE
    assert np.array_equal(mask, expected)  # the crack polygon is background for rust


@pytest.fixture(scope="module")
def crack_task(tmp_path_factory, fitted_crack_model):
    """Six synthetic photos with drawn cracks, their clicks and true masks, and the fitted
    fixture classifier as click-trained weights."""
    root = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(1)
    frames, truth = [], root / "truth"
    for k in range(6):
        image = concrete_texture(96, 96, rng)
        mask = draw_crack(image, rng, width=3) | draw_crack(image, rng, width=2)
        name = f"photos/p{k}.png"
        (root / "photos").mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), image[..., ::-1])
        ys, xs = np.nonzero(mask)
        pick = [len(xs) // 3, 2 * len(xs) // 3]
        shapes = [CvatShape("points", "crack", np.array([[xs[i], ys[i]]], float))
                  for i in pick]
        far = np.argwhere(cv2.dilate(mask.astype(np.uint8), np.ones((25, 25))) == 0)
        shapes += [CvatShape("points", "no-defect", np.array([far[len(far) // 2][::-1]], float))]
        frames.append(CvatImage(k, name, 96, 96, shapes))
        path = mask_file(truth, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), mask.astype(np.uint8))
    clicks_xml = write_cvat_xml(CvatAnnotations(defect_labels(), frames), root / "clicks.xml")
    weights = save_weights(fitted_crack_model, WeightsMetadata(
        label="crack", tile_size=96, tile_overlap=16, iterations=0, cam_threshold=0.3,
        min_area=8, refinement={"evidence": "dark-lines", "dilation": 8, "kernel_px": 15,
                                "k": 1.5}), root / "classifier" / "crack.safetensors")
    return root, clicks_xml, truth, weights


def test_pseudo_mask_marks_the_clicked_crack(crack_task):
    root, clicks_xml, truth, weights = crack_task
    proposer = DefectProposer.from_weights(weights, device="cpu")
    annotations = read_cvat_xml(clicks_xml)
    from defectcam.data.cvat_xml import clicks_from_annotations

    item = clicks_from_annotations(annotations, "crack", "no-defect")[0]
    image = cv2.imread(str(root / item.name))[..., ::-1].copy()
    mask = pseudo_mask(proposer, "crack", image, item, PseudoMaskSettings(iterations=1))
    true = cv2.imread(str(mask_file(truth, item.name)), cv2.IMREAD_UNCHANGED) > 0
    defect, background = mask == DEFECT, mask == BACKGROUND
    assert defect.any() and background.any()
    assert (true[defect]).mean() > 0.5  # what it calls defect is mostly the crack
    assert (~true[background]).mean() > 0.95  # what it calls background is clean


def test_train_masks_serves_a_learned_pixel_map(crack_task, tmp_path, capsys):
    root, clicks_xml, truth, weights = crack_task
    out = tmp_path / "round1" / "crack.safetensors"
    code = cli(["train", "--defect", "crack", "--clicks", str(clicks_xml), "--images",
                str(root), "--masks", str(truth), "--resume", str(weights), "--out", str(out),
                "--crop-size", "48", "--crops-per-click", "6", "--epochs", "8",
                "--batch-size", "8", "--micro-batch", "8", "--lr", "3e-3", "--holdout", "0.34",
                "--patience", "0", "--precision", "fp32", "--device", "cpu", "--no-progress",
                "--seed", "0"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best_pixel_iou"] > 0.3, summary
    model, meta = load_weights(out)
    assert meta.serves == "pixel" and meta.cam_scale == 1.0 and meta.refinement == {}
    assert meta.training["stage"] == "pixels" and meta.training["started_from"] == str(weights)
    assert meta.training["images"] == [str(root)]  # the folders, not a list's repr
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert out.with_suffix(".curves.png").stat().st_size > 0
    assert log[-1]["val_pixel_iou"] > log[0]["val_pixel_iou"]
    proposer = DefectProposer.from_weights(out, device="cpu")
    name = read_cvat_xml(clicks_xml).images[-1].name  # a held-apart or fitted photo alike
    image = cv2.imread(str(root / name))[..., ::-1].copy()
    result = proposer.propose_detailed(image, iterations=0)
    cam = result.maps["crack"].cam_map
    assert 0 <= cam.min() and cam.max() <= 1
    true = cv2.imread(str(mask_file(truth, name)), cv2.IMREAD_UNCHANGED) > 0
    assert cam[true].mean() > cam[~true].mean() + 0.2


def test_train_masks_needs_a_start_and_existing_folders(crack_task, tmp_path, capsys):
    root, clicks_xml, truth, weights = crack_task
    base = ["train", "--defect", "crack", "--clicks", str(clicks_xml), "--images", str(root),
            "--out", str(tmp_path / "w")]
    assert cli([*base, "--masks", str(truth)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli([*base, "--masks", str(tmp_path / "nowhere"), "--resume", str(weights)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_simulated_team_output_marks_corrected_and_drawn_instances(shared_data):
    from defectcam.data.simulate import finished_frames
    from defectcam.data.sources import load_defect_mask, pairs_for_defect

    pair = next(p for p in pairs_for_defect("spalling", shared_data)
                if load_defect_mask(p, "spalling").sum() > 500)
    truth = load_defect_mask(pair, "spalling")
    done = finished_frames([pair], "spalling", {pair.name: [truth.copy()]})
    shapes = done.images[0].shapes
    assert shapes and all(s.source == "semi-auto" for s in shapes)
    assert sum(int(s.mask.sum()) for s in shapes) <= int(truth.sum())
    drawn = finished_frames([pair], "spalling", {})
    assert all(s.source == "manual" for s in drawn.images[0].shapes)
    assert Path(pair.image).is_file()


def test_mean_confidence_is_the_proposals_mean_on_the_map():
    from defectcam.core.postprocess import mask_to_proposals

    score = np.zeros((20, 20), np.float32)
    score[2:6, 2:12] = 0.6
    score[3, 3] = 1.0  # one sure pixel in a weak region
    binary = score > 0.5
    peak = mask_to_proposals(binary, "rust", 1, score_map=score)[0]
    mean = mask_to_proposals(binary, "rust", 1, score_map=score, mean_confidence=True)[0]
    assert peak.confidence == pytest.approx(1.0)
    assert mean.confidence == pytest.approx((0.6 * 39 + 1.0) / 40)
