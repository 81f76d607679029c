"""``defectcam feedback``: CVAT's final annotations + the proposal log -> new clicks, report.

    defectcam feedback --annotations annotations.xml --images images/ --out runs/feedback
    defectcam feedback --task-id 42 --out runs/feedback     # CVAT_URL + credentials from env

Writes ``<out>/feedback-clicks.xml`` (CVAT for images 1.1, ``points`` shapes: one positive
click per accepted, modified or missed defect, one negative click inside each rejected
proposal away from every kept defect) and ``<out>/feedback-report.json``. Then
``defectcam train --resume weights/crack.safetensors --clicks old.xml <out>/feedback-clicks.xml``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from defectcam.config import log_path
from defectcam.data import DEFECTS, NEGATIVE_LABEL
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    read_cvat_xml,
    shape_clicks,
    write_cvat_xml,
)
from defectcam.feedback.log import read_log
from defectcam.feedback.match import (
    ACCEPT_IOU,
    MODIFY_IOU,
    FeedbackMatch,
    kept_region,
    match_feedback,
    negative_click,
)

CVAT_URL_ENV = "CVAT_URL"
CVAT_USER_ENV = "CVAT_USER"
CVAT_PASSWORD_ENV = "CVAT_PASSWORD"
CVAT_TOKEN_ENV = "CVAT_ACCESS_TOKEN"
EXPORT_FORMAT = "CVAT for images 1.1"
CLICKS_FILE = "feedback-clicks.xml"
REPORT_FILE = "feedback-report.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "feedback", help="CVAT's final annotations + the proposal log -> new clicks and a report",
        description="Decide for each logged proposal whether the annotator accepted, modified "
                    "or rejected it, find the defects drawn by hand (missed), and write new "
                    "clicks for `defectcam train --resume`.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--annotations", type=Path,
                       help='a "CVAT for images 1.1" export (annotations.xml); this or '
                            '--task-id is required')
    where.add_argument("--task-id", type=int,
                       help=f"pull this task from CVAT with cvat-sdk; server and credentials "
                            f"come from {CVAT_URL_ENV} and {CVAT_TOKEN_ENV} (or "
                            f"{CVAT_USER_ENV} + {CVAT_PASSWORD_ENV}), never the command "
                            f"line; this or --annotations is required")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of the export's images (matches requests by content hash; "
                        "with --task-id: where the pulled images go; default: none, or "
                        "OUT/cvat-task-ID with --task-id)")
    p.add_argument("--log", type=Path, default=None,
                   help="proposal log (default: $DEFECTCAM_LOG_DB or runs/defectcam-log.sqlite)")
    p.add_argument("--out", type=Path, required=True, help="folder for the clicks and report")
    p.add_argument("--since", default=None,
                   help="only requests logged at or after this ISO time (e.g. 2025-01-31; "
                        "default: all)")
    p.add_argument("--accept-iou", type=float, default=ACCEPT_IOU,
                   help="IoU with the final shape from which a proposal counts as accepted")
    p.add_argument("--modify-iou", type=float, default=MODIFY_IOU,
                   help="IoU from which a proposal counts as modified (below: rejected)")
    p.add_argument("--min-distance", type=float, default=64.0,
                   help="negative clicks at least this far (px) from any kept defect")
    p.add_argument("--crop-size", type=int, default=None,
                   help="training crop size: negatives only where their crops hold no kept "
                        "defect, as simulate --crop-size (default: no such check)")
    p.add_argument("--negative-label", default=NEGATIVE_LABEL,
                   help="label of the negative clicks written")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- CVAT pull


def cvat_connection(environ: dict | None = None) -> tuple[str, dict]:
    """(server URL, keyword arguments of ``cvat_sdk.make_client``) from the environment."""
    env = os.environ if environ is None else environ
    url = env.get(CVAT_URL_ENV, "").strip()
    if not url:
        raise ValueError(f"--task-id needs the CVAT server in ${CVAT_URL_ENV} "
                         "(e.g. http://localhost:8080)")
    token = env.get(CVAT_TOKEN_ENV, "").strip()
    if token:
        return url, {"access_token": token}
    user, password = env.get(CVAT_USER_ENV, ""), env.get(CVAT_PASSWORD_ENV, "")
    if not user or not password:
        raise ValueError(f"--task-id needs ${CVAT_TOKEN_ENV}, or ${CVAT_USER_ENV} and "
                         f"${CVAT_PASSWORD_ENV} (credentials are never taken from arguments)")
    return url, {"credentials": (user, password)}


def _safe_extract(archive: Path, dest: Path) -> None:
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if not (dest / member).resolve().is_relative_to(root):
                raise ValueError(f"{archive}: unsafe path {member!r} in the export")
        zf.extractall(dest)


def pull_task(task_id: int, dest: Path, environ: dict | None = None) -> tuple[Path, Path]:
    """Export task ``task_id`` as "CVAT for images 1.1" with images into ``dest``;
    returns (annotations.xml, images folder)."""
    url, auth = cvat_connection(environ)
    from cvat_sdk import make_client  # imported here: only this path needs the server
    from cvat_sdk.core.proxies.types import Location

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"task-{task_id}.zip"
    with make_client(url, **auth) as client:
        task = client.tasks.retrieve(task_id)
        task.export_dataset(EXPORT_FORMAT, archive, include_images=True,
                            location=Location.LOCAL)
    _safe_extract(archive, dest)
    xml = next(iter(sorted(dest.rglob("annotations.xml"))), None)
    if xml is None:
        raise FileNotFoundError(f"{archive}: no annotations.xml in the export")
    images = xml.parent / "images"
    return xml, images if images.is_dir() else xml.parent


# --------------------------------------------------------------------------- clicks


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


# --------------------------------------------------------------------------- report


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def feedback_report(match: FeedbackMatch, provenance: list[dict]) -> dict:
    """Counts and rates per defect; edit amounts of modified proposals."""
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
        clicks = Counter(p["decision"] for p in provenance
                         if p["label"] == label and p["click"] is not None)
        if not total and not missed:
            continue
        per_defect[label] = {
            "proposals": total, "accepted": counts["accepted"], "modified": counts["modified"],
            "rejected": counts["rejected"], "missed": missed,
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
            "clicks": {"positive": clicks["accepted"] + clicks["modified"] + clicks["missed"],
                       "negative": clicks["rejected"],
                       "rejected_without_negative": counts["rejected"] - clicks["rejected"]},
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
             "iou": round(d.iou, 4), "shape_source": d.shape_source,
             "proposal_area": d.proposal_area, "final_area": d.final_area,
             "symmetric_difference": d.symmetric_difference}
            for d in match.decisions
        ],
        "clicks": provenance,
    }


def run(args: argparse.Namespace) -> int:
    log = args.log or log_path()
    if log is None:
        raise ValueError("no proposal log: pass --log (DEFECTCAM_LOG_DB is 'off')")
    requests = read_log(log, since=args.since)
    if args.task_id is not None:
        xml, images = pull_task(args.task_id, args.images or args.out / f"cvat-task-{args.task_id}")
    else:
        xml, images = args.annotations, args.images
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} does not exist")
    annotations = read_cvat_xml(xml)
    match = match_feedback(annotations, requests, images, DEFECTS,
                           accept_iou=args.accept_iou, modify_iou=args.modify_iou)
    clicks, provenance = feedback_clicks(match, args.min_distance, args.crop_size,
                                         args.negative_label)
    args.out.mkdir(parents=True, exist_ok=True)
    clicks_path = write_cvat_xml(clicks, args.out / CLICKS_FILE)
    report = feedback_report(match, provenance)
    report["inputs"] = {"annotations": str(xml), "images": str(images) if images else None,
                        "log": str(log)}
    report_path = args.out / REPORT_FILE
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    for label, row in report["per_defect"].items():
        print(f"{label}: {row['proposals']} proposals: {row['accepted']} accepted, "
              f"{row['modified']} modified, {row['rejected']} rejected; {row['missed']} missed; "
              f"clicks +{row['clicks']['positive']} -{row['clicks']['negative']}")
    print(f"{clicks_path}  {report_path}")
    if report["requests"]["not_in_export"]:
        print(f"note: {report['requests']['not_in_export']} logged request(s) match no image "
              "of this export")
    return 0
