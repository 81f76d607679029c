"""Write weights/README.md (the model card) from the weights' metadata and evaluation reports.

    python scripts/model_card.py --eval runs/eval-crack runs/eval-spalling runs/eval-rust

Every number comes from a file a command wrote: ``weights/<label>.json`` (training) and
``runs/eval-<defect>/report.json`` (``defectcam evaluate``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def training_rows(weights: Path) -> list[str]:
    rows = ["| defect | stage | images clicked | clicks (+ / -) | crops (fit / held apart) "
            "| crop px | steps x batch | lr | time | device | held apart |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(weights.glob("*.json")):
        if path.name.endswith(".checkpoint.json"):
            continue
        m = json.loads(path.read_text())
        t, cfg = m["training"], m["training"]["config"]
        crops = t["crops"]
        if t.get("stage") == "pixels":
            # a second-stage round: its own time, started from the previous round's model
            val = m["metrics"].get("val_pixels", {})
            stage = f"pixels, from `{Path(t['started_from']).parent.name}`"
            held = (f"pixel IoU {val.get('val_pixel_iou', 0):.3f}, F1 "
                    f"{val.get('val_f1', 0):.3f}")
        else:
            val = m["metrics"].get("val_classification", {})
            stage = "clicks"
            held = f"F1 {val.get('val_f1', 0):.3f} (acc. {val.get('val_accuracy', 0):.3f})"
        rows.append(
            f"| {m['label']} | {stage} | {t['images_clicked']} | {t['positive_clicks']} / "
            f"{t['negative_clicks']} | {crops['fit']} / {crops['holdout']} | {crops['size']} | "
            f"{t['steps']} x {cfg['batch_size']} | {cfg['lr']:g} | {t['seconds'] / 60:.1f} min | "
            f"{t['device']} | {held} |")
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


def _pair(model: dict | None, base: dict | None, key: str, fmt) -> str:
    """``model / baseline`` of one figure ("-" when the round has no such run)."""
    if model is None:
        return "-"
    return fmt(model[key]) + (f" / {fmt(base[key])}" if base else "")


def _split_runs(runs: dict) -> tuple[dict | None, dict | None]:
    """(the model's run, the first baseline run) of a ``rounds.json`` evaluation."""
    model = next((v for n, v in runs.items() if not n.startswith("baseline")), None)
    base = next((v for n, v in runs.items() if n.startswith("baseline")), None)
    return model, base


ROUNDS_HEADING = "## The annotation loop, round by round"


def loop_runs(loops: Sequence[Path]) -> list[tuple[str, dict]]:
    """(name, rounds) of every ``<loop>/<defect>/rounds.json``: the defect, followed by the
    loop folder's name for every folder after the first (another run of the loop)."""
    runs = []
    for i, loop in enumerate(loops):
        for path in sorted(loop.glob("*/rounds.json")):
            name = path.parent.name + (f" ({loop.name})" if i else "")
            runs.append((name, json.loads(path.read_text())))
    return runs


def rounds_section(loops: Sequence[Path], figure: Path | None = None) -> list[str]:
    """The card's last section: what a round is, the curve per defect and loop run (drawn to
    ``figure``, beside the card) and the table of rounds."""
    lines = [f"{ROUNDS_HEADING} (`scripts/annotation_rounds.py`)", "",
             "Round 0: the pixel stage on pseudo-masks of every clicked training photo. "
             "Round k: the round k-1 model proposed on batch k (its saving there is the "
             "team's), the finished batch and the feedback clicks trained round k. "
             "Validation: `defectcam evaluate --split val --limit 60 --other-sources 10 "
             "--max-side 1024`, the learning-free baseline in the same run, each round's model "
             "as the loop wrote it (the map alone at threshold 0.5, no working longer side, no "
             "fit to evidence). Shipped: crack's round 5, spalling's round 1 and rust's round 3 "
             "of the first run, with the settings chosen afterwards (figures above). A name "
             "followed by a folder is another run of the loop (its options: the experiments "
             "above).", ""]
    runs = loop_runs(loops)
    if figure is not None and rounds_figure(runs, figure):
        lines += [f"![validation Eq. 3 and edit-cost saving per round]({figure.name})", ""]
    return lines + [*rounds_rows(runs), ""]


def rounds_figure(runs: Sequence[tuple[str, dict]], path: Path) -> bool:
    """Validation Eq. 3 and edit-cost saving per round and defect, the baseline dashed;
    False when no round has been validated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for name, rounds in runs:
        points = [(int(k), *_split_runs(r["val"])) for k, r in rounds.items() if r.get("val")]
        if points:
            series[name] = sorted(points, key=lambda p: p[0])
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for ax, (defect, points) in zip(axes[0], series.items(), strict=True):
        ks = [p[0] for p in points]
        for key, colour, name in (("eq3", "tab:blue", "Eq. 3"),
                                  ("edit_cost", "tab:orange", "edit-cost")):
            ax.plot(ks, [100 * p[1][key] for p in points], "o-", color=colour, label=name)
            if points[0][2]:
                ax.axhline(100 * points[0][2][key], color=colour, ls="--", lw=1,
                           label=f"{name}, baseline")
        ax.set_title(defect)
        ax.set_xlabel("round")
        ax.set_xticks(ks)
        ax.set_ylabel("saving on validation (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def rounds_rows(runs: Sequence[tuple[str, dict]]) -> list[str]:
    """The annotation loop per defect and round (``scripts/annotation_rounds.py`` writes
    ``<loop>/<defect>/rounds.json``): the round's model on validation beside the
    learning-free baseline, its training time, and the proposing model on its own batch."""
    rows = ["| defect | round | min to the best epoch (epoch), crops/s | held-apart pixel IoU | "
            "val pixel IoU model / baseline | val FP/img | val Eq. 3 | val edit-cost | "
            "batch k by round k-1: Eq. 3 / edit-cost |",
            "|---|---|---|---|---|---|---|---|---|"]
    iou = lambda x: f"{x:.3f}"  # noqa: E731
    for name, rounds in runs:
        for k, r in sorted(rounds.items(), key=lambda kv: int(kv[0])):
            t = r.get("training", {})
            trained = "-"
            if t.get("seconds"):
                trained = (f"{t['seconds'] / 60:.0f} ({t.get('best_epoch')}), "
                           f"{t.get('crops_seen', 0) / t['seconds']:.1f}"
                           + (", in progress" if t.get("in_progress") else ""))
            held = (t.get("held_apart") or {}).get("val_pixel_iou")
            model, base = _split_runs(r.get("val", {}))
            proposer, _ = _split_runs(r.get("batch_saving", {}))
            batch = (f"{pct(proposer['eq3'])} / {pct(proposer['edit_cost'])}" if proposer
                     else "-")
            rows.append(
                f"| {name} | {k} | {trained} | "
                f"{iou(held) if held is not None else '-'} | "
                f"{_pair(model, base, 'pixel_iou', iou)} | "
                f"{_pair(model, base, 'fp_per_image', lambda x: f'{x:.2f}')} | "
                f"{_pair(model, base, 'eq3', pct)} | {_pair(model, base, 'edit_cost', pct)} | "
                f"{batch} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--eval", type=Path, nargs="+", default=None,
                        help="evaluation reports of the shipped weights (default: keep the "
                             "card's sections and only rewrite its table of rounds)")
    parser.add_argument("--intro", type=Path, default=REPO / "docs" / "model_card_intro.md")
    parser.add_argument("--experiments", type=Path,
                        default=REPO / "docs" / "model_card_experiments.md",
                        help="the experiment log (every configuration tried, kept or not)")
    parser.add_argument("--rounds", type=Path, nargs="+", default=None,
                        help="the annotation loop's folder (scripts/annotation_rounds.py "
                             "--work), for its table of rounds; more folders: other runs")
    args = parser.parse_args()
    card = args.weights / "README.md"
    if args.eval is None:
        if args.rounds is None:
            parser.error("pass --eval reports, --rounds, or both")
        # the generated quality sections stay; the experiment log and the rounds are rewritten
        kept = card.read_text().split(ROUNDS_HEADING)[0]
        if args.experiments.is_file():
            kept = kept.split("\n## Experiments", 1)[0].rstrip() + "\n\n" + \
                args.experiments.read_text().rstrip()
        card.write_text(kept.rstrip() + "\n\n"
                        + "\n".join(rounds_section(args.rounds, args.weights / "rounds.png"))
                        + "\n")
        print(f"wrote the experiments and rounds of {card}")
        return
    quality, notes = quality_rows(args.eval)
    text = [args.intro.read_text().rstrip(), "", "## Training (from the weights' metadata)", "",
            *training_rows(args.weights), "",
            "## Proposal quality on the validation splits (`defectcam evaluate`)", "",
            *quality, "", "Runs:", *notes, ""]
    if args.experiments.is_file():
        text += [args.experiments.read_text().rstrip(), ""]
    if args.rounds is not None:
        text += rounds_section(args.rounds, args.weights / "rounds.png")
    card.write_text("\n".join(text) + "\n")
    print(f"wrote {args.weights / 'README.md'}")


if __name__ == "__main__":
    main()
