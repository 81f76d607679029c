"""``defectcam simulate`` and ``defectcam train``: clicks -> weights (``train`` also calibrates
the CAM scale of the weights it writes)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from defectcam.config import PRECISION_NAMES, malloc_tuning
from defectcam.core.device import resolve_device
from defectcam.core.options import DEFAULT_MIN_CONFIDENCE
from defectcam.data import DEFECTS, NEGATIVE_LABEL
from defectcam.data.cvat_xml import write_cvat_xml
from defectcam.data.sources import (
    cap_per_source,
    other_source_pairs,
    pairs_for_defect,
    seeded_choice,
    shared_data_root,
    split_source,
)

# The modules that load torch are imported in the run functions, so that ``--help`` does not
# wait for torch.


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate an annotator's clicks on data with masks")
    p.add_argument("--defect", required=True, choices=DEFECTS, help="the defect to click")
    p.add_argument("--split", choices=("train", "val", "all"), default="train",
                   help="which images of the data-set split (val: never trained on)")
    p.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of each source held out as the val split")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the clicks")
    p.add_argument("--negatives-per-image", type=int, default=5,
                   help="negative clicks per image")
    p.add_argument("--min-distance", type=float, default=96.0,
                   help="negative clicks at least this far (px) from any defect")
    p.add_argument("--crop-size", type=int, default=None,
                   help="training crop size: negatives go only where their crops hold no defect "
                        "(default: no such check)")
    p.add_argument("--max-images-per-source", type=int, default=None,
                   help="at most this many images of each source (a seeded choice), so that "
                        "one large source does not drown the others (default: all)")
    p.add_argument("--other-sources", type=int, default=0, metavar="N",
                   help="also click negatives on up to N photos of each source that does not "
                        "label this defect (same split; the other defects' photos, which the "
                        "classifier sees in CVAT too)")
    p.add_argument("--other-defects", action="store_true",
                   help="also click every other defect the photos' masks hold (one click per "
                        "component, labelled with that defect: training reads them as "
                        "negatives where no clicked defect of its own is near) and keep "
                        "no-defect clicks clear of every defect")
    p.add_argument("--hard-negatives", type=Path, default=None, metavar="WEIGHTS",
                   help="the product's own loop: propose on the chosen photos with these "
                        "weights (their settings, CVAT's threshold 0.5) and click a negative "
                        "inside every proposal that touches no defect (default: off)")
    p.add_argument("--hard-images", type=int, default=200, metavar="N",
                   help="propose on at most N of the chosen photos (a seeded choice; each "
                        "costs a map at <= 1024 px)")
    p.add_argument("--out", type=Path, required=True, help="CVAT XML file to write")
    p.set_defaults(func=run_simulate)

    t = sub.add_parser("train", help="train one defect classifier from CVAT click exports")
    t.add_argument("--defect", required=True, help="label of the positive clicks")
    t.add_argument("--clicks", type=Path, nargs="+", required=True,
                   help="CVAT for images 1.1 XML export(s); several are merged")
    t.add_argument("--images", type=Path, nargs="+", required=True,
                   help="folder(s) the exports' image names are relative to, e.g. the data "
                        "set's root and a CVAT export's images/ (each image is found by its "
                        "exact relative path or its content hash; a name two folders hold "
                        "differently is an error)")
    t.add_argument("--out", type=Path, required=True,
                   help="weights file (.safetensors) or folder (then <defect>.safetensors)")
    t.add_argument("--negative-label", default=NEGATIVE_LABEL,
                   help="label of the negative clicks")
    t.add_argument("--resume", type=Path, default=None,
                   help="start from these weights (fine-tuning with new clicks; default: a "
                        "fresh classifier)")
    t.add_argument("--freeze-batchnorm", choices=("auto", "yes", "no"), default="auto",
                   help="keep BatchNorm statistics fixed (auto: yes when fine-tuning)")
    t.add_argument("--working-scale", type=float, default=None,
                   help="shrink images by this factor before cropping, and record it in the "
                        "weights so that inference shrinks frames alike (blobs such as rust: "
                        "0.5 sees 4x more context per crop and runs 4x fewer pixels; default: "
                        "the --resume weights', else 1)")
    t.add_argument("--working-max-side", type=int, default=None,
                   help="also shrink images whose longer side exceeds this many px (after "
                        "--working-scale) to it, and record it in the weights (0: no limit; "
                        "blobs such as rust: 1024 trains and serves every camera's frames at "
                        "one size; default: the --resume weights', else 0)")
    t.add_argument("--crop-size", type=int, default=None,
                   help="training crop side in px (default: the --resume weights', else 320)")
    t.add_argument("--crops-per-click", type=int, default=None,
                   help="crops around each click, shifted so the click is not always central "
                        "(default: the --resume weights', else 5)")
    t.add_argument("--no-other-label-negatives", action="store_true",
                   help="read only --negative-label clicks as negatives (default: the other "
                        "defects' clicks are negatives too, where no clicked defect of this "
                        "label lies within a crop's reach)")
    t.add_argument("--force", action="store_true",
                   help="with --resume: write the fine-tuned weights even when they score "
                        "worse than the resumed ones on the held-apart crops (default: OUT is "
                        "left as it was, the fine-tune stays in candidate/ beside it, and the "
                        "command fails saying by how much)")
    t.add_argument("--epochs", type=int, default=10, help="passes over the crops")
    t.add_argument("--batch-size", type=int, default=32,
                   help="crops per optimiser step (by gradient accumulation)")
    t.add_argument("--micro-batch", type=int, default=8,
                   help="crops per forward pass (memory)")
    t.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    t.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay")
    t.add_argument("--max-steps-per-epoch", type=int, default=None,
                   help="cut each epoch after this many steps (default: the whole epoch)")
    t.add_argument("--holdout", type=float, default=0.15,
                   help="fraction of the clicked images held apart for validation F1")
    t.add_argument("--max-holdout-crops", type=int, default=512,
                   help="validate on at most this many held-apart crops (a seeded sample)")
    t.add_argument("--tile-size", type=int, default=512, help="recommended inference tile")
    t.add_argument("--seed", type=int, default=0, help="seed of crops, split and training")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 (default: cuda if present)")
    t.add_argument("--precision", default="auto", choices=PRECISION_NAMES,
                   help="training precision (auto: bf16 autocast on CUDA where supported)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--masks", type=Path, nargs="+", default=None, metavar="DIR",
                   help="the second stage: pixel labels per image (defectcam annotated-masks "
                        "first, then defectcam pseudo-masks folders: the first holding an "
                        "image's mask wins); the classifier from --resume gets a pixel head "
                        "and its weights serve that head's map (default: clicks only)")
    t.add_argument("--patience", type=int, default=3,
                   help="with --masks: stop after this many epochs without a better "
                        "held-apart pixel IoU (0: run every --epochs)")
    t.add_argument("--pixel-weight", type=float, default=1.0,
                   help="with --masks: weight of the pixel loss against the clicks' BCE")
    t.set_defaults(func=run_train)


def run_simulate(args: argparse.Namespace) -> int:
    from defectcam.core.proposer import DefectProposer
    from defectcam.data.simulate import (
        add_negative_clicks,
        hard_negative_clicks,
        simulate_clicks,
    )

    root = shared_data_root(args.data_root)
    pairs = pairs_for_defect(args.defect, root)
    if not pairs:
        raise FileNotFoundError(f"no images with {args.defect} masks under {root}")
    train, val = split_source(pairs, args.val_fraction, args.seed)
    chosen = {"train": train, "val": val, "all": train + val}[args.split]
    if args.max_images_per_source:
        chosen = cap_per_source(chosen, args.max_images_per_source, args.seed)
    if args.other_sources:
        other = split_source(other_source_pairs(args.defect, root), args.val_fraction,
                             args.seed)
        chosen += cap_per_source({"train": other[0], "val": other[1],
                                  "all": other[0] + other[1]}[args.split],
                                 args.other_sources, args.seed)
    proposer = None
    if args.hard_images < 1:
        raise ValueError(f"--hard-images must be at least 1, got {args.hard_images}")
    if args.hard_negatives is not None:  # loaded (and checked) before any photo is read
        proposer = DefectProposer.from_weights(args.hard_negatives,
                                               malloc_tuning=malloc_tuning())
        if args.defect not in proposer.labels:
            raise ValueError(f"--hard-negatives {args.hard_negatives}: no {args.defect} "
                             f"classifier there (found: {', '.join(proposer.labels)})")
    annotations = simulate_clicks(chosen, args.defect, args.seed,
                                  negatives_per_image=args.negatives_per_image,
                                  min_distance=args.min_distance, crop_size=args.crop_size,
                                  other_defects=args.other_defects)
    note = ""
    if proposer is not None:
        mined = seeded_choice(chosen, args.hard_images, args.seed)
        hard = hard_negative_clicks(
            lambda image: proposer.propose(image, 0, labels=[args.defect],
                                           min_confidence=DEFAULT_MIN_CONFIDENCE),
            mined, args.defect, min_distance=args.min_distance, crop_size=args.crop_size,
            report=print)
        added = add_negative_clicks(annotations, hard.clicks)
        note = (f"; hard negatives: {hard.false_positives} of {hard.proposals} proposals on "
                f"{hard.images} photos touched no {args.defect}, {added} clicks from them")
    write_cvat_xml(annotations, args.out)
    counts = Counter(s.label for im in annotations.images for s in im.shapes)
    others = "".join(f", {n} {label} clicks" for label, n in sorted(counts.items())
                     if label not in (args.defect, NEGATIVE_LABEL))
    print(f"{args.out}: {len(annotations.images)} images, {counts[args.defect]} {args.defect} "
          f"clicks, {counts[NEGATIVE_LABEL]} {NEGATIVE_LABEL} clicks{others}{note}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from defectcam.training.loop import TrainConfig
    from defectcam.training.pipeline import ClickTraining, train_from_clicks

    # Checked before the crops are built; unset or auto: the loop picks (cuda:LOCAL_RANK).
    device = None if (args.device or "auto") == "auto" else args.device
    if device:
        resolve_device(device, "--device")
    if args.masks is not None:
        return run_train_pixels(args)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         micro_batch=args.micro_batch, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                         precision=args.precision,
                         max_steps_per_epoch=args.max_steps_per_epoch,
                         freeze_batchnorm=(args.freeze_batchnorm == "yes" or (
                             args.freeze_batchnorm == "auto" and args.resume is not None)),
                         progress=not args.no_progress)
    job = ClickTraining(defect=args.defect, clicks=args.clicks, images=args.images, out=args.out,
                        negative_label=args.negative_label, resume=args.resume,
                        crop_size=args.crop_size, crops_per_click=args.crops_per_click,
                        holdout=args.holdout, max_holdout_crops=args.max_holdout_crops,
                        tile_size=args.tile_size, seed=args.seed,
                        working_scale=args.working_scale,
                        working_max_side=args.working_max_side,
                        other_labels=() if args.no_other_label_negatives else None,
                        force=args.force, config=config)
    summary = train_from_clicks(job)
    if summary is not None:  # None on the other ranks of a torchrun job
        print(json.dumps(summary))
    return 0


def run_train_pixels(args: argparse.Namespace) -> int:
    """``train --masks``: the pixel stage, started from the ``--resume`` classifier."""
    from defectcam.training.loop import TrainConfig
    from defectcam.training.pixel_loop import PixelConfig
    from defectcam.training.pixel_pipeline import PixelTraining, train_pixels_from_clicks

    if args.resume is None:
        raise ValueError("--masks trains the pixel stage of a classifier: pass it as --resume")
    for folder in args.masks:
        if not folder.is_dir():
            raise FileNotFoundError(f"--masks {folder}: no such folder")
    if args.patience < 0 or args.pixel_weight < 0:
        raise ValueError("--patience and --pixel-weight must be >= 0")
    out = args.out / f"{args.defect}.safetensors" if args.out.suffix == "" else args.out
    if out.resolve() == args.resume.resolve():
        raise ValueError(f"--out {out} would overwrite the --resume weights: write the pixel "
                         "stage elsewhere and compare both with defectcam evaluate")
    if args.working_scale is not None or args.working_max_side is not None:
        raise ValueError("--masks keeps the --resume weights' working size; do not pass "
                         "--working-scale / --working-max-side")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         micro_batch=args.micro_batch, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                         precision=args.precision,
                         max_steps_per_epoch=args.max_steps_per_epoch,
                         freeze_batchnorm=args.freeze_batchnorm == "yes",
                         progress=not args.no_progress)
    job = PixelTraining(defect=args.defect, clicks=args.clicks, images=args.images,
                        masks=args.masks, start=args.resume, out=args.out,
                        negative_label=args.negative_label,
                        crop_size=args.crop_size or PixelTraining.crop_size,
                        crops_per_click=args.crops_per_click or PixelTraining.crops_per_click,
                        holdout=args.holdout,
                        max_holdout_crops=args.max_holdout_crops, seed=args.seed,
                        config=PixelConfig(pixel_weight=args.pixel_weight,
                                           patience=args.patience, train=config))
    print(json.dumps(train_pixels_from_clicks(job)))
    return 0
