"""``report.json``, ``report.md`` and the overlay gallery of one evaluation.

Overlay colours (as the paper's Fig. 2: truth and proposals in two colours): truth green,
proposals magenta, each with its outline drawn on top; pixels in both are tinted white so that
agreement stands out from either error.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from defectcam.evaluation.baselines import BASELINE_RULES
from defectcam.evaluation.metrics import DefectSummary, ImageMatch, summarize
from defectcam.evaluation.run import EvaluationRun, RunResult, load_item, select_gallery
from defectcam.evaluation.timesave import (
    AnnotatorModel,
    GroupThresholds,
    describe_assumptions,
    groups_from_ious,
)

FORMAT = "defectcam-evaluation"
FORMAT_VERSION = 1
TRUTH_RGB = (0, 200, 0)
PROPOSAL_RGB = (255, 0, 255)
BOTH_RGB = (255, 255, 255)

PIXEL_RULE = ("pixel IoU / precision / recall / F1: union of all proposals of a defect against "
              "its truth mask, no tolerance, counts summed over images (micro average)")
RECALL_RULE = ("instance recall = found / truth instances, where an instance is found when "
               "the proposals touching it cover at least the found share of it (within the "
               "tolerance)")
FP_RULE = "false positives per image = proposals touching no truth pixel / images"
TIMING_RULE = ("seconds per image: the proposer's wall time for that defect (tiling, CAM / "
               "AdvCAM, stitching, post-processing), image decoding and metrics excluded")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _defect_dict(summary: DefectSummary, matches: list[ImageMatch],
                 thresholds: GroupThresholds) -> dict:
    out = summary.to_dict()
    out["false_positives_per_image"] = (summary.n_false_positives / summary.n_images
                                        if summary.n_images else 0.0)
    # The grouping "by IoU" read literally (no boundary tolerance), next to the
    # tolerant default that the Eq. 3 numbers above use.
    plain = groups_from_ious((inst.iou for m in matches for inst in m.instances),
                             GroupThresholds(thresholds.g95, thresholds.g75, thresholds.g50,
                                             tolerant=False))
    out["eq3_plain_iou"] = plain.to_dict()
    return out


def summary_dict(matches: list[ImageMatch], thresholds: GroupThresholds,
                 annotator: AnnotatorModel) -> dict:
    """``EvaluationSummary.to_dict`` plus FP per image and the plain-IoU Eq. 3 groups."""
    summary = summarize(matches, thresholds, annotator)
    out = summary.to_dict()
    out["per_defect"] = {
        label: _defect_dict(s, [m for m in matches if m.label == label], thresholds)
        for label, s in summary.per_defect.items()}
    out["overall"] = _defect_dict(summary.overall, matches, thresholds)
    return out


def _run_dict(run: RunResult, thresholds: GroupThresholds, annotator: AnnotatorModel,
              main: bool) -> dict:
    labels = sorted({r.match.label for r in run.records})
    images = []
    for r in run.records:
        m = r.match
        entry = m.to_dict() if main else {
            "label": m.label, "image_id": m.image_id, "height": m.height, "width": m.width,
            "pixels": m.pixels.to_dict(), "n_instances": m.n_instances, "n_found": m.n_found,
            "n_proposals": m.n_proposals, "n_false_positives": m.n_false_positives}
        entry.pop("rule", None)  # printed once under "rules"
        entry.update(source=r.source, seconds=r.seconds, scale=r.scale,
                     n_false_positives=m.n_false_positives)
        images.append(entry)
    s = run.setting
    return {
        "name": s.name, "kind": s.kind, "description": s.describe(),
        "iterations": s.iterations, "screen": s.screen, "cam_threshold": s.cam_threshold,
        "seconds_per_image": {"all": run.seconds_per_image(),
                              **{lab: run.seconds_per_image(lab) for lab in labels}},
        "megapixels_per_image": {"all": run.megapixels_per_image(),
                                 **{lab: run.megapixels_per_image(lab) for lab in labels}},
        "summary": summary_dict([r.match for r in run.records], thresholds, annotator),
        "false_positives_by_source": _false_positives_by_source(run),
        "images": images,
    }


def _false_positives_by_source(run: RunResult) -> dict[str, dict[str, dict]]:
    """Per defect and source: images and false positives per image. With ``--other-sources``
    this separates the defect's own photos from the other defects' (empty-truth) photos."""
    out: dict[str, dict[str, dict]] = {}
    for r in run.records:
        entry = out.setdefault(r.match.label, {}).setdefault(
            r.source, {"images": 0, "false_positives": 0})
        entry["images"] += 1
        entry["false_positives"] += r.match.n_false_positives
    for per_source in out.values():
        for entry in per_source.values():
            entry["per_image"] = entry["false_positives"] / entry["images"]
    return out


def _sweep_dict(evaluation: EvaluationRun, thresholds: GroupThresholds,
                annotator: AnnotatorModel, default_threshold: float | None) -> dict | None:
    sweep = evaluation.sweep
    if sweep is None:
        return None
    per_defect = {}
    for label, points in sorted(sweep.raw.items()):
        rows = []
        for k, point in enumerate(points):
            pipeline = summary_dict(sweep.pipeline[label][k], thresholds, annotator)["overall"]
            rows.append({"threshold": point.threshold, "raw": point.pixels.to_dict(),
                         "pipeline": pipeline})
        best_raw = max(sorted(rows, key=lambda r: r["threshold"]),
                       key=lambda r: r["raw"]["f1"])
        best_pipe = max(sorted(rows, key=lambda r: r["threshold"]),
                        key=lambda r: r["pipeline"]["pixels"]["f1"])
        per_defect[label] = {"points": rows, "best_raw_f1_threshold": best_raw["threshold"],
                             "best_pipeline_f1_threshold": best_pipe["threshold"]}
    return {"setting": evaluation.main.setting.name, "default_threshold": default_threshold,
            "raw_rule": "map > t, no closing or minimum area (threshold_sweep)",
            "pipeline_rule": "map > t, then closing, components and minimum area as the "
                             "proposer does (DefectProposer.map_to_proposals), then the same "
                             "metrics as the runs",
            "thresholds": list(sweep.thresholds), "per_defect": per_defect}


def build_report(evaluation: EvaluationRun, config: dict, thresholds: GroupThresholds,
                 annotator: AnnotatorModel, default_threshold: float | None = None,
                 gallery: list[dict] | None = None) -> dict:
    """The JSON report (see the module docstring of ``commands/evaluate.py``)."""
    main = evaluation.main.setting.name
    rules = {
        "pixels": PIXEL_RULE,
        "instances": evaluation.rule.describe(),
        "instance_recall": RECALL_RULE + f" (found share {evaluation.rule.found_coverage:g})",
        "false_positives_per_image": FP_RULE,
        "eq3_groups": thresholds.describe(),
        "time_saving": describe_assumptions(thresholds, annotator),
        "timing": TIMING_RULE,
        "baselines": BASELINE_RULES,
    }
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config, "rules": rules, "main": main,
        "runs": [_run_dict(r, thresholds, annotator, r.setting.name == main)
                 for r in evaluation.runs],
        "sweep": _sweep_dict(evaluation, thresholds, annotator, default_threshold),
        "gallery": gallery or [],
        "failures": list(evaluation.failures),
    }


def write_json(report: dict, path: Path) -> Path:
    path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    return path


# --------------------------------------------------------------------------- gallery


def render_overlay(image: np.ndarray, truth: np.ndarray, proposals: np.ndarray,
                   alpha: float = 0.45) -> np.ndarray:
    """RGB overlay of the image's size: truth green, proposals magenta, both white (fills),
    truth and proposal outlines on top."""
    out = image.astype(np.float32)
    fills = ((truth & ~proposals, TRUTH_RGB), (proposals & ~truth, PROPOSAL_RGB),
             (truth & proposals, BOTH_RGB))
    for mask, colour in fills:
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    for mask, colour in ((truth, TRUTH_RGB), (proposals, PROPOSAL_RGB)):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[-80:]


def write_gallery(evaluation: EvaluationRun, out_dir: Path, per_side: int,
                  max_side: int | None = None, gallery_max_side: int | None = None
                  ) -> list[dict]:
    """Overlays of the best and worst images of the main setting per defect.

    Images are reloaded at the evaluated size (``max_side``); ``gallery_max_side`` shrinks
    only the saved PNG (None: the evaluated size)."""
    entries: list[dict] = []
    items = {(i.label, i.image_id): i for i in evaluation.items}
    chosen = select_gallery(evaluation.main, per_side)
    if not chosen:
        return entries
    out_dir.mkdir(parents=True, exist_ok=True)
    for side, rank, record in chosen:
        m = record.match
        loaded = load_item(items[(m.label, m.image_id)], max_side)
        overlay = render_overlay(loaded.image, loaded.truth, record.union())
        height, width = overlay.shape[:2]
        if gallery_max_side and max(height, width) > gallery_max_side:
            s = gallery_max_side / max(height, width)
            overlay = cv2.resize(overlay, (round(width * s), round(height * s)),
                                 interpolation=cv2.INTER_AREA)
        stem = _safe(Path(m.image_id).stem)
        name = f"{m.label}-{side}{rank + 1}-{stem}.png"
        cv2.imwrite(str(out_dir / name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        entries.append({"file": f"{out_dir.name}/{name}", "label": m.label,
                        "image_id": m.image_id, "side": side, "rank": rank + 1,
                        "pixel_iou": m.pixels.iou, "f1": m.pixels.f1,
                        "n_instances": m.n_instances, "n_found": m.n_found,
                        "n_false_positives": m.n_false_positives})
    return entries


# --------------------------------------------------------------------------- markdown


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _eq3(d: dict) -> str:
    e = d["time"]["eq3"]
    return f"{_pct(e['saving'])} ({e['G95']}/{e['G75']}/{e['G50']}/{e['none']})"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _defect_rows(run: dict) -> list[tuple[str, dict]]:
    per = run["summary"]["per_defect"]
    rows = list(per.items())
    if len(per) > 1:
        rows.append(("all", run["summary"]["overall"]))
    return rows


def render_markdown(report: dict) -> str:
    cfg, rules = report["config"], report["rules"]
    runs = {r["name"]: r for r in report["runs"]}
    main = runs[report["main"]]
    lines = [f"# defectcam evaluation ({report['created']})", ""]
    options = " ".join(f"{k}={v}" for k, v in cfg.get("options", {}).items() if v not in
                       (None, False, [])) if cfg.get("options") else ""
    lines += [f"- options: `{options}`",
              f"- data: {cfg.get('data_description', '')}",
              "- images per defect: " + ", ".join(
                  f"{k} {v}" for k, v in cfg.get("images_per_defect", {}).items()),
              f"- weights: {cfg.get('weights_description', 'none')}",
              f"- device: {cfg.get('device', '?')}",
              f"- scaling: {cfg.get('scaling', 'none')}"]
    if report["failures"]:
        lines.append(f"- skipped {len(report['failures'])} unreadable images (see JSON)")
    lines += ["", "## Rules and assumptions", ""]
    lines += [f"- {rules['pixels']}.", f"- {rules['instances']}.",
              f"- {rules['instance_recall']}.", f"- {rules['false_positives_per_image']}.",
              f"- {rules['timing']}."]
    lines += [f"- {line}" for line in rules["time_saving"].splitlines()]
    lines.append("- Eq. 3 columns show saving (G95/G75/G50/none); the 'plain IoU' column "
                 "groups by IoU without boundary tolerance.")
    lines += ["", f"## Main setting: {main['name']} ({main['description']})", ""]
    header = ["defect", "images", "pixel IoU", "precision", "recall", "F1", "instances",
              "found", "instance recall", "FP / image", "Eq. 3 saving", "Eq. 3 (plain IoU)",
              "edit-cost saving", "s / image"]
    rows = []
    for label, d in _defect_rows(main):
        p = d["pixels"]
        sec = main["seconds_per_image"].get(label, main["seconds_per_image"]["all"])
        rows.append([label, d["n_images"], f"{p['iou']:.3f}", f"{p['precision']:.3f}",
                     f"{p['recall']:.3f}", f"{p['f1']:.3f}", d["n_instances"], d["n_found"],
                     _pct(d["instance_recall"]), f"{d['false_positives_per_image']:.2f}",
                     _eq3(d), _pct(d["eq3_plain_iou"]["saving"]),
                     _pct(d["time"]["edit_cost"]["saving"]), f"{sec:.3g}"])
    lines += _table(header, rows)
    if len(runs) > 1:
        lines += ["", "## Comparison: ablation and baselines", "",
                  "Each row is one pass over the same images with the same metrics.", ""]
        header = ["setting", "defect", "pixel IoU", "tolerant IoU", "F1", "instance recall",
                  "FP / image", "Eq. 3 saving", "edit-cost saving", "s / image", "MP / image"]
        rows = []
        for run in report["runs"]:
            for label, d in _defect_rows(run):
                rows.append([run["name"], label, f"{d['pixels']['iou']:.3f}",
                             f"{d['pixels'].get('iou_tolerant', d['pixels']['iou']):.3f}",
                             f"{d['pixels']['f1']:.3f}", _pct(d["instance_recall"]),
                             f"{d['false_positives_per_image']:.2f}",
                             _pct(d["time"]["eq3"]["saving"]),
                             _pct(d["time"]["edit_cost"]["saving"]),
                             f"{run['seconds_per_image'].get(label, 0.0):.3g}",
                             f"{run['megapixels_per_image'].get(label, 0.0):.2f}"])
        lines += _table(header, rows)
        lines += ["", "Settings: " + "; ".join(f"`{r['name']}` = {r['description']}"
                                                 for r in report["runs"]) + "."]
        if "baseline" in runs:
            lines.append("Baselines: " + "; ".join(f"{k}: {v}" for k, v in
                                                   rules["baselines"].items()) + ".")
    sweep = report.get("sweep")
    if sweep:
        default = sweep["default_threshold"]
        lines += ["", f"## CAM threshold sweep ({sweep['setting']} maps, no re-run)", "",
                  f"raw = {sweep['raw_rule']}; pipeline = {sweep['pipeline_rule']}. "
                  f"The proposer's threshold is {default}.", ""]
        for label, data in sweep["per_defect"].items():
            lines += [f"### {label}", "",
                      f"best raw F1 at t = {data['best_raw_f1_threshold']:g}, best pipeline "
                      f"F1 at t = {data['best_pipeline_f1_threshold']:g}", ""]
            header = ["t", "raw IoU", "raw P", "raw R", "raw F1", "pipeline IoU",
                      "pipeline F1", "instance recall", "FP / image", "Eq. 3 saving"]
            rows = []
            for pt in data["points"]:
                raw, pipe = pt["raw"], pt["pipeline"]
                t = f"{pt['threshold']:.2f}"
                if default is not None and abs(pt["threshold"] - default) < 1e-9:
                    t = f"**{t} (used)**"
                rows.append([t, f"{raw['iou']:.3f}", f"{raw['precision']:.3f}",
                             f"{raw['recall']:.3f}", f"{raw['f1']:.3f}",
                             f"{pipe['pixels']['iou']:.3f}", f"{pipe['pixels']['f1']:.3f}",
                             _pct(pipe["instance_recall"]),
                             f"{pipe['false_positives_per_image']:.2f}",
                             _pct(pipe["time"]["eq3"]["saving"])])
            lines += _table(header, rows) + [""]
    if report["gallery"]:
        lines += ["", "## Gallery", "",
                  "Truth green, proposals magenta (outlines and fills), pixels in both "
                  "tinted white; main setting; best and worst by pixel IoU among images "
                  "holding the defect.", ""]
        for g in report["gallery"]:
            lines += [f"**{g['label']} {g['side']} {g['rank']}**: `{g['image_id']}`, pixel "
                      f"IoU {g['pixel_iou']:.3f}, found {g['n_found']}/{g['n_instances']}, "
                      f"{g['n_false_positives']} FP", "", f"![{g['image_id']}]({g['file']})", ""]
    return "\n".join(lines).rstrip() + "\n"
