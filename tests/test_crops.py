"""Crops around clicks: counts, balance, the click inside, clamping, padding, augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from defectcam.data.crops import (
    ClickCropDataset,
    at_working_scale,
    augment_crop,
    build_crop_set,
    positive_windows,
)
from defectcam.data.cvat_xml import ImageClicks, clicks_from_annotations
from defectcam.data.simulate import simulate_clicks
from defectcam.data.sources import list_pairs


def coded_image(h: int, w: int) -> np.ndarray:
    """Each pixel encodes its own x, y, so a crop tells where it came from."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], -1).astype(np.uint8)


def make_clicks(tmp_path, name, h, w, pos, neg) -> ImageClicks:
    cv2.imwrite(str(tmp_path / name), cv2.cvtColor(coded_image(h, w), cv2.COLOR_RGB2BGR))
    return ImageClicks(name, w, h, np.asarray(pos, float).reshape(-1, 2),
                       np.asarray(neg, float).reshape(-1, 2))


@pytest.fixture()
def clicks(tmp_path):
    return [
        # clicks on the borders and corners of a 300x200 image
        make_clicks(tmp_path, "a.png", 200, 300, [[0, 0], [299.5, 199.5], [150, 100]],
                    [[20, 180]]),
        make_clicks(tmp_path, "b.png", 90, 70, [[5, 80]], []),  # smaller than a crop
        make_clicks(tmp_path, "c.png", 200, 300, [], [[250, 30], [60, 60]]),
    ]


def test_counts_balance_click_inside_and_clamped(tmp_path, clicks):
    crops = build_crop_set(clicks, tmp_path, crop_size=96, crops_per_click=5, seed=0)
    assert crops.crops.shape == (40, 96, 96, 3) and crops.crops.dtype == np.uint8
    assert crops.positives == 20 and (crops.labels == 0).sum() == 20  # balanced
    assert crops.names.count("b.png") == 5
    pos = crops.labels == 1
    assert ((crops.clicks >= 0) & (crops.clicks < 96)).all()  # every click inside its crop
    # margin: positive clicks lie at least crop_size // 8 inside, unless the image edge
    # forced the crop back
    for crop, origin, click, name, label in zip(crops.crops, crops.origins, crops.clicks,
                                                crops.names, crops.labels, strict=True):
        if name == "b.png":
            continue
        x0, y0 = origin
        assert 0 <= x0 <= 300 - 96 and 0 <= y0 <= 200 - 96  # clamped inside the image
        np.testing.assert_array_equal(crop, coded_image(200, 300)[y0:y0 + 96, x0:x0 + 96])
        if label:
            inner = (click >= 12) & (click < 96 - 12)
            assert (inner | (origin == 0) | (origin + 96 == (300, 200))).all()
    # negatives: 20 crops over 3 negative clicks, spread evenly (6 or 7 each)
    per_click = {tuple(c) for c in crops.origins[~pos]}
    assert len(per_click) > 3
    counts = np.unique(np.round(crops.origins[~pos] + crops.clicks[~pos]), axis=0,
                       return_counts=True)[1]
    assert sorted(counts.tolist()) == [6, 7, 7]


def test_small_image_is_reflect_padded(tmp_path, clicks):
    crops = build_crop_set(clicks[1:2], tmp_path, crop_size=96, crops_per_click=3,
                           negative_ratio=0)
    assert crops.crops.shape == (3, 96, 96, 3)
    image = coded_image(90, 70)
    padded = np.pad(image, ((3, 3), (13, 13), (0, 0)), mode="reflect")
    for crop, origin in zip(crops.crops, crops.origins, strict=True):
        assert tuple(origin) == (-13, -3)  # the whole padded image is the crop
        np.testing.assert_array_equal(crop, padded)
    assert (crops.clicks == (5 + 13, 80 + 3)).all()


def test_positive_windows_contain_click():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = rng.integers(64, 400, 2)
        click = rng.uniform(0, (w, h))
        win = positive_windows(click, 5, 64, w, h, 8, rng)
        assert ((win >= 0) & (win <= (w - 64, h - 64))).all()
        inside = (np.floor(click) >= win) & (np.floor(click) < win + 64)
        assert inside.all()


def test_seeded_and_negatives_fewer_or_more(tmp_path, clicks):
    a = build_crop_set(clicks, tmp_path, crop_size=64, seed=4)
    b = build_crop_set(clicks, tmp_path, crop_size=64, seed=4)
    np.testing.assert_array_equal(a.origins, b.origins)
    c = build_crop_set(clicks, tmp_path, crop_size=64, seed=5)
    assert not np.array_equal(a.origins, c.origins)
    many_neg = [ImageClicks("c.png", 300, 200, np.array([[10.0, 10.0]]),
                            np.random.default_rng(0).uniform(0, 200, (40, 2)))]
    d = build_crop_set(many_neg, tmp_path, crop_size=64, crops_per_click=5)
    assert (d.labels == 0).sum() == 5  # 5 of the 40 negative clicks, one crop each
    assert len(np.unique(np.round(d.origins[d.labels == 0] + d.clicks[d.labels == 0]),
                         axis=0)) == 5


def test_dataset_and_augmentation(tmp_path, clicks):
    crops = build_crop_set(clicks, tmp_path, crop_size=64)
    plain = ClickCropDataset(crops, augment=False)
    image, label = plain[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert label.dtype == torch.float32 and label.item() == 1.0
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), crops.crops[0])
    hwc = ClickCropDataset(crops, augment=False, layout="hwc")[0][0]
    assert hwc.shape == (64, 64, 3)

    aug = ClickCropDataset(crops, augment=True, seed=1)
    first = aug[3][0]
    assert torch.equal(first, aug[3][0])  # reproducible for (seed, epoch, index)
    aug.set_epoch(1)
    assert not torch.equal(first, aug[3][0])
    batch = torch.stack([aug[i][0] for i in range(len(aug))])
    assert batch.shape == (len(crops), 3, 64, 64)

    # geometry only (no colour jitter): the result is one of the 8 flips/rotations
    crop = crops.crops[0]
    group = [np.rot90(f, k) for f in (crop, crop[:, ::-1]) for k in range(4)]
    seen = set()
    for seed in range(40):
        out = augment_crop(crop, np.random.default_rng(seed), 0, 0, 0)
        match = [i for i, g in enumerate(group) if np.array_equal(out, g)]
        assert match
        seen.add(match[0])
    assert len(seen) == 8
    # colour jitter stays mild
    out = augment_crop(crop, np.random.default_rng(0))
    assert abs(float(out.mean()) - float(crop.mean())) < 0.2 * float(crop.mean()) + 5


def test_crops_from_real_clicks(shared_data):
    pairs = list_pairs("phinet", shared_data)[:2]
    ann = simulate_clicks(pairs, "crack", seed=0, min_distance=20)
    clicks = clicks_from_annotations(ann, "crack")
    crops = build_crop_set(clicks, shared_data, crop_size=320, crops_per_click=5)
    n_pos = 5 * sum(len(c.positives) for c in clicks)
    assert n_pos > 0 and crops.positives == n_pos
    assert crops.crops.shape[1:] == (320, 320, 3)  # 224 px phinet images, padded
    assert len(crops) == 2 * n_pos or (crops.labels == 0).sum() == 0


def test_crops_at_a_working_scale_show_the_clicked_place_shrunk(tmp_path, clicks):
    """Weights trained at working_scale 0.5 must see what the predictor shows them: the
    image shrunk by 0.5, the click at half its coordinates."""
    scaled, load = at_working_scale(clicks, 0.5)
    assert [(c.width, c.height) for c in scaled] == [(150, 100), (35, 45), (150, 100)]
    np.testing.assert_allclose(scaled[0].positives, [[0, 0], [149, 99], [75, 50]])
    crops = build_crop_set(scaled, tmp_path, crop_size=32, crops_per_click=2, seed=0,
                           load_image=load)
    small = cv2.resize(coded_image(200, 300), (150, 100), interpolation=cv2.INTER_AREA)
    for crop, (x0, y0), name in zip(crops.crops, crops.origins, crops.names, strict=True):
        if name == "a.png":
            np.testing.assert_array_equal(crop, small[y0:y0 + 32, x0:x0 + 32])
    same, _ = at_working_scale(clicks, 1.0)
    assert same == list(clicks)
