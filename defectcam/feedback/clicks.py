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
from defectcam.feedback.match import FeedbackMatch, ImageVerdict, ProposalDecision, kept_by_label

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


class _Frame:
    """One judged image while its clicks are written: what it keeps and its pixels, each
    computed once and only when a decision needs them."""

    def __init__(self, verdict: ImageVerdict, negative_label: str) -> None:
        self.verdict, self.negative_label = verdict, negative_label
        self.shapes: list[CvatShape] = []
        self._kept: dict[str, np.ndarray] | None = None
        self._pixels: list[np.ndarray | None] = []

    def kept(self) -> dict[str, np.ndarray]:
        if self._kept is None:
            self._kept = kept_by_label(self.verdict, self.negative_label)
        return self._kept

    def pixels(self) -> np.ndarray | None:
        """The frame as RGB (``None`` without its file, or when its size differs)."""
        if not self._pixels:
            path, image = self.verdict.path, self.verdict.image
            rgb = read_rgb(path) if path is not None else None
            ok = rgb is not None and rgb.shape[:2] == (image.height, image.width)
            self._pixels.append(rgb if ok else None)
        return self._pixels[0]

    def points(self, shape: CvatShape) -> np.ndarray:
        """The clicks a final shape stands for (a box's on its label's image evidence)."""
        return box_click(shape, self.pixels()) if shape.kind == "box" else shape_clicks(shape)


def _round(points: np.ndarray) -> list[float] | None:
    return [round(float(v), 2) for v in points[0]] if len(points) else None


def _rejection(frame: _Frame, d: ProposalDecision, region: np.ndarray, min_distance: float,
               crop_size: int | None) -> list[tuple[ClickOrigin, LabelledClick | None]]:
    """The clicks a rejected proposal gives (:func:`rejection_clicks`), with their origins."""
    clicks = rejection_clicks(region, d.label, frame.kept(), min_distance, crop_size,
                              frame.negative_label)
    out = []
    for c in clicks:
        on_other = c.label != frame.negative_label
        kind = ("rejected_on_other_defect" if on_other
                else "rejected_near_other_defect" if c.only else "rejected")
        teaches = [(d.label, -1)] + ([(c.label, 1)] if on_other else [])
        out.append((ClickOrigin(d.image, d.request_id, d.index, d.label, kind, None, None,
                                teaches), c))
    return out or [(ClickOrigin(d.image, d.request_id, d.index, d.label, "rejected", None,
                                None), None)]


def feedback_clicks(match: FeedbackMatch, min_distance: float, crop_size: int | None = None,
                    negative_label: str = NEGATIVE_LABEL,
                    ) -> tuple[CvatAnnotations, list[ClickOrigin]]:
    """The new weak labels (an export of ``points``) and, per decision, its click(s)."""
    images, origins = [], []
    for verdict in match.images:
        frame, image = _Frame(verdict, negative_label), verdict.image
        proposals = {(p.request_id, p.index): p
                     for p in (verdict.request.proposals if verdict.request else [])}
        emitted: list[tuple[ClickOrigin, LabelledClick | None]] = []
        for d in verdict.decisions:
            if d.decision == "rejected":
                region = proposals[(d.request_id, d.index)].region(image.height, image.width)
                emitted += _rejection(frame, d, region, min_distance, crop_size)
                continue
            label, teaches = d.label, [(d.label, 1)]
            if d.decision == "relabelled":
                label, teaches = d.new_label, [(d.new_label, 1), (d.label, -1)]
            for x, y in frame.points(image.shapes[d.shape_index]):
                emitted.append((ClickOrigin(d.image, d.request_id, d.index, d.label,
                                            d.decision, None, None, teaches),
                                LabelledClick(label, x, y)))
        for m in verdict.missed:
            for x, y in frame.points(image.shapes[m.shape_index]):
                emitted.append((ClickOrigin(image.name, None, None, m.label, "missed", None,
                                            None, [(m.label, 1)]), LabelledClick(m.label, x, y)))
        for origin, click in emitted:
            if click is not None:
                origin.click_label, origin.click = click.label, _round(np.array([[click.x,
                                                                                  click.y]]))
                frame.shapes.append(labelled_point(click))
            origins.append(origin)
        if frame.shapes:
            images.append(CvatImage(image.id, image.name, image.width, image.height,
                                    frame.shapes, sha256=verdict.sha256))
    labels = defect_labels(negative_label)
    return CvatAnnotations(labels, images, {"name": "defectcam feedback clicks"}), origins
