"""Learning-free baselines: one image -> one binary defect map, from colour and darkness alone.

What a few lines of OpenCV give, as a floor for the classifiers' figures: the image evidence
of ``defectcam.core.refine`` over the whole image with strict thresholds, run by
``defectcam evaluate --baseline`` through the same post-processing and metrics as the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from defectcam.core.postprocess import Proposal, close_mask, mask_to_proposals
from defectcam.core.refine import STRICT_EVIDENCE


def crack_baseline(image: np.ndarray) -> np.ndarray:
    """Thin dark lines: black-hat (15 px) above max(Otsu, mean + 2 std), over the whole
    image (``refine.STRICT_EVIDENCE["dark-lines"]``)."""
    return STRICT_EVIDENCE["dark-lines"].evidence_map(image)


def rust_baseline(image: np.ndarray) -> np.ndarray:
    """Orange, brown and reddish pixels in HSV (``refine.STRICT_EVIDENCE["rust-colour"]``)."""
    return STRICT_EVIDENCE["rust-colour"].evidence_map(image)


def spalling_baseline(image: np.ndarray) -> np.ndarray:
    """Textured and darker than the median: local grey std (15 px) above Otsu, grey below
    median (``refine.STRICT_EVIDENCE["rough-dark"]``)."""
    return STRICT_EVIDENCE["rough-dark"].evidence_map(image)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "crack": crack_baseline,
    "rust": rust_baseline,
    "spalling": spalling_baseline,
}

BASELINE_RULES: dict[str, str] = {
    "crack": "black-hat (15 px ellipse) of the blurred grey image > max(Otsu, mean + 2 std)",
    "rust": "HSV hue <= 25 or >= 170 (OpenCV 0-179), saturation >= 70, value 30..235",
    "spalling": "local grey std (15 px window) > Otsu of it, and grey < image median",
}


def baseline_map(image: np.ndarray, defect: str) -> np.ndarray:
    """The baseline's binary map of ``defect`` over ``image``.

    - crack: black-hat (closing minus image) of the blurred grey image with a ``kernel_px``
      ellipse, above ``max(Otsu(black-hat), mean + k * std)`` (the second term keeps a
      crack-free image from being split in half by Otsu).
    - rust: orange / brown / red in HSV, neither black nor glare.
    - spalling: local grey standard deviation above its Otsu threshold, and grey below the
      image median (exposed aggregate is darker and more textured than the cast surface).

    Args:
        image: RGB uint8 (H, W, 3).
        defect: ``crack``, ``spalling`` or ``rust``.

    Returns:
        Boolean (H, W).

    Raises:
        ValueError: no baseline for ``defect``.
    """
    try:
        fn = BASELINES[defect]
    except KeyError:
        raise ValueError(f"no baseline for {defect!r}; known: {sorted(BASELINES)}") from None
    return np.asarray(fn(image), dtype=bool)


def baseline_proposals(image: np.ndarray, defect: str, closing_size: int = 5,
                       min_area: int = 64) -> list[Proposal]:
    """Baseline map -> proposals with the model's post-processing (method.md section 5,
    steps 3-5; pass the weights' ``closing_size`` and ``min_area``). Confidence = 1."""
    binary = close_mask(baseline_map(image, defect), closing_size)
    return mask_to_proposals(binary, defect, min_area)
