"""Maps -> instance proposals: threshold, closing, connected components, polygons.

Everything here is plain NumPy/OpenCV on one full-resolution map; the model never appears.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Proposal:
    """One defect instance proposed to the annotator.

    Coordinates are image pixels of the frame as CVAT displays it (EXIF orientation applied).
    ``box`` is inclusive ``(x1, y1, x2, y2)``; ``mask`` is the component cropped to ``box``
    (holes kept); ``polygon`` is the outer contour as an ``(N, 2)`` float array of x, y.
    """

    label: str
    confidence: float
    polygon: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    area: int
    peak: float = 0.0
    extra: dict = field(default_factory=dict)

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The proposal's pixels as a boolean mask of the whole image."""
        out = np.zeros((height, width), dtype=bool)
        x1, y1, x2, y2 = self.box
        out[y1 : y2 + 1, x1 : x2 + 1] = self.mask
        return out


def binarize_map(cam_map: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels of a normalised map above ``threshold`` (paper: 0.1, a deliberately low cut)."""
    return np.asarray(cam_map) > threshold


def close_mask(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """Morphological closing with an elliptical kernel.

    CAMs of thin cracks are sparse and break into fragments; closing re-joins fragments that
    are a few pixels apart so that one crack stays one proposal.
    """
    if kernel_size <= 1:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    # Pad so that closing near the image border does not erode components touching it.
    pad = kernel_size
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    return closed[pad:-pad, pad:-pad].astype(bool)


def mask_to_polygon(mask: np.ndarray, offset: tuple[int, int] = (0, 0),
                    tolerance: float = 0.7) -> np.ndarray:
    """Outer contour of a single connected component as an ``(N, 2)`` float array (x, y).

    ``tolerance`` is the Douglas-Peucker distance in pixels: below one pixel so that a
    one-pixel-wide crack keeps its shape. A component too small for a polygon (a lone pixel
    or a straight 1-pixel line) is widened to its pixel square corners so that CVAT always
    receives at least three distinct points.
    """
    m = np.ascontiguousarray(mask.astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("mask_to_polygon: the mask is empty")
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if tolerance > 0 and len(contour) > 4:
        simplified = cv2.approxPolyDP(contour, tolerance, closed=True)
        if len(simplified) >= 3:
            contour = simplified
    pts = contour.reshape(-1, 2).astype(np.float64)
    if len(np.unique(pts, axis=0)) < 3:
        # Degenerate (dot or straight thin line): use the outline of its pixel squares.
        ys, xs = np.nonzero(m)
        x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
        pts = np.array([[x1, y1], [x2 + 1, y1], [x2 + 1, y2 + 1], [x1, y2 + 1]], np.float64)
        pts -= 0.5  # pixel-square corners around pixel centres
    pts[:, 0] += offset[0]
    pts[:, 1] += offset[1]
    return pts


def polygon_to_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon (pixel-centre coordinates) the way :func:`mask_to_polygon` traced it."""
    pts = np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
    out = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(out, [pts], 1)
    cv2.polylines(out, [pts], isClosed=True, color=1, thickness=1)
    return out.astype(bool)


def mask_to_proposals(
    binary: np.ndarray,
    label: str,
    min_area: int,
    score_map: np.ndarray | None = None,
    confidence_fn=None,
    polygon_tolerance: float = 0.7,
    mean_confidence: bool = False,
    stop: Callable[[], bool] | None = None,
) -> list[Proposal]:
    """Split a binary mask into connected components (8-connectivity) and make proposals.

    ``score_map`` (the normalised CAM) gives each component its ``peak``;
    ``confidence_fn(y, x, peak)`` maps the peak pixel to a confidence (default: the peak);
    ``mean_confidence``: the component's mean on ``score_map`` instead (a pixel map's
    probability over the whole proposal, not its single surest pixel).
    Components are made and returned largest first; ``stop`` is asked before each one after
    the largest and once it answers True the smaller ones are left out (a deadline's last
    resort: the answer keeps the largest).
    """
    binary = np.ascontiguousarray(binary.astype(np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    proposals: list[Proposal] = []
    height, width = binary.shape
    areas = stats[1:, cv2.CC_STAT_AREA]
    for idx in 1 + np.argsort(-areas, kind="stable"):
        x, y, w, h, area = (int(v) for v in stats[idx])
        if area < min_area:
            break
        if proposals and stop is not None and stop():
            break
        crop = labels[y : y + h, x : x + w] == idx
        peak, py, px = 1.0, y, x
        if score_map is not None:
            scores = np.where(crop, score_map[y : y + h, x : x + w], -np.inf)
            flat = int(np.argmax(scores))
            py, px = y + flat // w, x + flat % w
            peak = float(scores.flat[flat])
        confidence = float(confidence_fn(py, px, peak)) if confidence_fn else float(peak)
        if mean_confidence and score_map is not None:
            confidence = float(score_map[y : y + h, x : x + w][crop].mean())
        polygon = mask_to_polygon(crop, offset=(x, y), tolerance=polygon_tolerance)
        polygon[:, 0] = np.clip(polygon[:, 0], 0, width - 1)
        polygon[:, 1] = np.clip(polygon[:, 1], 0, height - 1)
        proposals.append(
            Proposal(
                label=label,
                confidence=min(max(confidence, 0.0), 1.0),
                polygon=polygon,
                mask=crop,
                box=(x, y, x + w - 1, y + h - 1),
                area=area,
                peak=peak,
            )
        )
    proposals.sort(key=lambda p: p.area, reverse=True)
    return proposals


def enlarge_proposals(proposals: list[Proposal], made_at: tuple[int, int], height: int,
                      width: int) -> list[Proposal]:
    """Proposals made on a shrunk copy (``made_at``: its height, width) of a ``height`` x
    ``width`` frame, in the frame's own
    pixels: polygons scaled about pixel centres, boxes to the frame pixels they cover, masks
    by nearest neighbour (weights with a working longer side post-process at that size,
    where their settings were chosen; :meth:`DefectProposer.map_to_proposals`)."""
    fx, fy = width / made_at[1], height / made_at[0]
    out = []
    for p in proposals:
        x1, y1, x2, y2 = p.box
        box = (int(x1 * fx), int(y1 * fy), min(width - 1, int(np.ceil((x2 + 1) * fx)) - 1),
               min(height - 1, int(np.ceil((y2 + 1) * fy)) - 1))
        mask = cv2.resize(p.mask.astype(np.uint8), (box[2] - box[0] + 1, box[3] - box[1] + 1),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
        polygon = (np.asarray(p.polygon, dtype=np.float64) + 0.5) * (fx, fy) - 0.5
        polygon = np.clip(polygon, 0, (width - 1, height - 1))
        out.append(Proposal(p.label, p.confidence, polygon, mask, box, int(mask.sum()), p.peak,
                            dict(p.extra)))
    return out
