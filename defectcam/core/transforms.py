"""The model's input transform: uint8 photos -> ImageNet-normalised float batches."""

from __future__ import annotations

import numpy as np
import torch

#: ImageNet statistics, hard-coded because no pretrained weights can be fetched here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_batch(
    images: torch.Tensor | np.ndarray,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images (B, H, W, 3) or (H, W, 3) -> float (B, 3, H, W) normalised input."""
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) images, got shape {tuple(t.shape)}")
    t = t.permute(0, 3, 1, 2).to(dtype) / 255.0
    m = torch.tensor(mean, dtype=dtype, device=t.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=t.device).view(1, 3, 1, 1)
    return (t - m) / s
