"""The report of a feedback round: per defect, how many proposals were accepted, modified,
rejected or missed, how much the modified ones were edited, and the clicks written."""

from __future__ import annotations

import json
import statistics
from collections import Counter

from defectcam.data import DEFECTS
from defectcam.feedback.clicks import ClickOrigin
from defectcam.feedback.match import FeedbackMatch


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def click_counts(origins: list[ClickOrigin], label: str) -> dict:
    """How many clicks each kind of decision gave ``label``, as positives and as negatives
    (a relabel's click is a positive for the new label and a negative for the old one)."""
    out: dict = {"positive": Counter(), "negative": Counter()}
    for origin in origins:
        if origin.click is None:
            continue
        for taught, sign in origin.teaches:
            if taught == label:
                out["positive" if sign > 0 else "negative"][origin.decision] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in out.items()}


def feedback_report(match: FeedbackMatch, origins: list[ClickOrigin]) -> dict:
    """Counts and rates per defect; edit amounts of modified proposals; clicks per label and
    the kind of decision that gave them."""
    labels = list(dict.fromkeys([*DEFECTS, *(d.label for d in match.decisions),
                                 *(m.label for m in match.missed)]))
    per_defect = {}
    for label in labels:
        ds = [d for d in match.decisions if d.label == label]
        counts = Counter(d.decision for d in ds)
        missed = sum(m.label == label for m in match.missed)
        total = len(ds)
        kept = counts["accepted"] + counts["modified"]
        edits = [d for d in ds if d.decision == "modified"]
        taught = click_counts(origins, label)
        negatives_of_rejections = {(o.request_id, o.proposal) for o in origins
                                   if o.label == label and o.click is not None
                                   and o.decision.startswith("rejected")}
        if not total and not missed and not any(taught.values()):
            continue
        per_defect[label] = {
            "proposals": total, "accepted": counts["accepted"], "modified": counts["modified"],
            "relabelled": counts["relabelled"], "rejected": counts["rejected"], "missed": missed,
            "accepted_rate": _rate(counts["accepted"], total),
            "modified_rate": _rate(counts["modified"], total),
            "rejected_rate": _rate(counts["rejected"], total),
            "kept_rate": _rate(kept, total),
            "found_rate": _rate(kept, kept + missed),
            "edit": {
                "mean_1_minus_iou": round(statistics.fmean(d.edit_amount for d in edits), 4)
                if edits else None,
                "median_1_minus_iou": round(statistics.median(d.edit_amount for d in edits), 4)
                if edits else None,
                "mean_symmetric_difference_px": round(
                    statistics.fmean(d.symmetric_difference for d in edits), 1) if edits else None,
            },
            "clicks": {"positive": sum(taught["positive"].values()),
                       "negative": sum(taught["negative"].values()),
                       "by_decision": taught,
                       "rejected_without_negative":
                           counts["rejected"] - len(negatives_of_rejections)},
        }
    judged = [v for v in match.images if v.request is not None]
    return {
        "rules": {"accept_iou": match.accept_iou, "modify_iou": match.modify_iou,
                  "matching": "greedy one-to-one by pixel IoU per image and label"},
        "images": {"in_export": len(match.images), "with_logged_request": len(judged),
                   "matched_by": dict(Counter(v.matched_by for v in judged))},
        "requests": {"judged": len(judged), "superseded": len(match.superseded_requests),
                     "not_in_export": len(match.unmatched_requests)},
        "model_versions": sorted({json.dumps(v.request.model_version, sort_keys=True)
                                  for v in judged}),
        "unlogged_auto_shapes": sum(v.unlogged_auto for v in match.images),
        "source_disagreements": dict(match.source_disagreements()),
        "per_defect": per_defect,
        "proposals": [
            {"image": d.image, "request_id": d.request_id, "proposal": d.index,
             "label": d.label, "confidence": d.confidence, "decision": d.decision,
             "new_label": d.new_label, "iou": round(d.iou, 4), "shape_source": d.shape_source,
             "proposal_area": d.proposal_area, "final_area": d.final_area,
             "symmetric_difference": d.symmetric_difference}
            for d in match.decisions
        ],
        "clicks": [o.to_json() for o in origins],
    }
