"""One binary crop data set per defect, from clicks (method.md section 1).

``crops_per_click`` crops of ``crop_size`` px around each positive click (random offsets,
the click at least ``margin`` px inside), and as many negative crops around negative clicks
(spread evenly over them; several per click when they are fewer). Crops are taken at native
resolution, clamped inside the image; an image smaller than a crop is reflect-padded.
All crops are extracted once into one uint8 array (each image decoded once), so training
epochs never touch the JPEGs again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from defectcam.core.image_io import scaled_size, working_factor
from defectcam.data.cvat_xml import ImageClicks
from defectcam.data.image_roots import ImageRoots


@dataclass
class CropSet:
    """``crops`` (N, S, S, 3) uint8 RGB; ``labels`` (N,) 1 defect / 0 no defect;
    ``origins`` (N, 2) crop top-left x,y in image pixels (negative where padded);
    ``clicks`` (N, 2) the click's x,y inside its crop; ``names`` the image of each crop;
    ``masks`` (N, S, S) uint8 pixel labels of each crop when the set was built with masks
    (0 background, 1 defect, 255 unsure: ``defectcam.training.pixels``), else ``None``."""

    crops: np.ndarray
    labels: np.ndarray
    origins: np.ndarray
    clicks: np.ndarray
    names: list[str]
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[1])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


def read_rgb(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def at_working_scale(clicks: Sequence[ImageClicks], scale: float,
                     load_image: Callable[[Path], np.ndarray] | None = None,
                     max_side: int = 0,
                     ) -> tuple[list[ImageClicks], Callable[[Path], np.ndarray]]:
    """Clicks and an image loader for crops taken at a working scale and working longer side
    (weights' metadata ``working_scale``, ``working_max_side``; 0: no limit): the classifier
    must see defects at the size inference shows them."""
    load = load_image or read_rgb
    if scale == 1.0 and not max_side:
        return list(clicks), load

    def load_scaled(path: Path) -> np.ndarray:
        image = load(path)
        factor = working_factor(image.shape[1], image.shape[0], scale, max_side)
        if factor == 1.0:
            return image
        size = scaled_size(image.shape[1], image.shape[0], factor)
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    scaled = []
    for c in clicks:
        factor = working_factor(c.width, c.height, scale, max_side)
        width, height = scaled_size(c.width, c.height, factor)
        fit = np.array([width - 1, height - 1], dtype=np.float64)
        scaled.append(ImageClicks(c.name, width, height,
                                  np.clip(np.asarray(c.positives, float) * factor, 0, fit),
                                  np.clip(np.asarray(c.negatives, float) * factor, 0, fit),
                                  c.image_id, c.sha256, c.other_label_negatives))
    return scaled, load_scaled


def pad_to(image: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """Reflect-pad an image smaller than ``size`` (centred); returns it and the left/top pad."""
    h, w = image.shape[:2]
    px, py = max(0, size - w), max(0, size - h)
    if px == 0 and py == 0:
        return image, 0, 0
    left, top = px // 2, py // 2
    widths = ((top, py - top), (left, px - left)) + ((0, 0),) * (image.ndim - 2)
    # numpy's reflect repeats the reflection, so pads larger than the image work too
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(image, widths, mode=mode), left, top


def positive_windows(click: np.ndarray, n: int, size: int, width: int, height: int,
                     margin: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crop top-left corners (x, y) with the click >= ``margin`` px inside, clamped to
    a ``width`` x ``height`` image (already padded to >= size). Clamping keeps the click
    inside: it can only move the window toward the click's side of the image."""
    margin = int(min(margin, (size - 1) // 2))
    cx, cy = int(np.floor(click[0])), int(np.floor(click[1]))
    x0 = rng.integers(cx - size + 1 + margin, cx - margin + 1, n)
    y0 = rng.integers(cy - size + 1 + margin, cy - margin + 1, n)
    return np.stack([np.clip(x0, 0, width - size), np.clip(y0, 0, height - size)], axis=1)


def negative_windows(click: np.ndarray, n: int, size: int, width: int, height: int,
                     jitter: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` corners of crops centred on the click, shifted by up to ``jitter`` px: centred
    because the annotator vouched for the clicked place, not for what lies a crop away."""
    jitter = int(min(jitter, size // 2 - 1))
    cx, cy = int(np.floor(click[0])), int(np.floor(click[1]))
    x0 = cx - size // 2 + rng.integers(-jitter, jitter + 1, n)
    y0 = cy - size // 2 + rng.integers(-jitter, jitter + 1, n)
    return np.stack([np.clip(x0, 0, width - size), np.clip(y0, 0, height - size)], axis=1)


def _negative_quota(clicks: Sequence[ImageClicks], total: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Crops per negative click, per image: ``total`` spread as evenly as possible."""
    sizes = [len(c.negatives) for c in clicks]
    n = sum(sizes)
    flat = np.zeros(n, dtype=np.int64)
    if n and total:
        # a seeded permutation repeated to length `total`: each click gets floor or ceil
        np.add.at(flat, np.resize(rng.permutation(n), total), 1)
    return np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []


def build_crop_set(
    clicks: Sequence[ImageClicks],
    image_dir: str | Path | Sequence[str | Path] | ImageRoots,
    *,
    crop_size: int = 320,
    crops_per_click: int = 5,
    negative_ratio: float = 1.0,
    margin: int | None = None,
    negative_jitter: int | None = None,
    seed: int = 0,
    load_image: Callable[[Path], np.ndarray] = read_rgb,
    load_mask: Callable[[str, tuple[int, int]], np.ndarray] | None = None,
) -> CropSet:
    """Extract every crop of one defect's data set into memory.

    ``negative_ratio``: negative crops per positive crop (1.0 = balanced). ``margin``
    (default crop_size // 8): how far inside a positive crop its click must lie.
    ``negative_jitter`` (default crop_size // 8): shift of negative crops off centre.
    ``image_dir``: the folder(s) the names are relative to; each image is found by its exact
    relative path or its content hash (:class:`ImageRoots`), never by a bare file name.
    ``load_mask(name, (height, width))``: the image's pixel labels at the size crops are cut
    from; the same windows are cut from it (padding is unsure, 255) into ``CropSet.masks``.
    """
    if crop_size < 8 or crops_per_click < 1:
        raise ValueError("crop_size must be >= 8 and crops_per_click >= 1")
    margin = crop_size // 8 if margin is None else margin
    jitter = crop_size // 8 if negative_jitter is None else negative_jitter
    roots = ImageRoots.of(image_dir)
    rng = np.random.default_rng(seed)
    n_pos = crops_per_click * sum(len(c.positives) for c in clicks)
    quota = _negative_quota(clicks, round(n_pos * negative_ratio), rng)
    total = n_pos + sum(int(q.sum()) for q in quota)
    crops = np.empty((total, crop_size, crop_size, 3), dtype=np.uint8)
    labels = np.zeros(total, dtype=np.uint8)
    origins = np.zeros((total, 2), dtype=np.int64)
    local = np.zeros((total, 2), dtype=np.float64)
    names: list[str] = []
    masks = None if load_mask is None else np.empty((total, crop_size, crop_size), np.uint8)
    i = 0
    for item, counts in zip(clicks, quota, strict=True):
        if not len(item.positives) and not counts.sum():
            continue
        image = load_image(roots.resolve(item.name, item.sha256))
        if image.shape[:2] != (item.height, item.width):
            raise ValueError(f"{item.name}: image is {image.shape[1]}x{image.shape[0]}, "
                             f"annotations say {item.width}x{item.height}")
        mask = None
        if masks is not None:
            mask = load_mask(item.name, image.shape[:2])
            if mask.shape != image.shape[:2]:
                raise ValueError(f"{item.name}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"image {image.shape[1]}x{image.shape[0]}")
            mask = _pad_unsure(mask, crop_size)
        image, left, top = pad_to(image, crop_size)
        h, w = image.shape[:2]
        jobs = [(click, crops_per_click, 1) for click in item.positives]
        jobs += [(click, int(k), 0) for click, k in zip(item.negatives, counts, strict=True) if k]
        for click, k, label in jobs:
            shifted = np.asarray(click, dtype=np.float64) + (left, top)
            if label:
                corners = positive_windows(shifted, k, crop_size, w, h, margin, rng)
            else:
                corners = negative_windows(shifted, k, crop_size, w, h, jitter, rng)
            for x0, y0 in corners:
                crops[i] = image[y0 : y0 + crop_size, x0 : x0 + crop_size]
                if masks is not None:
                    masks[i] = mask[y0 : y0 + crop_size, x0 : x0 + crop_size]
                labels[i] = label
                origins[i] = (x0 - left, y0 - top)
                local[i] = shifted - (x0, y0)
                names.append(item.name)
                i += 1
    return CropSet(crops, labels, origins, local, names, masks)


def _pad_unsure(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask padded as :func:`pad_to` pads its image, the padding marked unsure (255):
    reflected pixels are not the annotator's."""
    h, w = mask.shape
    px, py = max(0, size - w), max(0, size - h)
    if px == 0 and py == 0:
        return mask
    left, top = px // 2, py // 2
    return np.pad(mask, ((top, py - top), (left, px - left)), constant_values=255)


def augment_crop(crop: np.ndarray, rng: np.random.Generator, brightness: float = 0.15,
                 contrast: float = 0.15, hue: float = 0.02) -> np.ndarray:
    """Defect-preserving augmentation of an HWC uint8 crop: one of the 8 flips/rotations
    by 90 degrees, mild brightness, contrast and hue jitter (rust stays rust-coloured)."""
    return augment_pair(crop, None, rng, brightness, contrast, hue)[0]


def augment_pair(crop: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                 brightness: float = 0.15, contrast: float = 0.15, hue: float = 0.02
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`augment_crop` of ``crop``, and the same flip/rotation of its pixel ``mask``.

    Args:
        crop: (S, S, 3) uint8 RGB.
        mask: (S, S) pixel labels, or ``None``.
        rng: the draws (rotation, flip, hue, brightness, contrast, in that order).

    Returns:
        The augmented crop and mask (``None`` when none was given).
    """
    turns, flip = int(rng.integers(4)), rng.random() < 0.5
    out = np.rot90(crop, turns)
    if flip:
        out = out[:, ::-1]
    if mask is not None:
        mask = np.rot90(mask, turns)
        mask = np.ascontiguousarray(mask[:, ::-1] if flip else mask)
    out = np.ascontiguousarray(out)
    if hue > 0:
        shift = int(round(rng.uniform(-hue, hue) * 180))
        if shift:
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    gain = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    x = out.astype(np.float32)
    mean = x.mean()
    x = (x - mean) * c + mean * gain
    return np.clip(x + 0.5, 0, 255).astype(np.uint8), mask


class ClickCropDataset(Dataset):
    """A :class:`CropSet` for training: ``(uint8 tensor, float32 label)`` per index, and
    the crop's uint8 pixel mask third when the set has masks (flipped and turned with it).

    The tensor is CHW (``layout="chw"``) or HWC (``"hwc"``, what
    ``defectcam.core.transforms.normalize_batch`` takes once batched). Augmentation is seeded by
    (seed, epoch, index): call :meth:`set_epoch` each epoch for fresh, reproducible draws.
    """

    def __init__(self, crop_set: CropSet, augment: bool = True, seed: int = 0,
                 layout: str = "chw", brightness: float = 0.15, contrast: float = 0.15,
                 hue: float = 0.02) -> None:
        if layout not in ("chw", "hwc"):
            raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
        self.crop_set = crop_set
        self.augment = augment
        self.seed = seed
        self.layout = layout
        self.jitter = (brightness, contrast, hue)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.crop_set)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        crop = self.crop_set.crops[index]
        masks = self.crop_set.masks
        mask = None if masks is None else masks[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            crop, mask = augment_pair(crop, mask, rng, *self.jitter)
        if self.layout == "chw":
            crop = crop.transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(crop))
        label = torch.tensor(float(self.crop_set.labels[index]), dtype=torch.float32)
        if mask is None:
            return image, label
        return image, label, torch.from_numpy(np.ascontiguousarray(mask))
