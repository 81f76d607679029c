"""The quality price of each speed change: ``defectcam evaluate`` with and without it.

Runs the evaluation (validation split, AdvCAM T = 2) once per defect and setting, the settings
cumulative in the order ``bench_request.py`` adds them (today's engine, bf16, balanced tiles,
working scale 0.5 for rust and spalling, screening), and writes a table per defect to
BENCHMARKS.md: pixel IoU, instance recall, false positives per image, Eq. 3 time saving,
edit-cost saving and seconds per image, each change against the setting it builds on. A
change that loses more than 1 point (of 100) of pixel IoU or of Eq. 3 time saving on a defect
is marked **not a default** for it; the next setting then builds on the one before the change
for that defect.

    python benchmarks/quality_price.py                # 100 crack / spalling, 20 rust images
    python benchmarks/quality_price.py --defect rust --rust-limit 50 --note "quiet machine"
    python benchmarks/quality_price.py --limit 2 --rust-limit 1 --out /tmp/qp --append -

Each evaluation writes ``OUT/<defect>-n<images>/<setting>/report.json`` and is skipped when
that file exists (``--force`` reruns it): an interrupted run resumes, and the table can be
rebuilt alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from report import machine, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "quality_price.py"
DEFECTS = ("crack", "spalling", "rust")
#: A change may cost at most this many points (of 100) of pixel IoU or Eq. 3 time saving.
MAX_LOSS_POINTS = 1.0


@dataclass(frozen=True)
class Setting:
    """One evaluation: its command-line switches, and the defects the change applies to."""

    name: str
    change: str
    args: tuple[str, ...]
    defects: tuple[str, ...] = DEFECTS


SETTINGS = (
    Setting("today", "today's engine: fp32, fixed tiles, working scale 1, no screening",
            ("--precision", "fp32", "--tiling", "fixed", "--working-scale", "1")),
    Setting("bf16", "+ bf16 autocast (forward passes and climb)", ("--precision", "bf16")),
    Setting("balanced", "+ balanced tiles", ("--tiling", "balanced")),
    Setting("scale", "+ working scale 0.5 (rust and spalling; cracks stay at 1)",
            ("--working-scale", "0.5"), defects=("spalling", "rust")),
    Setting("screen", "+ tile screening (climb where p >= 0.5)", ("--screen",)),
)


def merge(base: list[str], change: tuple[str, ...]) -> list[str]:
    """``base`` switches with ``change`` applied (a switch given again replaces its value)."""
    out = list(base)
    k = 0
    while k < len(change):
        flag = change[k]
        value = change[k + 1:k + 2] if k + 1 < len(change) and not change[k + 1].startswith(
            "--") else []
        if flag in out:
            at = out.index(flag)
            has_value = at + 1 < len(out) and not out[at + 1].startswith("--")
            del out[at:at + 1 + has_value]
        out += [flag, *value]
        k += 1 + len(value)
    return out


def plan(defect: str, verdicts: dict[str, bool]) -> list[tuple[Setting, list[str], str | None]]:
    """(setting, switches, compared with) for one defect: each change builds on the last
    setting adopted (a change that failed its verdict, or does not apply, is not built on)."""
    rows = []
    adopted: tuple[str, list[str]] | None = None
    for setting in SETTINGS:
        if defect not in setting.defects:
            continue
        switches = merge(adopted[1] if adopted else [], setting.args)
        rows.append((setting, switches, adopted[0] if adopted else None))
        if verdicts.get(setting.name, True):
            adopted = (setting.name, switches)
    return rows


def limit_of(defect: str, args: argparse.Namespace) -> int:
    return args.rust_limit if defect == "rust" else args.limit


def run_one(defect: str, key: str, switches: list[str], args: argparse.Namespace) -> Path:
    """One evaluation, in a folder named by ``key`` (the setting and what it builds on)."""
    out = args.out / f"{defect}-n{limit_of(defect, args)}" / key
    report = out / "report.json"
    if report.is_file() and not args.force:
        return report
    cmd = [sys.executable, "-m", "defectcam.cli", "evaluate", "--weights", str(args.weights),
           "--defect", defect, "--split", "val", "--limit", str(limit_of(defect, args)),
           "--seed", str(args.seed), "--iterations", "2", "--device", "cpu", "--gallery", "0",
           "--no-progress", "--out", str(out), *switches]
    max_side = args.rust_max_side if defect == "rust" else args.max_side
    if max_side:
        cmd += ["--max-side", str(max_side)]
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"{defect} / {key}: {' '.join(cmd[3:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    return report


def figures(report: Path, defect: str) -> dict:
    data = json.loads(report.read_text())
    run = data["runs"][0]
    d = run["summary"]["per_defect"][defect]
    return {"iou": 100 * d["pixels"]["iou"], "recall": 100 * d["instance_recall"],
            "fp": d["false_positives_per_image"], "saving": 100 * d["time"]["eq3"]["saving"],
            "edit": 100 * d["time"]["edit_cost"]["saving"],
            "seconds": run["seconds_per_image"][defect], "n": d["n_images"],
            "mp": run["megapixels_per_image"][defect],
            "sha": data["config"]["weights"][defect]["sha256"][:12]}


def loss(row: dict, base: dict) -> float:
    """Points lost on the worse of pixel IoU and Eq. 3 saving (negative: a gain)."""
    return max(base["iou"] - row["iou"], base["saving"] - row["saving"])


def table(defect: str, rows: list[tuple[Setting, str | None, dict]]) -> list[str]:
    first = rows[0][2]
    lines = [f"**{defect}** ({first['n']} images, {first['mp']:.2f} MP per image as "
             f"evaluated, weights sha256 {first['sha']})", "",
             "| setting | compared with | pixel IoU | d IoU | instance recall | FP / image | "
             "Eq. 3 saving | d saving | edit-cost saving | s / image | time ratio | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by_name = {setting.name: r for setting, _, r in rows}
    for setting, against, r in rows:
        if against is None:
            lines.append(f"| {setting.change} | - | {r['iou']:.1f} | | {r['recall']:.1f} | "
                         f"{r['fp']:.2f} | {r['saving']:.1f} | | {r['edit']:.1f} | "
                         f"{r['seconds']:.2f} | | |")
            continue
        base = by_name[against]
        lost = loss(r, base)
        verdict = "ok" if lost <= MAX_LOSS_POINTS else f"**not a default** (-{lost:.1f})"
        lines.append(
            f"| {setting.change} | {against} | {r['iou']:.1f} | {r['iou'] - base['iou']:+.1f} | "
            f"{r['recall']:.1f} | {r['fp']:.2f} | {r['saving']:.1f} | "
            f"{r['saving'] - base['saving']:+.1f} | {r['edit']:.1f} | {r['seconds']:.2f} | "
            f"{base['seconds'] / max(r['seconds'], 1e-9):.2f}x | {verdict} |")
    return lines + [""]


def evaluate_defect(defect: str, args: argparse.Namespace
                    ) -> list[tuple[Setting, str | None, dict]]:
    """Every setting of one defect, in order; verdicts decide what the next builds on."""
    verdicts: dict[str, bool] = {}
    done: dict[str, dict] = {}
    while True:
        rows = plan(defect, verdicts)
        names = {}
        for setting, switches, against in rows:
            # Named by what it builds on: after a failed verdict the same change reruns on
            # another base, in another folder.
            key = setting.name if against is None else f"{setting.name}-on-{names[against]}"
            names[setting.name] = key
            if key not in done:
                done[key] = figures(run_one(defect, key, switches, args), defect)
            if against is not None and setting.name not in verdicts:
                verdicts[setting.name] = loss(done[key], done[names[against]]) <= MAX_LOSS_POINTS
                if not verdicts[setting.name]:
                    break  # the settings after it build on another one: plan again
        else:
            return [(s, against, done[names[s.name]]) for s, _, against in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--defect", action="append", choices=DEFECTS, default=None)
    parser.add_argument("--limit", type=int, default=100,
                        help="crack and spalling images (seeded choice; 224-544 px, cheap)")
    parser.add_argument("--rust-limit", type=int, default=20,
                        help="rust photos (seeded choice; up to 2 MP each as evaluated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale crack/spalling images to this side (default: none)")
    parser.add_argument("--rust-max-side", type=int, default=1600,
                        help="rust photos (up to 18 MP) are evaluated at this longer side: "
                             "1600 = the 2 MP requests the speed target is about")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per evaluation (default: torch's)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quality-price")
    parser.add_argument("--force", action="store_true", help="rerun existing evaluations")
    parser.add_argument("--note", default="", help="e.g. 'machine otherwise idle'")
    parser.add_argument("--append", default=str(REPO / "BENCHMARKS.md"),
                        help="write the section into this file ('-': print only)")
    args = parser.parse_args(argv)
    defects = args.defect or list(DEFECTS)
    host = machine(args.threads)
    results = {defect: evaluate_defect(defect, args) for defect in defects}
    command = " ".join(["python benchmarks/quality_price.py", *(argv or sys.argv[1:])])
    lines = ["## Quality price of the speed changes", "",
             f"`{command}`, {datetime.date.today().isoformat()}, {host}"
             f"{'; ' + args.note if args.note else ''}.",
             f"`defectcam evaluate` on the validation split: {args.limit} crack and spalling "
             f"images, {args.rust_limit} rust photos (seed {args.seed}; rust photos "
             f"downscaled to a longer side of {args.rust_max_side} px, the 2 MP requests of "
             "the speed target), AdvCAM T = 2, CAM threshold and post-processing of the "
             "weights. Settings are cumulative; each row is compared with the setting it "
             "builds on (cracks skip the working scale; a change marked not a default is not "
             "built on). Figures in points (of 100) except FP / image and seconds; a loss above "
             f"{MAX_LOSS_POINTS:g} point of pixel IoU or Eq. 3 saving is not a default. The "
             "working scale runs weights trained at scale 1: weights trained at 0.5 "
             "(`defectcam train --working-scale 0.5`) may pay less. s / image: single run.", ""]
    for defect in defects:
        lines += table(defect, results[defect])
    section = "\n".join(lines)
    if args.append == "-":
        print(section)
    else:
        write_section(Path(args.append), SCRIPT, section)
        print(f"wrote {args.append}")


if __name__ == "__main__":
    main()
