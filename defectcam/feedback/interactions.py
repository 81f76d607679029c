"""Every click is a training label: the interactor's logged clicks -> clicks for training.

Rules (docs/feedback-loop.md states them for users):

- Image: an interaction belongs to an export image as a detector request does
  (:func:`defectcam.feedback.match.requests_by_image`); unlike detector requests, every
  interaction on an image counts (one per object the annotator clicked).
- Verdict: the answered mask is paired with the final region shape of its label that
  overlaps it most (pixel IoU): ``accepted`` (IoU >= ``accept_iou``), ``modified``
  (>= ``modify_iou``) or ``deleted`` (no such shape: the annotator threw the answer away or
  relabelled it).
- Clicks: an accepted or modified interaction gives its positive points as clicks of its
  label (the annotator's own clicks on the defect, the paper's weak label); a deleted one
  gives none. Each negative point becomes a ``no-defect`` click when it lies at least
  ``min_distance`` px from every defect the image keeps (a negative point next to a kept
  defect only trims that defect's border, and a crop there would hold the defect).
- The final shape paired with an interaction is the interaction's, not a missed defect of
  the detector's: :func:`absorb_missed` drops it from the detector's ``missed`` list so that
  one defect gives one set of clicks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from defectcam.data import NEGATIVE_LABEL
from defectcam.data.cvat_xml import CvatAnnotations, CvatImage, CvatShape
from defectcam.feedback.match import (
    ACCEPT_IOU,
    MODIFY_IOU,
    REGION_KINDS,
    FeedbackMatch,
    ImageVerdict,
    kept_region,
    requests_by_image,
    shape_region,
)
from defectcam.serving.interaction_log import LoggedRequest


@dataclass
class InteractionVerdict:
    """The verdict on one logged interaction (``shape_index``: the paired final shape in
    ``image.shapes``, ``None`` when deleted)."""

    request_id: int
    image: CvatImage
    label: str
    positive: list[tuple[float, float]]
    negative: list[tuple[float, float]]
    decision: str
    iou: float
    shape_index: int | None = None


@dataclass
class InteractionMatch:
    """Verdicts on the interactions of an export, and the interactions of no export image."""

    verdicts: list[InteractionVerdict] = field(default_factory=list)
    unmatched: list[LoggedRequest] = field(default_factory=list)

    def paired_shapes(self, image_name: str) -> set[int]:
        return {v.shape_index for v in self.verdicts
                if v.image.name == image_name and v.shape_index is not None}


def judge_interactions(annotations: CvatAnnotations, interactions: Sequence[LoggedRequest],
                       images_dir: str | Path | Sequence[str | Path] | None = None,
                       accept_iou: float = ACCEPT_IOU,
                       modify_iou: float = MODIFY_IOU) -> InteractionMatch:
    """Pair every logged interaction with the export's final shapes (module rules).

    Args:
        annotations: the export.
        interactions: logged interactor requests (``LoggedRequest.is_interaction``).
        images_dir: the export's images (requests are found by content hash there).
        accept_iou: IoU from which the answer counts as accepted.
        modify_iou: IoU from which it counts as modified (below: deleted).

    Returns:
        :class:`InteractionMatch`.
    """
    match = InteractionMatch()
    used: set[int] = set()
    for image, (found, *_) in zip(annotations.images,
                                    requests_by_image(annotations, interactions, images_dir),
                                    strict=True):
        for request in found:
            used.add(request.id)
            match.verdicts.append(_judge(image, request, accept_iou, modify_iou))
    match.unmatched = [r for r in interactions if r.id not in used]
    return match


def _judge(image: CvatImage, request: LoggedRequest, accept_iou: float,
           modify_iou: float) -> InteractionVerdict:
    params = request.params
    label = str(params.get("label") or (request.proposals[0].label if request.proposals
                                        else ""))
    positive = [(float(x), float(y)) for x, y in params.get("pos_points") or []]
    negative = [(float(x), float(y)) for x, y in params.get("neg_points") or []]
    h, w = image.height, image.width
    answer = (request.proposals[0].region(h, w) if request.proposals
              else np.zeros((h, w), bool))
    best, best_iou = None, 0.0
    for index, shape in enumerate(image.shapes):
        if shape.label != label or shape.kind not in REGION_KINDS:
            continue
        final = shape_region(shape, h, w)
        union = np.count_nonzero(final | answer)
        iou = np.count_nonzero(final & answer) / union if union else 0.0
        if iou > best_iou:
            best, best_iou = index, float(iou)
    if best is None or best_iou < modify_iou:
        return InteractionVerdict(request.id, image, label, positive, negative, "deleted",
                                  best_iou)
    decision = "accepted" if best_iou >= accept_iou else "modified"
    return InteractionVerdict(request.id, image, label, positive, negative, decision,
                              best_iou, best)


def absorb_missed(match: FeedbackMatch, interactions: InteractionMatch) -> int:
    """Drop from the detector's ``missed`` every final shape an interaction answered (one
    defect, one set of clicks); returns how many were dropped."""
    dropped = 0
    for verdict in match.images:
        paired = interactions.paired_shapes(verdict.image.name)
        kept = [m for m in verdict.missed if m.shape_index not in paired]
        dropped += len(verdict.missed) - len(kept)
        verdict.missed = kept
    return dropped


def interaction_clicks(interactions: InteractionMatch, detector: FeedbackMatch,
                       min_distance: float, negative_label: str = NEGATIVE_LABEL
                       ) -> tuple[dict[str, list[CvatShape]], list[dict]]:
    """Clicks per export image name, and per click where it came from (module rules)."""
    verdict_of = {v.image.name: v for v in detector.images}
    kept_cache: dict[str, np.ndarray] = {}
    shapes: dict[str, list[CvatShape]] = {}
    provenance: list[dict] = []
    for v in interactions.verdicts:
        clicks: list[tuple[str, tuple[float, float], str]] = []
        if v.decision != "deleted":
            clicks += [(v.label, p, f"interaction {v.decision}") for p in v.positive]
        if v.negative:
            name = v.image.name
            if name not in kept_cache:
                base = verdict_of.get(name) or ImageVerdict(v.image, None)
                kept_cache[name] = _distance_to(kept_region(base))
            distance = kept_cache[name]
            for x, y in v.negative:
                xi = int(np.clip(round(x), 0, v.image.width - 1))
                yi = int(np.clip(round(y), 0, v.image.height - 1))
                if distance[yi, xi] >= min_distance:
                    clicks.append((negative_label, (x, y), "interaction negative"))
        for label, (x, y), origin in clicks:
            shapes.setdefault(v.image.name, []).append(CvatShape(
                kind="points", label=label, points=np.array([[x, y]], dtype=np.float64)))
            provenance.append({"image": v.image.name, "request_id": v.request_id,
                               "proposal": None, "label": v.label, "decision": origin,
                               "click_label": label, "click": [round(x, 2), round(y, 2)]})
    return shapes, provenance


def _distance_to(region: np.ndarray) -> np.ndarray:
    """Distance of every pixel to ``region`` (infinite where the region is empty)."""
    if not region.any():
        return np.full(region.shape, np.inf, np.float32)
    return cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 5)


def interaction_report(interactions: InteractionMatch, provenance: Sequence[dict],
                       absorbed: int) -> dict:
    """Counts per label: interactions, their verdicts and the clicks written."""
    per_label: dict[str, dict] = {}
    for label in sorted({v.label for v in interactions.verdicts}):
        verdicts = [v for v in interactions.verdicts if v.label == label]
        counts = Counter(v.decision for v in verdicts)
        clicks = Counter(p["click_label"] == label for p in provenance if p["label"] == label)
        per_label[label] = {
            "interactions": len(verdicts), "accepted": counts["accepted"],
            "modified": counts["modified"], "deleted": counts["deleted"],
            "clicks": {"positive": clicks[True], "negative": clicks[False]},
        }
    return {"per_defect": per_label, "not_in_export": len(interactions.unmatched),
            "missed_shapes_answered_by_an_interaction": absorbed}
