"""Choose a defect's click-interactor settings (sidecar ``interact``) on TRAINING-split photos.

    python scripts/interact_grid.py spalling --limit 40 --out runs/interact-grid/spalling.json \
        --exclude-masks runs/loop/spalling/annotated
    python scripts/interact_grid.py spalling --limit 40 --out ... --write   # into the sidecar

The validation split is never looked at: the reported figures come from ``defectcam evaluate
--interactive`` on the validation split. Every candidate runs the evaluation's own simulated
clicks (``evaluate_interactive``: one click at each instance's most interior point, a second
where the answer was most wrong) with the interactor's own code, beside the click baseline
with the same shared settings (window, snapping, growth, fill). The classifier's map of a
window is computed once and cached in memory, so the grid costs the classifier's passes once.

Grid: the region rule (``cut``, ``component``, ``union``), the region's threshold (and its
share of the map at the clicks, ``click_share``, off unless given) and dilation, the
evidence (the weights', or the defect's own kind for weights without one), the fill (shared
with the baseline: a candidate must beat the baseline at its strongest fill; spellings that
compute the same interactor run once). ``--exclude-masks`` leaves out the photos whose truth
a pixel head learnt (the loop's ``annotated/``): a search on them ranks its outline too high.
Settings for speed (``max_grows``, ``max_side``) are given, not searched. Score (higher is
better): the mean over the click rounds of the interactor's tolerant IoU and Eq. 3 saving;
a candidate that does not beat the baseline on both after every round ranks below any that
does. The chosen settings are printed as JSON, written with the whole grid to ``--out``,
and with ``--write`` into ``weights/<defect>.json`` (``interact``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from defectcam.core.interact import InteractSettings, interact
from defectcam.core.proposer import DefectProposer
from defectcam.core.refine import Refinement
from defectcam.core.weights import WeightsMetadata
from defectcam.evaluation import interactive as ia
from defectcam.evaluation.run import folder_items
from defectcam.evaluation.timesave import GroupThresholds
from defectcam.training.pseudo_masks import mask_file

REPO = Path(__file__).resolve().parents[1]
#: Values searched (``--grid key=v1,v2`` replaces one); evidence ``null``: the strict form of
#: the weights' evidence, ``weights``: the detector's own.
GRID = {"region": ("cut", "component", "union"), "cam_threshold": (0.2, 0.3, 0.5),
        "dilation": (0, 16, 48), "fill": (0, 8), "evidence": (None, "weights", "kind"),
        "click_share": (None,)}
#: ``kind``: the defect's own evidence kind in its strict form (weights with no refinement,
#: such as a pixel head's, have no evidence of their own).
KINDS = {"crack": "dark-lines", "spalling": "rough-dark", "rust": "rust-colour"}


class CachedMaps:
    """A predictor whose maps are remembered per window (same pixels, same T: same map)."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.metadata = predictor.metadata
        self.maps: dict = {}

    def predict(self, window: np.ndarray, iterations: int | None = None):
        key = (window.shape, iterations, hashlib.blake2b(window.tobytes(), digest_size=16)
               .hexdigest())
        if key not in self.maps:
            self.maps[key] = self.predictor.predict(window, iterations)
        return self.maps[key]


def effective(settings: InteractSettings, md: WeightsMetadata) -> tuple:
    """What an interactor computes, whatever the spelling: the evidence its settings resolve
    to (as ``core.interact.model_candidates``), and the region settings only where an
    evidence is there for them to act on."""
    refinement = Refinement.from_dict(md.refinement)
    if settings.evidence == "weights":
        evidence = refinement.to_dict() if refinement.active else None
    elif settings.evidence != "none":
        evidence = settings.evidence or (refinement.evidence if refinement.active else None)
    else:
        evidence = None
    if evidence is None:
        return (None, settings.cam_threshold, settings.click_share, settings.fill)
    return (str(evidence), settings.region, settings.cam_threshold, settings.click_share,
            settings.dilation, settings.fill)


def figures(summary: dict, method: str, label: str) -> dict:
    rounds = summary[method][label]
    return {rnd: {"iou_tolerant": row["mean_iou_tolerant"], "eq3": row["eq3"]["saving"],
                  "seconds": row["seconds_per_click"], "instances": row["instances"]}
            for rnd, row in rounds.items()}


def score(mine: dict, base: dict) -> tuple[bool, float]:
    beats = all(mine[r]["iou_tolerant"] > base[r]["iou_tolerant"]
                and mine[r]["eq3"] > base[r]["eq3"] for r in mine)
    return beats, float(np.mean([(mine[r]["iou_tolerant"] + mine[r]["eq3"]) / 2 for r in mine]))


def _value(text: str):
    """One ``--grid`` value: JSON where it parses (null, 0.3), else the word itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("defect", choices=("crack", "spalling", "rust"))
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--limit", type=int, default=40, help="training photos")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--max-instances", type=int, default=3)
    p.add_argument("--min-instance-area", type=int, default=64)
    p.add_argument("--max-grows", type=int, default=None, help="given, not searched")
    p.add_argument("--max-window", type=int, default=None,
                   help="max_side: the grown window's side (post-processing px), given")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of one searched setting (JSON each: null, 0.3, \"cut\")")
    p.add_argument("--exclude-masks", type=Path, action="append", default=[], metavar="DIR",
                   help="leave out the photos that have a mask here (a ``train --masks`` "
                        "folder: photos whose truth the weights learnt flatter them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--write", action="store_true", help="write the choice into the sidecar")
    args = p.parse_args()

    grid = dict(GRID)
    for spec in args.grid:
        key, _, values = spec.partition("=")
        if key not in GRID:
            p.error(f"--grid: unknown setting {key!r}; known: {', '.join(GRID)}")
        grid[key] = tuple(_value(v) for v in values.split(","))
    proposer = DefectProposer.from_weights(args.weights, precision="fp32")
    predictor = CachedMaps(proposer.predictors[args.defect])
    md = predictor.metadata
    items = folder_items([args.defect], "train", seed=args.seed)
    items = [item for item in items
             if not any(mask_file(folder, item.image_id).is_file()
                        for folder in args.exclude_masks)]
    if len(items) > args.limit:
        rng = np.random.default_rng(args.seed)
        items = [items[i] for i in sorted(rng.choice(len(items), args.limit, replace=False))]
    base = InteractSettings.from_dict(md.interact)
    fixed = {k: v for k, v in (("max_grows", args.max_grows), ("max_side", args.max_window))
             if v is not None}
    base = replace(base, **fixed)
    thresholds = GroupThresholds()
    rows = []
    started = time.time()
    # The baseline shares the fill; the interactor must beat it at its strongest fill.
    by_fill = {}
    for fill in grid["fill"]:
        method = ia.baseline_method(args.defect, md.tile_size, md.working_max_side,
                                    replace(base, fill=fill))
        run = ia.evaluate_interactive(items, {ia.CLICK_BASELINE: {args.defect: method}},
                                      args.max_side, 2, args.max_instances,
                                      args.min_instance_area, seed=0)
        by_fill[fill] = figures(run.summary(thresholds), ia.CLICK_BASELINE, args.defect)
        print(f"click baseline, fill {fill}: {by_fill[fill]}", flush=True)
    strongest = {rnd: {key: max(by_fill[f][rnd][key] for f in by_fill)
                       for key in ("iou_tolerant", "eq3")} for rnd in by_fill[grid["fill"][0]]}
    tried = set()
    for values in itertools.product(*grid.values()):
        chosen_values = dict(zip(grid, values, strict=True))
        if chosen_values["evidence"] == "kind":
            chosen_values["evidence"] = KINDS[args.defect]
        settings = replace(base, **chosen_values)
        key = effective(settings, md)
        if key in tried:  # the same interactor under another spelling
            continue
        tried.add(key)
        methods = {ia.INTERACTOR: {args.defect: lambda image, clicks, s=settings: interact(
            predictor, image, clicks, settings=s)}}
        run = ia.evaluate_interactive(items, methods, args.max_side, 2, args.max_instances,
                                      args.min_instance_area, seed=0)
        mine = figures(run.summary(thresholds), ia.INTERACTOR, args.defect)
        beats, value = score(mine, strongest)
        rows.append({"settings": settings.to_dict(), "interactor": mine,
                     "baseline": by_fill[settings.fill], "strongest_baseline": strongest,
                     "beats_baseline": beats, "score": value})
        print(f"{chosen_values}: score {value:.4f} beats {beats} "
              f"({time.time() - started:.0f} s)", flush=True)
    best = max(rows, key=lambda row: (row["beats_baseline"], row["score"]))
    chosen = {k: v for k, v in best["settings"].items()
              if v != InteractSettings().to_dict()[k]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "defect": args.defect, "weights_sha256": md.sha256, "split": "train",
        "excluded_masks": [str(folder) for folder in args.exclude_masks],
        "images": len(items), "seed": args.seed, "max_side": args.max_side,
        "grid": grid, "fixed": fixed, "chosen": chosen, "best": best, "rows": rows}, indent=1)
        + "\n")
    print(json.dumps({"interact": chosen}))
    if args.write:
        sidecar = args.weights / f"{args.defect}.json"
        data = json.loads(sidecar.read_text())
        data["interact"] = chosen
        sidecar.write_text(json.dumps(data, indent=2) + "\n")
        print(f"-> {sidecar}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
