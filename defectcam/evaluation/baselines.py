"""Learning-free baselines: one image -> one binary defect map, from colour and darkness alone.

They answer "what would a few lines of OpenCV give?" The image evidence they use lives in
``defectcam.core.refine``, where the model's proposals are fitted to it inside the map's region;
here it runs over the whole image with strict thresholds. so that the classifiers' numbers have a
floor to stand on. ``defectcam evaluate --baseline`` runs them through the *same*
post-processing as the model (closing, connected components, minimum area, see
:func:`baseline_proposals`) and the same metrics, so the rows compare like with like.

- crack: black-hat transform (closing minus image) of the blurred grey image with a
  ``kernel_px`` ellipse: thin dark lines light up, broad shading does not. Pixels above
  ``max(Otsu(black-hat), mean + k * std)`` are crack; the second term keeps a crack-free image
  from being split in half by Otsu.
- rust: HSV colour threshold for orange/brown: hue 0-25 (OpenCV scale 0-179, i.e. 0-50
  degrees) or >= 170 (reddish), saturation >= 70, value 30-235 (not black, not glare).
- spalling: rough and dark: local standard deviation of grey in a ``window_px`` window above
  its Otsu threshold, and grey below the image median (exposed aggregate is darker and more
  textured than the cast surface).
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
    """The baseline's binary map of ``defect`` over ``image`` (H, W, 3) uint8 RGB."""
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
