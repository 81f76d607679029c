"""The new weak labels of a feedback round: every decision the annotator made becomes clicks.

- accepted / modified proposal: a positive click at the deepest point of its final shape;
- relabelled proposal: a click of the new label there (positive for the new label; training
  reads it as a negative for the old one, ``clicks_from_annotations(other_labels=...)``);
- rejected proposal: a negative click inside it away from every kept defect, and where it
  lies on a kept defect of another label, a click of that label inside the overlap (away from
  kept defects of its own label): "this is rust, not spalling"; where it lies only near
  other defects, a negative click for its label alone (``for`` attribute);
- missed defect (drawn by hand): a click inside the drawn shape; for a box, on the defect's
  image evidence inside it (a loose box's centre may miss a thin crack).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from defectcam.core import refine
from defectcam.data import NEGATIVE_LABEL
from defectcam.data.crops import read_rgb
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    shape_clicks,
)
from defectcam.data.simulate import (
    LabelledClick,
    deepest_point,
    labelled_point,
    rejection_clicks,
)
from defectcam.feedback.match import FeedbackMatch, ImageVerdict, kept_by_label

#: What a hand-drawn box's click looks for inside the box (the refinement's evidence kinds).
BOX_EVIDENCE = {"crack": refine.dark_lines, "spalling": refine.rough_dark,
                "rust": refine.rust_colour}


@dataclass
class ClickOrigin:
    """Where one click came from, and what it teaches: ``teaches`` holds (label, +1 | -1)
    pairs, a click being a positive or a negative for that label."""

    image: str
    request_id: int | None
    proposal: int | None
    label: str
    decision: str
    click_label: str | None
    click: list[float] | None
    teaches: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"image": self.image, "request_id": self.request_id, "proposal": self.proposal,
                "label": self.label, "decision": self.decision,
                "click_label": self.click_label, "click": self.click,
                "teaches": [f"{'+' if sign > 0 else '-'}{label}" for label, sign in self.teaches]}


def box_click(shape: CvatShape, image: np.ndarray | None) -> np.ndarray:
    """One click for a hand-drawn box: the deepest point of the largest patch of the label's
    image evidence inside it, else the box's centre."""
    (x1, y1), (x2, y2) = np.asarray(shape.points, dtype=float).reshape(2, 2)
    evidence = BOX_EVIDENCE.get(shape.label)
    if image is not None and evidence is not None:
        h, w = image.shape[:2]
        left, top = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
        right, bottom = int(np.clip(np.ceil(x2), 0, w - 1)), int(np.clip(np.ceil(y2), 0, h - 1))
        crop = image[top : bottom + 1, left : right + 1]
        if min(crop.shape[:2]) >= 3:
            found = evidence(crop).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
            if count > 1:
                largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
                x, y = deepest_point(labels == largest)
                return np.array([[left + x, top + y]], dtype=np.float64)
    return np.array([[(x1 + x2) / 2, (y1 + y2) / 2]], dtype=np.float64)


def _image_pixels(verdict: ImageVerdict) -> np.ndarray | None:
    if verdict.path is None:
        return None
    image = read_rgb(verdict.path)
    if image.shape[:2] != (verdict.image.height, verdict.image.width):
        return None  # a different frame size: the export's own coordinates cannot be used
    return image


def _round(points: np.ndarray) -> list[float] | None:
    return [round(float(v), 2) for v in points[0]] if len(points) else None


def feedback_clicks(match: FeedbackMatch, min_distance: float, crop_size: int | None = None,
                    negative_label: str = NEGATIVE_LABEL,
                    ) -> tuple[CvatAnnotations, list[ClickOrigin]]:
    """The new weak labels (an export of ``points``) and, per decision, its click(s)."""
    images, origins = [], []
    for verdict in match.images:
        image = verdict.image
        shapes: list[CvatShape] = []
        kept = None
        proposals = {(p.request_id, p.index): p
                     for p in (verdict.request.proposals if verdict.request else [])}

        def add(origin: ClickOrigin, label: str | None, points: np.ndarray,
                shapes=shapes, only: str | None = None) -> None:
            origin.click_label, origin.click = label, _round(points)
            shapes += [labelled_point(LabelledClick(label, x, y, only)) for x, y in points]
            origins.append(origin)

        pixels: list[np.ndarray | None] = []  # the frame, read once if a box needs it

        def shape_points(shape: CvatShape, verdict=verdict, pixels=pixels) -> np.ndarray:
            if shape.kind != "box":
                return shape_clicks(shape)
            if not pixels:
                pixels.append(_image_pixels(verdict))
            return box_click(shape, pixels[0])

        for d in verdict.decisions:
            origin = ClickOrigin(image.name, d.request_id, d.index, d.label, d.decision,
                                 None, None)
            if d.decision in ("accepted", "modified"):
                origin.teaches = [(d.label, 1)]
                add(origin, d.label, shape_points(image.shapes[d.shape_index]))
            elif d.decision == "relabelled":
                origin.teaches = [(d.new_label, 1), (d.label, -1)]
                add(origin, d.new_label, shape_points(image.shapes[d.shape_index]))
            else:
                kept = kept_by_label(verdict, negative_label) if kept is None else kept
                region = proposals[(d.request_id, d.index)].region(image.height, image.width)
                clicks = rejection_clicks(region, d.label, kept, min_distance, crop_size,
                                          negative_label)
                if not clicks:
                    add(origin, None, np.zeros((0, 2)))
                for c in clicks:
                    on_other = c.label != negative_label
                    kind = ("rejected_on_other_defect" if on_other
                            else "rejected_near_other_defect" if c.only else "rejected")
                    origin = ClickOrigin(image.name, d.request_id, d.index, d.label, kind,
                                         None, None, [(d.label, -1)])
                    if on_other:
                        origin.teaches.append((c.label, 1))
                    add(origin, c.label, np.array([[c.x, c.y]]), only=c.only)
        for m in verdict.missed:
            for xy in shape_points(image.shapes[m.shape_index]):
                add(ClickOrigin(image.name, None, None, m.label, "missed", None, None,
                                [(m.label, 1)]), m.label, xy[None])
        if shapes:
            images.append(CvatImage(image.id, image.name, image.width, image.height, shapes,
                                    sha256=verdict.sha256))
    labels = defect_labels(negative_label)
    return CvatAnnotations(labels, images, {"name": "defectcam feedback clicks"}), origins
