"""``defectcam pseudo-masks`` and ``defectcam annotated-masks``: pixel labels for
``defectcam train --masks`` (the second stage, ``defectcam.training.pixel_pipeline``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from defectcam.data import NEGATIVE_LABEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = _settings_defaults()
    p = sub.add_parser(
        "pseudo-masks", help="a classifier's refined maps on clicked images -> pixel labels",
        description="For every image of the click exports: the classifier's map (AdvCAM, "
                    "flips), fitted to image evidence as its weights post-process proposals, "
                    "as a PNG of 0 background / 1 defect / 255 unsure. Cached: a rerun "
                    "continues where the last one stopped.")
    p.add_argument("--defect", required=True, help="the defect")
    p.add_argument("--weights", type=Path, required=True,
                   help="the classifier (file, or folder holding <defect>.safetensors)")
    p.add_argument("--clicks", type=Path, nargs="+", required=True,
                   help="CVAT for images 1.1 click export(s)")
    p.add_argument("--images", type=Path, nargs="+", required=True,
                   help="folder(s) the exports' image names are relative to (each image "
                        "found by its path or content hash)")
    p.add_argument("--out", type=Path, required=True, help="mask folder (cache)")
    p.add_argument("--negative-label", default=NEGATIVE_LABEL, help="negative clicks' label")
    p.add_argument("--iterations", type=int, default=defaults["iterations"],
                   help="AdvCAM steps per image")
    p.add_argument("--no-flips", action="store_true", help="do not average a flipped pass")
    p.add_argument("--background-below", type=float, default=defaults["background_below"],
                   help="map values below this (away from defects) are background")
    p.add_argument("--click-radius", type=int, default=defaults["click_radius"],
                   help="px: a defect component must reach this near a positive click; "
                        "radius of a negative click's background disc")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if present)")
    p.set_defaults(func=run_pseudo_masks)

    a = sub.add_parser(
        "annotated-masks", help="a CVAT export of finished frames -> pixel labels",
        description="Rasterise the finished frames of a CVAT export for one defect: its "
                    "polygons and masks are the defect, boxes unsure, the rest background.")
    a.add_argument("--defect", required=True, help="the defect")
    a.add_argument("--annotations", type=Path, required=True,
                   help='"CVAT for images 1.1" export (annotations.xml)')
    a.add_argument("--out", type=Path, required=True, help="mask folder")
    a.set_defaults(func=run_annotated_masks)


def _settings_defaults() -> dict:
    from defectcam.training.pixel_labels import PseudoMaskSettings

    return asdict(PseudoMaskSettings())


def run_pseudo_masks(args: argparse.Namespace) -> int:
    from defectcam.data.cvat_xml import clicks_from_annotations, read_cvat_xml
    from defectcam.training.pseudo_masks import PseudoMaskSettings, make_pseudo_masks

    if args.iterations < 0:
        raise ValueError(f"--iterations must be >= 0, got {args.iterations}")
    settings = PseudoMaskSettings(iterations=args.iterations, flips=not args.no_flips,
                                  background_below=args.background_below,
                                  click_radius=args.click_radius)
    clicks = []
    for path in args.clicks:
        clicks += clicks_from_annotations(read_cvat_xml(path), args.defect, args.negative_label)
    if not clicks:
        raise ValueError(f"no clicked images in {[str(p) for p in args.clicks]}")
    run = make_pseudo_masks(args.weights, args.defect, clicks, args.images, args.out, settings,
                            device=args.device)
    print(json.dumps({"folder": str(run.folder), "written": run.written, "cached": run.cached,
                      "seconds": round(run.seconds, 1)}))
    return 0


def run_annotated_masks(args: argparse.Namespace) -> int:
    from defectcam.data.cvat_xml import read_cvat_xml
    from defectcam.training.pseudo_masks import annotated_masks

    if not args.annotations.is_file():
        raise FileNotFoundError(f"{args.annotations} does not exist")
    written = annotated_masks(read_cvat_xml(args.annotations), args.defect, args.out)
    print(f"{args.out}: {written} {args.defect} masks")
    return 0
