"""Image evidence for proposals: the classifier says *where*, the image says *which pixels*.

A GAP classifier's CAM localises a defect only to within its receptive field, so the
binarised map is fitted to image evidence inside (a dilation of) its region, after König et
al. (IEEE T-ITS 2022); the evidence kinds and how they combine: :class:`Refinement`. The
same evidence with strict, image-wide thresholds is the learning-free baselines'
(``defectcam.evaluation.baselines``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: Evidence kinds and the defect each was made for.
EVIDENCE_KINDS = ("dark-lines", "rust-colour", "rough-dark", "dark-lines-otsu",
                  "rough-dark-otsu")
#: What the region keeps of the evidence: its pixels inside the region, or every connected
#: evidence component that reaches into the region (a crack continues past the CAM's band).
KEEP_KINDS = ("pixels", "components")


def grey(image: np.ndarray) -> np.ndarray:
    """Grey levels of an (H, W, 3) uint8 RGB image (raises on anything else)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu threshold of a uint8 image (its value when the image is flat, 0 when empty)."""
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    threshold, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(threshold)


def blackhat(image: np.ndarray, kernel_px: int = 15) -> np.ndarray:
    """Black-hat (closing minus image) of the 3x3-blurred grey image, uint8."""
    g = cv2.GaussianBlur(grey(image), (3, 3), 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_px, kernel_px))
    return cv2.morphologyEx(g, cv2.MORPH_BLACKHAT, kernel)


def dark_lines(image: np.ndarray, kernel_px: int = 15, k: float = 1.5,
               otsu: bool = False) -> np.ndarray:
    """Thin dark lines: black-hat above ``mean + k std`` (and above its Otsu threshold when
    ``otsu``: the baseline's image-wide rule, which keeps a crack-free image from being split
    in half)."""
    response = blackhat(image, kernel_px)
    floor = float(response.mean() + k * response.std())
    if otsu:
        floor = max(floor, otsu_threshold(response))
    return response > floor


def rust_colour(image: np.ndarray, max_hue: int = 25, min_red_hue: int = 170,
                min_saturation: int = 70, value_range: tuple[int, int] = (30, 235)
                ) -> np.ndarray:
    """Orange, brown and reddish pixels in HSV."""
    grey(image)  # validates the input
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hue_ok = (h <= max_hue) | (h >= min_red_hue)
    return hue_ok & (s >= min_saturation) & (v >= value_range[0]) & (v <= value_range[1])


def local_grey_stats(image: np.ndarray, window_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, local standard deviation) of grey in a ``window_px`` box, float32
    (``image``: RGB, or its grey levels already made, (H, W) uint8)."""
    g = (image if image.ndim == 2 else grey(image)).astype(np.float32)
    mean = cv2.blur(g, (window_px, window_px))
    sq_mean = cv2.blur(g * g, (window_px, window_px))
    return mean, np.sqrt(np.maximum(sq_mean - mean * mean, 0.0))


def rough_dark(image: np.ndarray, kernel_px: int = 15, k: float = 1.0) -> np.ndarray:
    """Rough and dark: local std above ``k`` x its image median, local mean below the
    image's median grey."""
    mean, std = local_grey_stats(image, kernel_px)
    return (std > k * float(np.median(std))) & (mean < float(np.median(mean)))


def rough_dark_otsu(image: np.ndarray, kernel_px: int = 15) -> np.ndarray:
    """Rough and dark by the image's own split: local grey std (scaled to 0-255) above its
    Otsu threshold, and grey below the image median (the spalling baseline's rule)."""
    levels = grey(image)
    mean, std = local_grey_stats(levels, kernel_px)
    std8 = np.clip(std * (255.0 / max(float(std.max()), 1e-6)), 0, 255).astype(np.uint8)
    return (std8 > otsu_threshold(std8)) & (mean < median_u8(levels))


def median_u8(values: np.ndarray) -> float:
    """``np.median`` of uint8 values from their histogram (a full sort of a large frame's
    pixels costs more than the rest of its evidence)."""
    counts = np.cumsum(np.bincount(values.ravel(), minlength=256))
    size = int(counts[-1])
    if size == 0:
        return float("nan")
    low = int(np.searchsorted(counts, (size - 1) // 2, side="right"))
    high = int(np.searchsorted(counts, size // 2, side="right"))
    return (low + high) / 2.0


_EVIDENCE: dict[str, Callable[..., np.ndarray]] = {
    "dark-lines": lambda image, s: dark_lines(image, s.kernel_px, s.k),
    "rust-colour": lambda image, s: rust_colour(image, min_saturation=int(s.k)),
    "rough-dark": lambda image, s: rough_dark(image, s.kernel_px, s.k),
    "dark-lines-otsu": lambda image, s: dark_lines(image, s.kernel_px, s.k, otsu=True),
    "rough-dark-otsu": lambda image, s: rough_dark_otsu(image, s.kernel_px),
}


@dataclass(frozen=True)
class Refinement:
    """How a defect's proposals are fitted to image evidence (weights' metadata).

    ``evidence``: one of :data:`EVIDENCE_KINDS`, or ``"none"`` (the map alone, the paper's
    post-processing). ``dilation``: pixels added around the map's region before the
    intersection (the CAM band may sit beside a thin defect rather than on it; from 32 px on
    the reach is made on pixel blocks and may go up to a quarter further, :func:`grow`).
    ``kernel_px`` and ``k``: the evidence's window and sensitivity (for ``rust-colour``, ``k``
    is the minimum HSV saturation). ``keep``: one of :data:`KEEP_KINDS`. ``fill``: close the
    fitted mask with a disc of this radius and fill its holes (blobs such as spalling are
    drawn as one outline around patchy evidence; 0: off).

    How region and evidence combine::

        pixels = dilate(map > cam_threshold, dilation) & evidence(image)      (keep: pixels)
        pixels = evidence components touching dilate(map > cam_threshold)   (keep: components)

    The evidence kinds (plain OpenCV on the RGB image):

    - ``dark-lines`` (crack): black-hat (closing minus image) of the blurred grey image with
      a ``kernel_px`` ellipse, above ``mean + k * std`` of the black-hat over the image.
    - ``rust-colour`` (rust): orange / brown / red in HSV (OpenCV's 0-179 hue scale).
    - ``rough-dark`` (spalling): local grey standard deviation in a ``kernel_px`` window above
      ``k`` times its image median, and local mean grey below the image median (exposed
      aggregate is darker and rougher than the cast surface).
    - ``dark-lines-otsu`` / ``rough-dark-otsu``: the same with the baselines' image-wide
      (Otsu) thresholds, so that the region only chooses among the baseline's components.

    The model's contribution is the region, which lets the evidence use a more sensitive
    threshold than it could afford on the whole image.
    """

    evidence: str = "none"
    dilation: int = 0
    kernel_px: int = 15
    k: float = 1.5
    keep: str = "pixels"
    fill: int = 0

    def __post_init__(self) -> None:
        if self.evidence != "none" and self.evidence not in EVIDENCE_KINDS:
            raise ValueError(f"unknown evidence {self.evidence!r}; known: none, "
                             f"{', '.join(EVIDENCE_KINDS)}")
        if self.dilation < 0 or self.kernel_px < 1 or self.fill < 0:
            raise ValueError("refinement dilation and fill must be >= 0 and kernel_px >= 1")
        if self.keep not in KEEP_KINDS:
            raise ValueError(f"unknown keep {self.keep!r}; known: {', '.join(KEEP_KINDS)}")

    @classmethod
    def from_dict(cls, data: dict | None) -> Refinement:
        return cls(**(data or {}))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.evidence != "none"

    def evidence_map(self, image: np.ndarray) -> np.ndarray:
        """The evidence of ``image`` (H, W, 3) uint8 RGB as a boolean map."""
        return np.asarray(_EVIDENCE[self.evidence](image, self), dtype=bool)

    def apply(self, region: np.ndarray, image: np.ndarray) -> np.ndarray:
        """``region`` (the binarised map) fitted to the evidence of ``image``."""
        if not self.active:
            return region
        if region.shape != image.shape[:2]:
            raise ValueError(f"region {region.shape} and image {image.shape[:2]} differ in size")
        if not region.any():
            return region
        return self.fit(region, self.evidence_map(image))

    def fit(self, region: np.ndarray, evidence: np.ndarray) -> np.ndarray:
        """``region`` fitted to an evidence map already computed (same size, boolean)."""
        region = grow(region, self.dilation)
        inside = region & evidence
        if self.keep == "components" and inside.any():
            count, labels = cv2.connectedComponents(evidence.astype(np.uint8), connectivity=8)
            touched = np.zeros(count, bool)
            touched[np.unique(labels[inside])] = True
            touched[0] = False
            inside = touched[labels]
        return filled(inside, self.fill) if self.fill else inside

    def score_map(self, cam_map: np.ndarray) -> np.ndarray:
        """The map each proposal's ``near-peak`` confidence is read from: the map's maximum
        within ``dilation`` px, as :func:`grow` reaches (a proposal fitted beside the CAM's
        band gets the band's value, not the lower value of its own pixels)."""
        if not self.dilation:
            return cam_map
        return max_within(np.ascontiguousarray(cam_map, dtype=np.float32), self.dilation)


#: The strict, image-wide form of each evidence kind: the learning-free baselines' rules
#: (``defectcam.evaluation.baselines``), and what an interactor's click chooses from inside
#: the classifier's region (``defectcam.core.interact``), where the click, not a sensitive
#: threshold, says which defect is meant.
STRICT_EVIDENCE: dict[str, Refinement] = {
    "dark-lines": Refinement("dark-lines-otsu", kernel_px=15, k=2.0),
    "dark-lines-otsu": Refinement("dark-lines-otsu", kernel_px=15, k=2.0),
    "rough-dark": Refinement("rough-dark-otsu", kernel_px=15),
    "rough-dark-otsu": Refinement("rough-dark-otsu", kernel_px=15),
    "rust-colour": Refinement("rust-colour", k=70),
}


def filled(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` closed with a disc of ``radius`` px, then every hole filled (boolean)."""
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disc(radius))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(closed)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)


#: Radii per coarse pixel: a dilation of ``radius`` px runs on blocks of ``radius //
#: COARSE_REACH`` px (exact below ``2 * COARSE_REACH``). A disc's cost grows with its area,
#: so a full-resolution disc of tens of pixels costs far more than the rest of the
#: post-processing on a large frame; on blocks it reaches a few pixels further.
COARSE_REACH = 16


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a disc of ``radius`` px (boolean; unchanged for radius 0).

    From ``2 * COARSE_REACH`` px on, on blocks (:func:`max_within`): every pixel within
    ``radius`` is kept, and some up to about ``radius * 1.25`` px away.
    """
    if not radius:
        return mask.astype(bool)
    return max_within(np.ascontiguousarray(mask, dtype=np.uint8), radius).astype(bool)


def max_within(values: np.ndarray, radius: int) -> np.ndarray:
    """The maximum of ``values`` (uint8 or float32, 2-D) within ``radius`` px of each pixel:
    a dilation by :func:`disc`, exact for a radius below ``2 * COARSE_REACH``.

    Larger radii run on the maxima of ``s`` x ``s`` blocks (``s = radius // COARSE_REACH``)
    with a disc of ``ceil((radius + 0.5 + (s - 1) * sqrt 2) / s)`` blocks, the smallest that
    covers every pixel pair of the exact disc: the result is at least the exact one, its
    reach at most ``s - 1`` blocks' worth larger, at about ``1 / s**4`` of the cost.
    """
    scale = max(1, radius // COARSE_REACH)
    if scale == 1:
        return cv2.dilate(values, disc(radius))
    height, width = values.shape
    blocks = cv2.dilate(values, np.ones((scale, scale), np.uint8), anchor=(0, 0))
    blocks = np.ascontiguousarray(blocks[::scale, ::scale])
    reach = int(np.ceil((radius + 0.5 + (scale - 1) * np.sqrt(2.0)) / scale))
    blocks = cv2.dilate(blocks, disc(reach))
    size = (blocks.shape[1] * scale, blocks.shape[0] * scale)
    return cv2.resize(blocks, size, interpolation=cv2.INTER_NEAREST)[:height, :width]


def disc(radius: int) -> np.ndarray:
    """The elliptic structuring element of ``radius`` px (a (2r+1) x (2r+1) disc)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
