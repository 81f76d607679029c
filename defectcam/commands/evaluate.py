"""``defectcam evaluate``: proposals against ground truth, per defect and overall.

    defectcam evaluate --weights weights/ --defect crack --split val --out runs/eval-crack/ \\
        [--limit 50] [--iterations 2] [--ablation] [--sweep] [--baseline] [--max-side 1600]

Writes ``OUT/report.json``, ``OUT/report.md`` and ``OUT/gallery/*.png``. JSON layout:
``config`` (what ran on what), ``rules`` (every counting rule and the time-saving assumptions,
as text), ``main`` (name of the main setting), ``runs`` (one per setting: ``name``, ``kind``,
``iterations``, ``screen``, ``seconds_per_image``, ``megapixels_per_image``, ``summary``
(``per_defect`` / ``overall``: pixels, instances, instance recall, false positives per image,
Eq. 3 groups and edit cost) and ``images``), ``sweep`` (per defect and threshold: raw and
post-processed metrics of the main setting's maps), ``gallery`` and ``failures``.

With ``--interactive`` it measures the click interactor instead (simulated clicks on every
truth instance, beside the learning-free click baseline in the same run;
``defectcam.evaluation.interactive``) and writes ``OUT/interactive.json`` (``config``,
``summary`` per method, defect and click round, ``outcomes`` per instance) and
``OUT/interactive.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from defectcam.config import PRECISION_NAMES, malloc_tuning
from defectcam.core.options import DEFAULT_MIN_CONFIDENCE, ProposeOptions, Spelling
from defectcam.core.tiling import TILINGS
from defectcam.data import DEFECTS
from defectcam.evaluation.metrics import DEFAULT_SWEEP_THRESHOLDS, MatchRule
from defectcam.evaluation.timesave import AnnotatorModel, GroupThresholds

ABLATION_ITERATIONS = (0, 1, 2, 4)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure proposals against ground-truth masks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, nargs="+", default=None,
                   help="weights folder or files (default: none, for --baseline alone)")
    p.add_argument("--defect", action="append", choices=DEFECTS, default=None,
                   help="repeatable; default: every defect the weights know")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    data.add_argument("--split", choices=("train", "val", "all"), default="val",
                      help="the training split (val: images training never saw)")
    data.add_argument("--val-fraction", type=float, default=0.2, help="as used by training")
    data.add_argument("--split-seed", type=int, default=0, help="as used by training")
    data.add_argument("--source", action="append", default=None,
                      help="only these data-set sources (deepcrack, crackforest, phinet, "
                           "corrosion); repeatable (default: all)")
    data.add_argument("--cvat-xml", type=Path, default=None,
                      help="CVAT for images 1.1 export with polygons/masks as the truth "
                           "(default: the data-set folders)")
    data.add_argument("--images", type=Path, nargs="+", default=None,
                      help="image folder(s) of --cvat-xml (required with it): names resolve "
                           "to one exact relative path or the frame's content hash")
    data.add_argument("--all-frames", action="store_true",
                      help="with --cvat-xml: every frame was finished, so a frame without "
                           "shapes is truly empty and its proposals are false positives "
                           "(default: score only frames holding a polygon or mask)")
    data.add_argument("--limit", type=int, default=None,
                      help="at most N images per defect, a seeded choice (default: all)")
    data.add_argument("--seed", type=int, default=0, help="seed of the --limit choice")
    data.add_argument("--other-sources", type=int, default=0, metavar="N",
                      help="also N images of each source that does not label the defect "
                           "(empty truth: false positives on the other defects' photos, "
                           "which every classifier sees in CVAT) (default: %(default)s)")
    data.add_argument("--max-side", type=int, default=None,
                      help="downscale images and truth to this longer side (speed; reported; "
                           "default: full resolution)")
    s = p.add_argument_group("proposer")
    s.add_argument("--iterations", type=int, default=None,
                   help="AdvCAM steps T of the main setting (default: the weights' value: "
                        "'iterations' in weights/<defect>.json)")
    s.add_argument("--cam-threshold", type=float, default=None,
                   help="binarisation of the normalised map, in (0, 1) (default: the weights' "
                        "value: 'cam_threshold' in weights/<defect>.json)")
    s.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                   help="drop the model's proposals below this confidence, as the CVAT "
                        "function's default threshold does (default: %(default)s)")
    s.add_argument("--screen", action="store_true", help="tile screening in the main setting")
    s.add_argument("--ablation", action="store_true",
                   help="also run each --ablation-iterations T, and with/without screening")
    s.add_argument("--ablation-iterations", type=int, nargs="+", default=ABLATION_ITERATIONS,
                   help="AdvCAM steps T of the ablation runs")
    s.add_argument("--baseline", action="store_true",
                   help="also run the learning-free baselines (evaluation/baselines.py)")
    s.add_argument("--sweep", action="store_true",
                   help="CAM-threshold sweep on the main setting's maps (no re-run)")
    s.add_argument("--sweep-thresholds", type=float, nargs="+",
                   default=DEFAULT_SWEEP_THRESHOLDS, help="CAM thresholds of the sweep")
    s.add_argument("--device", default=None, help="cpu | cuda (default: CUDA when present)")
    s.add_argument("--tile-batch", type=int, default=None,
                   help="tiles per forward pass (default: 8 on CUDA, 2 on CPU)")
    s.add_argument("--precision", default="auto", choices=PRECISION_NAMES,
                   help="auto: bf16 autocast on CPUs with native bf16 and bf16-capable GPUs, "
                        "else fp32; fp16: CUDA only (default: %(default)s)")
    s.add_argument("--working-scale", type=_working_scale, default=None,
                   help="shrink images by this factor before tiling, e.g. 0.5 or "
                        "rust=0.5,spalling=0.5 (default: the weights' working_scale)")
    s.add_argument("--tiling", choices=TILINGS, default="balanced",
                   help="balanced: the tile count of fixed tiles, each as small as it allows; "
                        "fixed: every tile of the weights' tile size (default: %(default)s)")
    m = p.add_argument_group("metrics")
    m.add_argument("--tolerance", type=int, default=MatchRule.tolerance_px,
                   help="boundary tolerance in px for touching/found")
    m.add_argument("--found-coverage", type=float, default=MatchRule.found_coverage,
                   help="share of a true instance proposals must cover for it to count as found")
    m.add_argument("--min-instance-area", type=int, default=MatchRule.min_instance_area,
                   help="true instances smaller than this (px) are not counted")
    m.add_argument("--plain-iou-groups", action="store_true",
                   help="Eq. 3 groups by plain IoU (default: boundary-tolerant IoU)")
    i = p.add_argument_group("interactive (the click interactor, AI Tools > Interactors)")
    i.add_argument("--interactive", action="store_true",
                   help="simulated clicks on every truth instance, the interactor beside the "
                        "learning-free click baseline (writes interactive.json / .md)")
    i.add_argument("--clicks", type=int, choices=(1, 2), default=2,
                   help="clicks per instance: the most interior point, then where the first "
                        "answer was most wrong (default: %(default)s)")
    i.add_argument("--max-instances", type=int, default=5,
                   help="at most N instances per image, a seeded choice (default: "
                        "%(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--gallery", type=int, default=3,
                   help="best and worst images per defect in the gallery (0: none)")
    o.add_argument("--gallery-max-side", type=int, default=2048,
                   help="shrink gallery PNGs beyond this side (0: never)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _working_scale(text: str) -> float | dict[str, float]:
    from defectcam.core.predictor import parse_working_scale  # torch: not for --help

    try:
        return parse_working_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plain(value):
    """Paths (also inside lists) as strings, for JSON and the Markdown header."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _check(args: argparse.Namespace) -> None:
    if args.weights is None and not args.baseline:
        raise ValueError("give --weights, or --baseline to evaluate the baselines alone")
    if args.weights is None and (args.ablation or args.sweep or args.screen):
        raise ValueError("--ablation, --sweep and --screen need --weights")
    if (args.cvat_xml is None) != (args.images is None):
        raise ValueError("--cvat-xml and --images go together")
    if args.all_frames and args.cvat_xml is None:
        raise ValueError("--all-frames applies to --cvat-xml")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError("--min-confidence must be within 0..1")
    if args.other_sources < 0:
        raise ValueError("--other-sources must be >= 0")
    if args.interactive and args.weights is None:
        raise ValueError("--interactive needs --weights (the baseline runs beside them)")
    if args.max_instances < 1:
        raise ValueError("--max-instances must be >= 1")
    if args.max_side is not None and args.max_side < 32:
        raise ValueError("--max-side must be >= 32")
    if args.tile_batch is not None and args.tile_batch < 1:
        raise ValueError(f"--tile-batch must be >= 1, got {args.tile_batch}")
    # The request contract's bounds, before any weights load.
    ProposeOptions.build({"iterations": args.iterations, "cam_threshold": args.cam_threshold},
                         Spelling({"iterations": "--iterations",
                                   "cam_threshold": "--cam-threshold"}))
    ablation = Spelling({"iterations": "--ablation-iterations"})
    for steps in args.ablation_iterations if args.ablation else ():
        ProposeOptions.build({"iterations": steps}, ablation)


def run(args: argparse.Namespace) -> int:
    # These load torch, so they are imported here rather than for --help.
    from defectcam.evaluation.report import (
        build_report,
        render_markdown,
        write_gallery,
        write_json,
    )
    from defectcam.evaluation.run import cvat_items, evaluate, folder_items, plan_settings

    _check(args)
    proposer = None
    weights_info: dict = {}
    if args.weights is not None:
        from defectcam.core.device import resolve_device
        from defectcam.core.proposer import DefectProposer  # torch: only when needed

        weights = args.weights[0] if len(args.weights) == 1 else args.weights
        proposer = DefectProposer.from_weights(weights,
                                               device=resolve_device(args.device, "--device"),
                                               tile_batch=args.tile_batch,
                                               precision=args.precision,
                                               working_scale=args.working_scale,
                                               tiling=args.tiling,
                                               malloc_tuning=malloc_tuning())
        for label, predictor in proposer.predictors.items():
            md = predictor.metadata
            weights_info[label] = {
                "sha256": md.sha256, "tile_size": md.tile_size, "tile_overlap": md.tile_overlap,
                "iterations": md.iterations, "cam_threshold": md.cam_threshold,
                "closing_size": md.closing_size, "min_area": md.min_area,
                "cam_scale": md.cam_scale, "xi": md.xi, "tau": md.tau, "lam": md.lam,
                "refinement": md.refinement, "confidence": md.confidence,
                "screen_threshold": md.screen_threshold, "precision": predictor.precision,
                "working_scale": predictor.working_scale,
                "working_max_side": md.working_max_side, "tiling": predictor.tiling}
    defects = args.defect or (list(proposer.labels) if proposer else list(DEFECTS))
    defects = list(dict.fromkeys(defects))
    if proposer is not None:
        proposer.check_labels(defects)

    # The main setting's T and threshold: explicit, else what the (first) weights recommend.
    first = proposer.predictors[defects[0]].metadata if proposer else None
    iterations = args.iterations if args.iterations is not None else (
        first.iterations if first else 2)
    default_threshold = args.cam_threshold if args.cam_threshold is not None else (
        first.cam_threshold if first else None)
    settings = plan_settings(iterations, args.screen, args.cam_threshold,
                             args.ablation_iterations if args.ablation else None,
                             args.baseline, with_model=proposer is not None)

    if args.cvat_xml is not None:
        items = cvat_items(args.cvat_xml, args.images, defects, args.limit, args.seed,
                           all_frames=args.all_frames)
        frames = "every frame" if args.all_frames else "frames holding a polygon or mask"
        data_description = (f"CVAT export {args.cvat_xml}, {frames} (images under "
                            f"{', '.join(map(str, args.images))})")
    else:
        items = folder_items(defects, args.split, args.data_root, args.source, args.limit,
                             args.seed, args.val_fraction, args.split_seed, args.other_sources)
        data_description = (f"data-set folders under {args.data_root or '../shared/data'}, "
                            f"split {args.split} (val fraction {args.val_fraction}, split "
                            f"seed {args.split_seed})"
                            + (f", sources {args.source}" if args.source else "")
                            + (f", {args.limit} images per defect (seed {args.seed})"
                               if args.limit else "")
                            + (f", plus {args.other_sources} images of each other defect's "
                               f"source (empty truth)" if args.other_sources else ""))
    if not items:
        raise FileNotFoundError(f"no images with truth for {defects}")

    rule = MatchRule(args.tolerance, args.found_coverage, args.min_instance_area)
    thresholds = GroupThresholds(tolerant=not args.plain_iou_groups)
    if args.interactive:
        return run_interactive(args, proposer, defects, items, data_description, rule,
                               thresholds)
    annotator = AnnotatorModel()
    bar = tqdm(total=len(items) * len(settings), unit="run", disable=args.no_progress,
               file=sys.stderr, desc="evaluate")

    def progress(image_id: str) -> None:
        bar.set_postfix_str(Path(image_id).name[-30:], refresh=False)
        bar.update(1)

    evaluation = evaluate(items, settings, proposer, rule, args.max_side,
                          args.sweep_thresholds if args.sweep else None, progress=progress,
                          min_confidence=args.min_confidence)
    bar.close()

    args.out.mkdir(parents=True, exist_ok=True)
    gallery = write_gallery(evaluation, args.out / "gallery", args.gallery, args.max_side,
                            args.gallery_max_side or None)
    scaled = sum(r.scale < 1 for r in evaluation.main.records)
    config = {
        "options": {k: _plain(v) for k, v in vars(args).items() if k not in ("func", "command")},
        "defects": defects,
        "data_description": data_description,
        "images_per_defect": {d: sum(r.match.label == d for r in evaluation.main.records)
                              for d in defects},
        "split": None if args.cvat_xml else args.split,
        "max_side": args.max_side,
        "scaling": (f"images and truth downscaled to a longer side of {args.max_side} px "
                    f"({scaled} of {len(evaluation.main.records)} images); metrics are at "
                    f"that size" if args.max_side else "none: full resolution"),
        "weights": weights_info,
        "weights_description": ", ".join(
            f"{k} (sha256 {v['sha256'][:12]}, {v['precision']}, working scale "
            f"{v['working_scale']:g}"
            + (f", longer side <= {v['working_max_side']} px" if v["working_max_side"] else "")
            + f", {v['tiling']} tiles)"
            for k, v in weights_info.items()) or "none",
        "device": str(proposer.device) if proposer else "cpu (baselines only)",
        "settings": [s.name for s in settings],
        "match_rule": vars(rule),
        "group_thresholds": vars(thresholds),
        "annotator_model": vars(annotator),
    }
    report = build_report(evaluation, config, thresholds, annotator, default_threshold, gallery)
    write_json(report, args.out / "report.json")
    (args.out / "report.md").write_text(render_markdown(report))
    main = report["runs"][0]["summary"]["overall"]
    print(f"{report['main']}: pixel IoU {main['pixels']['iou']:.3f}, F1 "
          f"{main['pixels']['f1']:.3f}, instance recall {main['instance_recall']:.3f}, "
          f"Eq. 3 saving {main['time']['eq3']['saving']:.1%} -> {args.out / 'report.md'}")
    if evaluation.failures:
        print(f"skipped {len(evaluation.failures)} images (see report.json 'failures')",
              file=sys.stderr)
    return 0


def run_interactive(args: argparse.Namespace, proposer, defects: list[str], items: list,
                    data_description: str, rule: MatchRule,
                    thresholds: GroupThresholds) -> int:
    """``--interactive``: the click interactor and the click baseline on the same clicks."""
    from defectcam.core.interact import InteractSettings
    from defectcam.evaluation import interactive as ia

    settings = {d: InteractSettings.from_dict(proposer.predictors[d].metadata.interact)
                for d in defects}
    methods = {
        ia.INTERACTOR: {d: ia.model_method(proposer, d, args.iterations, settings[d])
                        for d in defects},
        ia.CLICK_BASELINE: {d: ia.baseline_method(
            d, proposer.predictors[d].metadata.tile_size,
            proposer.predictors[d].metadata.working_max_side, settings[d]) for d in defects},
    }
    bar = tqdm(total=len(items), unit="image", disable=args.no_progress, file=sys.stderr,
               desc="evaluate --interactive")
    run = ia.evaluate_interactive(items, methods, args.max_side, args.clicks,
                                  args.max_instances, rule.min_instance_area,
                                  rule.tolerance_px, args.seed,
                                  progress=lambda _image: bar.update(1))
    bar.close()
    summary = run.summary(thresholds)
    config = {
        "options": {k: _plain(v) for k, v in vars(args).items() if k not in ("func", "command")},
        "data": data_description + (f"; images and truth at a longer side of "
                                    f"{args.max_side} px" if args.max_side else ""),
        "protocol": (f"Per truth instance (8-connected, >= {rule.min_instance_area} px; at "
                     f"most {args.max_instances} per image, seed {args.seed}) one click at its "
                     f"most interior point, then {args.clicks - 1} more where the answer was "
                     f"most wrong; IoU tolerance {rule.tolerance_px} px; "
                     f"{thresholds.describe()}; every instance counts in N."),
        "baseline_rules": ia.baseline_rules(defects),
        "interact_settings": {d: settings[d].to_dict() for d in defects},
        "device": str(proposer.device),
        "weights": {d: proposer.predictors[d].metadata.sha256 for d in defects},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"config": config, "summary": summary, "failures": run.failures,
              "outcomes": {name: [dataclasses.asdict(o) for o in outcomes]
                           for name, outcomes in run.outcomes.items()}}
    (args.out / "interactive.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "interactive.md").write_text(ia.render_markdown(summary, config))
    last = f"clicks_{args.clicks}"
    for d in defects:
        cells = [f"{name} IoU {summary[name][d][last]['mean_iou_tolerant']:.3f} Eq. 3 "
                 f"{summary[name][d][last]['eq3']['saving']:.1%}" for name in methods
                 if d in summary.get(name, {})]
        print(f"{d} after {args.clicks} click(s): " + "; ".join(cells))
    print(f"-> {args.out / 'interactive.md'}")
    return 0
