"""Shared fixtures: where ../shared/data is, and small real photos from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEFECTCAM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; tests that need them skip (with the reason) when absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DEFECTCAM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fitted_crack_model():
    """A classifier fitted for a few hundred steps on synthetic concrete with dark lines.

    Small 48 px crops keep it to well under a minute on 2 CPU cores; cracks are a few
    pixels wide, so 48 px crops hold a clear positive or negative.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from defectcam.core.model import build_classifier
    from defectcam.core.transforms import normalize_batch
    from tests.helpers import crack_crop_batch

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n = 384
    crops, labels = crack_crop_batch(n, rng)
    x_all = normalize_batch(crops)
    y_all = torch.from_numpy(labels)
    model = build_classifier(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    model.train()
    for _ in range(240):
        idx = torch.from_numpy(rng.choice(n, 16, replace=False))
        loss = F.binary_cross_entropy_with_logits(model(x_all[idx]).logit, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(x_all).logit > 0).float() == y_all).float().mean().item()
    assert accuracy > 0.9, f"fixture classifier did not fit (accuracy {accuracy:.2f})"
    return model
