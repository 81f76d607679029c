"""``defectcam feedback``: CVAT's final annotations + the proposal log -> new clicks, report.

    defectcam feedback --annotations annotations.xml --images images/ --out runs/feedback
    defectcam feedback --task-id 42 --out runs/feedback     # CVAT_URL + credentials from env

Writes ``<out>/feedback-clicks.xml`` (CVAT for images 1.1, ``points`` shapes: what every
decision teaches, ``defectcam.feedback.clicks``; each image carries its content hash) and
``<out>/feedback-report.json``; kept interactions of the interactor teach too
(``defectcam.feedback.interactions``). Then ``defectcam train --resume
weights/crack.safetensors --clicks old.xml <out>/feedback-clicks.xml --images data/
export/images``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from defectcam.config import log_path
from defectcam.data import DEFECTS, NEGATIVE_LABEL
from defectcam.data.cvat_xml import CvatImage, read_cvat_xml, write_cvat_xml
from defectcam.feedback.cvat_client import (
    CVAT_PASSWORD_ENV,
    CVAT_TOKEN_ENV,
    CVAT_URL_ENV,
    CVAT_USER_ENV,
    pull_task,
)
from defectcam.feedback.match import ACCEPT_IOU, MODIFY_IOU, match_feedback
from defectcam.serving.interaction_log import read_log

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
    p.add_argument("--images", type=Path, nargs="+", default=None,
                   help="folder(s) of the export's images, names relative to them (requests "
                        "are recognised by the image file's content hash; required with "
                        "--annotations; with --task-id: where the pulled task goes, default "
                        "OUT/cvat-task-ID)")
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


def _no_match_error(images: list[Path] | None, requests: int, images_in_export: int) -> str:
    where = (f"none of the {images_in_export} images under --images "
             f"{' '.join(str(p) for p in images)} has the content of one"
             if images else "pass --images with the export's image folder: CVAT sends no file "
                            "name, so requests are recognised by the image file's content")
    return (f"none of the {requests} logged request(s) matches an image of this export; "
            f"{where} (is --log the function's log for this task?)")


def run(args: argparse.Namespace) -> int:
    from defectcam.feedback.clicks import feedback_clicks  # loads torch: not for --help
    from defectcam.feedback.interactions import (
        absorb_missed,
        interaction_clicks,
        interaction_report,
        judge_interactions,
    )
    from defectcam.feedback.report import feedback_report

    log = args.log or log_path()
    if log is None:
        raise ValueError("no proposal log: pass --log (DEFECTCAM_LOG_DB is 'off')")
    requests = read_log(log, since=args.since)
    if not requests:
        raise ValueError(f"{log}: no logged request{' since ' + args.since if args.since else ''}"
                         "; pass the function's log with --log")
    if args.task_id is not None:
        dest = args.images[0] if args.images else args.out / f"cvat-task-{args.task_id}"
        xml, folder = pull_task(args.task_id, dest)
        images = [folder]
    else:
        xml, images = args.annotations, args.images
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} does not exist")
    annotations = read_cvat_xml(xml)
    detector = [r for r in requests if not r.is_interaction]
    match = match_feedback(annotations, detector, images, DEFECTS,
                           accept_iou=args.accept_iou, modify_iou=args.modify_iou)
    if not any(v.request is not None for v in match.images) and not any(
            r.is_interaction for r in requests):
        raise ValueError(_no_match_error(images, len(requests), len(annotations.images)))
    interactions = judge_interactions(annotations, [r for r in requests if r.is_interaction],
                                      images, args.accept_iou, args.modify_iou)
    absorbed = absorb_missed(match, interactions)
    clicks, origins = feedback_clicks(match, args.min_distance, args.crop_size,
                                      args.negative_label)
    extra, extra_origins = interaction_clicks(interactions, match, args.min_distance,
                                              args.negative_label)
    _add_clicks(clicks, extra, annotations)
    args.out.mkdir(parents=True, exist_ok=True)
    clicks_path = write_cvat_xml(clicks, args.out / CLICKS_FILE)
    report = feedback_report(match, origins)
    report["interactions"] = interaction_report(interactions, extra_origins, absorbed)
    report["inputs"] = {"annotations": str(xml),
                        "images": [str(p) for p in images] if images else None,
                        "log": str(log)}
    report_path = args.out / REPORT_FILE
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    for label, row in report["per_defect"].items():
        taught = row["clicks"]["by_decision"]
        kinds = "; ".join(f"{sign}{n} {kind}" for sign, key in (("+", "positive"),
                                                                 ("-", "negative"))
                          for kind, n in taught[key].items())
        print(f"{label}: {row['proposals']} proposals: {row['accepted']} accepted, "
              f"{row['modified']} modified, {row['relabelled']} relabelled, "
              f"{row['rejected']} rejected; {row['missed']} missed; clicks "
              f"+{row['clicks']['positive']} -{row['clicks']['negative']}"
              f"{' (' + kinds + ')' if kinds else ''}")
    print(f"{clicks_path}  {report_path}")
    for label, row in report["interactions"]["per_defect"].items():
        print(f"{label}: {row['interactions']} interactions: {row['accepted']} accepted, "
              f"{row['modified']} modified, {row['deleted']} deleted; clicks "
              f"+{row['clicks']['positive']} -{row['clicks']['negative']}")
    if report["requests"]["not_in_export"]:
        print(f"note: {report['requests']['not_in_export']} logged request(s) match no image "
              "of this export")
    return 0


def _add_clicks(clicks, extra: dict, annotations) -> None:
    """Append the interactions' clicks (per image name) to the detector's click export."""
    by_name = {image.name: image for image in clicks.images}
    for source in annotations.images:
        if source.name not in extra:
            continue
        if source.name not in by_name:
            by_name[source.name] = CvatImage(source.id, source.name, source.width,
                                             source.height, [])
            clicks.images.append(by_name[source.name])
        by_name[source.name].shapes.extend(extra[source.name])
    clicks.images.sort(key=lambda image: image.id)
