"""The annotation loop, round by round, as a team runs it, on the data set's training photos.

Round 0: the clicks on every training photo have trained the classifier (the paper's weak-label
phase); its refined maps become pseudo-masks and the pixel stage learns them. Round k: the
round k-1 model proposes on batch k (``defectcam propose``, logged), the simulated team leaves
batch k finished in CVAT (every true instance drawn, the other proposals deleted), and the same
commands a team runs on a real export turn that into labels (``defectcam feedback``,
``defectcam annotated-masks``) and the next model (``defectcam train --masks``). Each round is
measured on validation photos (``defectcam evaluate``, baselines in the same run) and on batch k
itself (the time the proposing model saved the team there).

    python scripts/annotation_rounds.py --defect spalling --rounds 2 --work runs/loop

Every step writes its output before the next starts and is skipped when that output exists,
so a run interrupted by the end of a session resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from defectcam.core.cvat import decode_cvat_mask  # noqa: E402
from defectcam.core.postprocess import polygon_to_mask  # noqa: E402
from defectcam.data.cvat_xml import write_cvat_xml  # noqa: E402
from defectcam.data.simulate import finished_frames  # noqa: E402
from defectcam.data.sources import (  # noqa: E402
    holds_defect,
    pairs_for_defect,
    seeded_choice,
    shared_data_root,
    split_source,
)

#: Round-0 click settings, as ``scripts/reproduce_weights.sh`` trains the shipped classifiers.
CLICK_OPTIONS = {
    "crack": ["--crop-size", "64", "--max-images-per-source", "300"],
    "spalling": ["--crop-size", "96", "--other-sources", "150"],
    "rust": [],
}


def defectcam(*args: str, log: Path) -> None:
    """Run one ``defectcam`` command, its output appended to ``log``; fail loudly."""
    command = [str(Path(sys.executable).parent / "defectcam"), *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(command)}\n")
        fh.flush()
        done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode not in (0, 1):  # propose answers 1 when a photo was skipped
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")


def proposed_regions(folder: Path, frames: dict[str, tuple[str, int, int]]
                     ) -> dict[str, list[np.ndarray]]:
    """Per image name, the regions ``defectcam propose`` answered (its ``.cvat.json``);
    ``frames``: name -> (file stem, height, width)."""
    regions: dict[str, list[np.ndarray]] = {}
    for name, (stem, height, width) in frames.items():
        path = folder / f"{stem}.cvat.json"
        if not path.is_file():
            continue
        for shape in json.loads(path.read_text()):
            if shape["type"] == "mask":
                regions.setdefault(name, []).append(
                    decode_cvat_mask(shape["mask"], height, width))
            elif shape["type"] == "polygon":
                points = np.asarray(shape["points"], float).reshape(-1, 2)
                regions.setdefault(name, []).append(polygon_to_mask(points, height, width))
    return regions


def summary_of(report: Path, defect: str) -> dict:
    """The model's and the baselines' headline figures in one ``defectcam evaluate`` report."""
    data = json.loads(report.read_text())
    out = {}
    for run in data["runs"]:
        row = run["summary"]["per_defect"].get(defect)
        if row:
            out[run["name"]] = {
                "images": row["n_images"], "pixel_iou": round(row["pixels"]["iou"], 4),
                "tolerant_iou": round(row["pixels"]["iou_tolerant"], 4),
                "instance_recall": round(row["instance_recall"], 4),
                "fp_per_image": round(row["false_positives_per_image"], 3),
                "eq3": round(row["time"]["eq3"]["saving"], 4),
                "edit_cost": round(row["time"]["edit_cost"]["saving"], 4),
                "seconds_per_image": round(run["seconds_per_image"][defect], 2)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--defect", required=True, choices=sorted(CLICK_OPTIONS))
    p.add_argument("--rounds", type=int, default=2, help="annotation rounds after round 0")
    p.add_argument("--batch-size", type=int, default=60, help="photos per annotation batch")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "loop")
    p.add_argument("--classifier", type=Path, default=None,
                   help="the round-0 click classifier (default: weights/<defect>.safetensors "
                        "when it serves its CAM)")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--crops-per-click", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6, help="ceiling per round")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per epoch")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--round-lr", type=float, default=None,
                   help="learning rate of rounds 1 and later, which fine-tune the previous "
                        "round's model (default: --lr); a lower one keeps a fine-tune from "
                        "leaving the good model it starts from")
    p.add_argument("--pseudo-iterations", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=60)
    p.add_argument("--val-other", type=int, default=10)
    args = p.parse_args()

    data = shared_data_root(args.data_root)
    work = args.work / args.defect
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    d = args.defect
    classifier = work / "classifier" / f"{d}.safetensors"
    if not classifier.is_file():
        source = args.classifier or ROOT / "weights" / f"{d}.safetensors"
        if json.loads(source.with_suffix(".json").read_text()).get("serves", "cam") != "cam":
            raise SystemExit(f"{source} serves pixels: pass the click classifier as "
                             "--classifier")
        classifier.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, classifier)
        shutil.copy(source.with_suffix(".json"), classifier.with_suffix(".json"))
    clicks0 = work / "round0.clicks.xml"
    if not clicks0.is_file():
        if d == "rust":
            shutil.copy(ROOT / "scripts" / "clicks" / "rust-round5.train-clicks.xml", clicks0)
        else:
            defectcam("simulate", "--defect", d, "--split", "train", "--seed", "0",
                      *CLICK_OPTIONS[d], "--data-root", str(data), "--out", str(clicks0),
                      log=log)
    pseudo = work / "pseudo0"
    defectcam("pseudo-masks", "--defect", d, "--weights", str(classifier), "--clicks",
              str(clicks0), "--images", str(data), "--out", str(pseudo), "--iterations",
              str(args.pseudo_iterations), log=log)
    train_options = ["--images", str(data), "--crop-size", str(args.crop_size),
                     "--crops-per-click", str(args.crops_per_click), "--epochs",
                     str(args.epochs), "--max-steps-per-epoch", str(args.steps),
                     "--patience", str(args.patience), "--micro-batch", "16", "--no-progress"]
    val_options = ["--split", "val", "--limit", str(args.val_limit), "--other-sources",
                   str(args.val_other), "--max-side", "1024", "--baseline", "--gallery", "2",
                   "--no-progress", "--data-root", str(data)]
    rounds_file = work / "rounds.json"
    rounds = json.loads(rounds_file.read_text()) if rounds_file.is_file() else {}

    def model(k: int) -> Path:
        return work / f"round{k}" / f"{d}.safetensors"

    def train_round(k: int, masks: list[Path], clicks: list[Path], start: Path) -> None:
        ckpt = work / f"round{k}" / f"{d}.checkpoint.safetensors"
        if not model(k).is_file() or ckpt.is_file():  # not yet trained, or interrupted
            defectcam("train", "--defect", d, "--clicks", *map(str, clicks), "--masks",
                      *map(str, masks), "--resume", str(start), "--out", str(model(k)),
                      "--lr", str(args.lr if k == 0 else (args.round_lr or args.lr)),
                      *train_options, log=log)
            # kept beside the weights, renamed: a finished round is not resumed again
            for suffix in (".safetensors", ".json"):
                ckpt.with_suffix(suffix).rename(
                    ckpt.with_name(f"{d}.finished-checkpoint{suffix}"))
        meta = json.loads(model(k).with_suffix(".json").read_text())
        rounds.setdefault(str(k), {})["training"] = {
            "seconds": meta["training"].get("seconds"),
            "best_epoch": meta["training"].get("best_epoch"),
            "steps": meta["training"].get("steps"),
            "crops_seen": meta["training"].get("crops_seen"),
            "held_apart": meta["metrics"].get("val_pixels")}

    def validate(k: int) -> None:
        out = work / f"round{k}" / "val"
        if not (out / "report.json").is_file():
            defectcam("evaluate", "--weights", str(model(k)), "--defect", d, "--out", str(out),
                      *val_options, log=log)
        rounds.setdefault(str(k), {})["val"] = summary_of(out / "report.json", d)

    train_round(0, [pseudo], [clicks0], classifier)
    validate(0)
    rounds_file.write_text(json.dumps(rounds, indent=2) + "\n")

    train, _ = split_source(pairs_for_defect(d, data), 0.2, 0)
    order = seeded_choice([q for q in train if holds_defect(q, d)], 10**9, 1)
    annotated = work / "annotated"
    feedback_clicks = []
    for k in range(1, args.rounds + 1):
        batch = order[(k - 1) * args.batch_size : k * args.batch_size]
        if not batch:
            break
        folder = work / f"round{k}"
        export = folder / "batch-export.xml"
        if not export.is_file():
            proposals = folder / "proposals"
            defectcam("propose", *(str(q.image) for q in batch), "--weights", str(model(k - 1)),
                      "--out", str(proposals), "--log", str(work / "log.sqlite"),
                      "--no-progress", log=log)
            sizes = {}
            for q in batch:
                h, w = cv2.imread(str(q.image), cv2.IMREAD_UNCHANGED).shape[:2]
                sizes[q.name] = (q.image.stem, h, w)
            write_cvat_xml(finished_frames(batch, d, proposed_regions(proposals, sizes)),
                           export)
        saved = folder / "batch-saving"
        # every batch frame was finished: proposals on frames without the defect count too
        if not (saved / "report.json").is_file() or not json.loads(
                (saved / "report.json").read_text())["config"]["options"].get("all_frames"):
            defectcam("evaluate", "--weights", str(model(k - 1)), "--defect", d, "--cvat-xml",
                      str(export), "--all-frames", "--images", str(data), "--out", str(saved),
                      "--max-side", "1024", "--baseline", "--gallery", "0", "--no-progress",
                      log=log)
        rounds.setdefault(str(k), {})["batch_saving"] = summary_of(saved / "report.json", d)
        fb = folder / "feedback"
        if not (fb / "feedback-clicks.xml").is_file():
            defectcam("feedback", "--annotations", str(export), "--images", str(data),
                      "--log", str(work / "log.sqlite"), "--out", str(fb), log=log)
            defectcam("annotated-masks", "--defect", d, "--annotations", str(export),
                      "--out", str(annotated), log=log)
        rounds[str(k)]["feedback"] = json.loads(
            (fb / "feedback-report.json").read_text()).get("per_defect", {}).get(d)
        feedback_clicks.append(fb / "feedback-clicks.xml")
        train_round(k, [annotated, pseudo], [clicks0, *feedback_clicks], model(k - 1))
        validate(k)
        rounds_file.write_text(json.dumps(rounds, indent=2) + "\n")
    print(json.dumps(rounds, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
