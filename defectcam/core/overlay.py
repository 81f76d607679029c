"""Pictures for people: proposals drawn on the photo, and heat maps of the defect maps."""

from __future__ import annotations

import cv2
import numpy as np

from defectcam.core.postprocess import Proposal

#: RGB per defect; the same hues as the CVAT label colours of defectcam's task template.
DEFECT_COLORS = {"crack": (250, 50, 83), "spalling": (51, 221, 255), "rust": (255, 160, 0)}
FALLBACK_COLOR = (131, 224, 112)


def draw_proposals(image: np.ndarray, proposals: list[Proposal], alpha: float = 0.45,
                   legend: bool = True) -> np.ndarray:
    """The photo with each proposal filled (translucent) and outlined in its defect's colour.

    Each defect's fill is blended on its own, so where two defects' proposals overlap both
    hues show; every outline is drawn after every fill, so no fill hides an outline. The
    legend goes in a white band above the photo, never over it.

    Args:
        image: the photo, RGB uint8 (H, W, 3).
        proposals: what to draw, in the photo's pixels.
        alpha: opacity of the fills.
        legend: add the band naming the defects drawn (none when nothing is drawn).

    Returns:
        RGB uint8: the photo (H, W) under a legend band of a few text rows, if any.
    """
    out = image.copy()
    labels = sorted({p.label for p in proposals}, key=_label_order)
    thickness = max(1, round(max(image.shape[:2]) / 800))
    for label in labels:
        covered = np.zeros(image.shape[:2], bool)
        for p in proposals:
            if p.label == label:
                x1, y1, x2, y2 = p.box
                covered[y1 : y2 + 1, x1 : x2 + 1] |= p.mask
        color = np.array(DEFECT_COLORS.get(label, FALLBACK_COLOR), np.float32)
        out[covered] = np.round((1 - alpha) * out[covered] + alpha * color).astype(np.uint8)
    for p in sorted(proposals, key=lambda p: _label_order(p.label)):
        color = DEFECT_COLORS.get(p.label, FALLBACK_COLOR)
        pts = np.round(p.polygon).astype(np.int32)
        cv2.polylines(out, [pts], isClosed=True, color=color, thickness=thickness)
    if legend and labels:
        out = np.concatenate([legend_band(labels, image.shape[1]), out], axis=0)
    return out


def _label_order(label: str) -> tuple[int, str]:
    order = list(DEFECT_COLORS)
    return (order.index(label) if label in order else len(order), label)


def legend_band(labels: list[str], width: int) -> np.ndarray:
    """A white band ``width`` px wide naming each label in its colour, wrapped into rows.

    Args:
        labels: the defect names, in the order to show them.
        width: the photo's width.

    Returns:
        RGB uint8 (rows x row height, width, 3).
    """
    scale = max(0.4, width / 1500)
    weight = max(1, round(2 * scale))
    margin = max(4, round(8 * scale))
    (_, text_h), baseline = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    row_h = text_h + baseline + margin
    swatch = text_h
    rows: list[list[tuple[str, int]]] = [[]]
    x = margin
    for label in labels:
        (text_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        item = swatch + margin // 2 + text_w
        if rows[-1] and x + item > width - margin:
            rows.append([])
            x = margin
        rows[-1].append((label, x))
        x += item + 2 * margin
    band = np.full((row_h * len(rows) + margin, width, 3), 255, np.uint8)
    for row, items in enumerate(rows):
        y = margin + row * row_h + text_h  # the text's baseline
        for label, x in items:
            color = DEFECT_COLORS.get(label, FALLBACK_COLOR)
            cv2.rectangle(band, (x, y - swatch), (x + swatch, y), color, -1)
            cv2.putText(band, label, (x + swatch + margin // 2, y), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (0, 0, 0), weight, cv2.LINE_AA)
    return band


def heatmap(image: np.ndarray, cam_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The normalised map (0..1) as a JET colour map blended over the photo (RGB)."""
    colored = cv2.applyColorMap((np.clip(cam_map, 0, 1) * 255).astype(np.uint8),
                                cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colored, alpha, image, 1 - alpha, 0)


def write_rgb(path, image: np.ndarray) -> None:
    """Save an RGB array (PNG/JPEG by suffix); raises OSError naming the path on failure."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
