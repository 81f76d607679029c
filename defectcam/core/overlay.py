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
    """RGB image with each proposal filled (translucent) and outlined in its defect's colour."""
    out = image.copy()
    fill = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 800))
    for p in proposals:
        color = DEFECT_COLORS.get(p.label, FALLBACK_COLOR)
        x1, y1, x2, y2 = p.box
        region = fill[y1 : y2 + 1, x1 : x2 + 1]
        region[p.mask] = color
    out = cv2.addWeighted(fill, alpha, out, 1 - alpha, 0)
    for p in proposals:
        color = DEFECT_COLORS.get(p.label, FALLBACK_COLOR)
        pts = np.round(p.polygon).astype(np.int32)
        cv2.polylines(out, [pts], isClosed=True, color=color, thickness=thickness)
    if legend:
        _draw_legend(out, sorted({p.label for p in proposals}))
    return out


def _draw_legend(image: np.ndarray, labels: list[str]) -> None:
    scale = max(0.5, max(image.shape[:2]) / 1500)
    y = int(24 * scale)
    for label in labels:
        color = DEFECT_COLORS.get(label, FALLBACK_COLOR)
        cv2.putText(image, label, (int(10 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), int(4 * scale), cv2.LINE_AA)
        cv2.putText(image, label, (int(10 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    color, max(1, int(2 * scale)), cv2.LINE_AA)
        y += int(30 * scale)


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
