"""Small builders shared by tests: synthetic crack textures, untrained weights, and the
benchmark scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import torch

from defectcam.core.model import build_classifier
from defectcam.core.weights import WeightsMetadata, save_weights
from defectcam.data.cvat_xml import CvatAnnotations, CvatImage, CvatLabel, CvatShape, write_cvat_xml

LABELS = ("crack", "spalling", "rust")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``name``. The scripts run as
    ``python benchmarks/<name>.py`` and import their neighbour ``report.py``: the folder goes
    on ``sys.path`` as it does for a script."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def concrete_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Grey, blotchy concrete-like background, uint8 RGB."""
    base = rng.normal(150, 12, (height // 8 + 1, width // 8 + 1))
    base = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 8, (height, width))
    grey = np.clip(base + noise, 0, 255)
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def draw_crack(image: np.ndarray, rng: np.random.Generator, width: int = 2) -> np.ndarray:
    """Draw a dark random-walk line on ``image`` in place; returns the line's mask."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    angle = rng.uniform(0, 2 * np.pi)
    points = []
    for _ in range(int(rng.integers(6, 12))):
        angle += rng.normal(0, 0.5)
        x = float(np.clip(x + 8 * np.cos(angle), 2, w - 3))
        y = float(np.clip(y + 8 * np.sin(angle), 2, h - 3))
        points.append((int(x), int(y)))
    cv2.polylines(mask, [np.array(points, np.int32)], False, 1, thickness=width)
    image[mask > 0] = (image[mask > 0] * 0.35).astype(np.uint8)
    return mask.astype(bool)


def crack_crop_batch(n: int, rng: np.random.Generator, size: int = 48):
    """``n`` crops, odd indices with a drawn crack: (uint8 (n, size, size, 3), labels 0/1)."""
    crops, labels = [], []
    for k in range(n):
        img = concrete_texture(size, size, rng)
        if k % 2:
            draw_crack(img, rng)
        crops.append(img)
        labels.append(k % 2)
    return np.stack(crops), np.array(labels, np.float32)


def save_untrained(directory: Path, labels=LABELS, tile_size: int = 128,
                   head_bias: dict[str, float] | None = None, **meta) -> Path:
    """One untrained classifier per label (fixed seeds) saved in the real weights format.

    ``head_bias``: label -> the head's bias, which moves the classifier's probabilities (the
    proposals' confidences) and leaves its CAMs alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for seed, label in enumerate(labels):
        metadata = WeightsMetadata(label=label, tile_size=tile_size, **meta)
        model = build_classifier(seed=seed)
        if head_bias and label in head_bias:
            with torch.no_grad():
                model.head.bias.fill_(head_bias[label])
        save_weights(model, metadata, directory / f"{label}.safetensors")
    return directory


def rust_export(folder: Path, image: np.ndarray, box: tuple[int, int, int, int]) -> Path:
    """A one-photo CVAT export: ``image`` (RGB, painted rust orange inside ``box`` = (top,
    left, bottom, right), end-exclusive) saved as ``folder/rusty.png``, and the box as its one
    rust polygon in ``folder/annotations.xml`` (returned)."""
    top, left, bottom, right = box
    image[top:bottom, left:right] = (190, 95, 40)
    cv2.imwrite(str(folder / "rusty.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    polygon = np.array([[left, top], [right - 1, top], [right - 1, bottom - 1],
                        [left, bottom - 1]], float)
    height, width = image.shape[:2]
    return write_cvat_xml(CvatAnnotations([CvatLabel("rust", "polygon")], [
        CvatImage(0, "rusty.png", width, height, [CvatShape("polygon", "rust", polygon)])]),
        folder / "annotations.xml")
