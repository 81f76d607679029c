"""Write weights/README.md (the model card) from the weights' metadata and evaluation reports.

    python scripts/model_card.py --eval runs/eval-crack runs/eval-spalling runs/eval-rust

Every number comes from a file a command wrote: ``weights/<label>.json`` (training) and
``runs/eval-<defect>/report.json`` (``defectcam evaluate``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def training_rows(weights: Path) -> list[str]:
    rows = ["| defect | images clicked | clicks (+ / -) | crops (fit / held apart) | crop px "
            "| steps x batch | lr | time | device | held-apart F1 (acc.) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(weights.glob("*.json")):
        if path.name.endswith(".checkpoint.json"):
            continue
        m = json.loads(path.read_text())
        t, cfg = m["training"], m["training"]["config"]
        val = m["metrics"].get("val_classification", {})
        crops = t["crops"]
        rows.append(
            f"| {m['label']} | {t['images_clicked']} | {t['positive_clicks']} / "
            f"{t['negative_clicks']} | {crops['fit']} / {crops['holdout']} | {crops['size']} | "
            f"{t['steps']} x {cfg['batch_size']} | {cfg['lr']:g} | {t['seconds'] / 60:.1f} min | "
            f"{t['device']} | {val.get('val_f1', 0):.3f} ({val.get('val_accuracy', 0):.3f}) |")
    return rows


def _false_positives(run: dict, label: str) -> str:
    """FP per image on the defect's own photos, and on the other defects' photos when the
    evaluation included them (``--other-sources``)."""
    from defectcam.data.sources import DEFECT_SOURCES

    by_source = run.get("false_positives_by_source", {}).get(label, {})
    own = [v for k, v in by_source.items() if k in DEFECT_SOURCES.get(label, ())]
    other = [v for k, v in by_source.items() if k not in DEFECT_SOURCES.get(label, ())]

    def rate(entries: list[dict]) -> str:
        n = sum(e["images"] for e in entries)
        return f"{sum(e['false_positives'] for e in entries) / n:.2f}" if n else "-"

    return f"{rate(own)} | {rate(other)}"


def quality_rows(reports: list[Path]) -> tuple[list[str], list[str]]:
    rows = ["| defect | setting | images (per source) | pixel IoU | tolerant IoU | pixel F1 "
            "| instance recall | FP / own photo | FP / other defect's photo | Eq. 3 saving "
            "| edit-cost saving | s / image |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for folder in reports:
        report = json.loads((folder / "report.json").read_text())
        cfg = report["config"]
        notes.append(f"- `{folder.name}`: {cfg.get('data_description', '')}; scaling: "
                     f"{cfg.get('scaling', 'none')}; created {report['created']}")
        for run in report["runs"]:
            for label, d in run["summary"]["per_defect"].items():
                px = d["pixels"]
                by_source = run.get("false_positives_by_source", {}).get(label, {})
                counts = "+".join(str(v["images"]) for v in by_source.values()) or d["n_images"]
                rows.append(
                    f"| {label} | {run['name']} | {counts} | {px['iou']:.3f} | "
                    f"{px.get('iou_tolerant', px['iou']):.3f} | "
                    f"{px['f1']:.3f} | {pct(d['instance_recall'])} | "
                    f"{_false_positives(run, label)} | {pct(d['time']['eq3']['saving'])} | "
                    f"{pct(d['time']['edit_cost']['saving'])} | "
                    f"{run['seconds_per_image'].get(label, 0):.2f} |")
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--eval", type=Path, nargs="+", required=True)
    parser.add_argument("--intro", type=Path, default=REPO / "docs" / "model_card_intro.md")
    parser.add_argument("--experiments", type=Path,
                        default=REPO / "docs" / "model_card_experiments.md",
                        help="the experiment log (every configuration tried, kept or not)")
    args = parser.parse_args()
    quality, notes = quality_rows(args.eval)
    text = [args.intro.read_text().rstrip(), "", "## Training (from the weights' metadata)", "",
            *training_rows(args.weights), "",
            "## Proposal quality on the validation splits (`defectcam evaluate`)", "",
            *quality, "", "Runs:", *notes, ""]
    if args.experiments.is_file():
        text += [args.experiments.read_text().rstrip(), ""]
    (args.weights / "README.md").write_text("\n".join(text) + "\n")
    print(f"wrote {args.weights / 'README.md'}")


if __name__ == "__main__":
    main()
