"""The new weak labels of a feedback round: one positive click per accepted, modified or missed
defect, one negative click inside each rejected proposal away from every kept defect."""

from __future__ import annotations

import numpy as np

from defectcam.data import NEGATIVE_LABEL
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    shape_clicks,
)
from defectcam.data.simulate import negative_click
from defectcam.feedback.match import FeedbackMatch, kept_region


def _click(label: str, x: float, y: float) -> CvatShape:
    return CvatShape(kind="points", label=label, points=np.array([[x, y]], dtype=np.float64))


def feedback_clicks(match: FeedbackMatch, min_distance: float, crop_size: int | None = None,
                    negative_label: str = NEGATIVE_LABEL) -> tuple[CvatAnnotations, list[dict]]:
    """The new weak labels (an export of ``points``) and, per click, where it came from."""
    images, provenance = [], []
    for verdict in match.images:
        image = verdict.image
        shapes: list[CvatShape] = []
        kept = None
        proposals = {(p.request_id, p.index): p
                     for p in (verdict.request.proposals if verdict.request else [])}
        for d in verdict.decisions:
            if d.decision in ("accepted", "modified"):
                points = shape_clicks(image.shapes[d.shape_index])
                label, origin = d.label, d.decision
            else:
                kept = kept_region(verdict) if kept is None else kept
                region = proposals[(d.request_id, d.index)].region(image.height, image.width)
                xy = negative_click(region, kept, min_distance, crop_size)
                points = np.zeros((0, 2)) if xy is None else np.array([xy])
                label, origin = negative_label, "rejected"
            for x, y in points:
                shapes.append(_click(label, x, y))
            provenance.append({"image": image.name, "request_id": d.request_id,
                               "proposal": d.index, "label": d.label, "decision": origin,
                               "click_label": label,
                               "click": [round(float(v), 2) for v in points[0]]
                               if len(points) else None})
        for m in verdict.missed:
            for x, y in shape_clicks(image.shapes[m.shape_index]):
                shapes.append(_click(m.label, x, y))
                provenance.append({"image": image.name, "request_id": None, "proposal": None,
                                   "label": m.label, "decision": "missed",
                                   "click_label": m.label,
                                   "click": [round(float(x), 2), round(float(y), 2)]})
        if shapes:
            images.append(CvatImage(image.id, image.name, image.width, image.height, shapes))
    labels = defect_labels(negative_label)
    return CvatAnnotations(labels, images, {"name": "defectcam feedback clicks"}), provenance
