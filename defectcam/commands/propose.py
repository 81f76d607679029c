"""``defectcam propose``: photos -> CVAT-shaped JSON, overlay PNG and (optionally) heat maps."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from defectcam.core.cvat import OUTPUT_TYPES, proposals_to_cvat_shapes
from defectcam.core.image_io import DEFAULT_MAX_PIXELS, ImageInputError, decode_image
from defectcam.core.overlay import draw_proposals, heatmap, write_rgb
from defectcam.core.proposer import DefectProposer
from defectcam.core.weights import WeightsError

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("propose", help="propose defects on photos (CVAT JSON + overlay PNG)")
    p.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                   help="weights folder or comma-separated .safetensors files "
                        "(default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--iterations", type=int, default=None,
                   help="AdvCAM steps T (0 = Grad-CAM; default: the weights' value, 2)")
    p.add_argument("--cam-threshold", type=float, default=None,
                   help="binarisation threshold of the normalised map (default 0.1)")
    p.add_argument("--labels", default=None, help="comma-separated subset, e.g. crack,rust")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="drop proposals below this confidence (CVAT's 'threshold')")
    p.add_argument("--output", choices=OUTPUT_TYPES, default="polygon", help="CVAT shape type")
    p.add_argument("--screen", action="store_true",
                   help="skip the climb on tiles the classifier calls negative")
    p.add_argument("--heatmaps", action="store_true", help="also write one heat map per defect")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="reduced precision is for CUDA only")
    p.add_argument("--tile-batch", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    weights = args.weights.split(",") if "," in args.weights else args.weights
    try:
        proposer = DefectProposer.from_weights(weights, device=args.device,
                                               tile_batch=args.tile_batch,
                                               precision=args.precision)
    except WeightsError as exc:
        raise ValueError(str(exc)) from exc
    labels = args.labels.split(",") if args.labels else None
    proposer.check_labels(labels)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    images = tqdm(args.images, desc="images", unit="img", disable=args.no_progress)
    for path in images:
        try:
            decoded = decode_image(path.read_bytes(), max_pixels=args.max_pixels)
        except (OSError, ImageInputError) as exc:
            tqdm.write(f"{path}: skipped: {exc}", file=sys.stderr)
            failures += 1
            continue
        image = decoded.rgb
        grid_tiles = _tile_count(proposer, image, labels)
        with tqdm(total=grid_tiles, desc=path.name, unit="tile", leave=False,
                  disable=args.no_progress) as bar:
            start = time.perf_counter()
            result = proposer.propose_detailed(
                image, iterations=args.iterations, cam_threshold=args.cam_threshold,
                labels=labels, screen=args.screen, min_confidence=args.min_confidence,
                progress=bar.update,
            )
            seconds = time.perf_counter() - start
        shapes = proposals_to_cvat_shapes(result.proposals, args.output)
        stem = args.out / path.stem
        stem.with_suffix(".cvat.json").write_text(json.dumps(shapes) + "\n")
        write_rgb(stem.with_suffix(".overlay.png"), draw_proposals(image, result.proposals))
        if args.heatmaps:
            for label, defect_map in result.maps.items():
                write_rgb(args.out / f"{path.stem}.{label}.heatmap.png",
                          heatmap(image, defect_map.cam_map))
        counts = {lab: sum(p.label == lab for p in result.proposals) for lab in result.maps}
        tqdm.write(f"{path.name}: {image.shape[1]}x{image.shape[0]}, {len(shapes)} proposals "
                   f"{counts} in {seconds:.1f} s -> {stem}.cvat.json, {stem}.overlay.png")
    return 1 if failures else 0


def _tile_count(proposer: DefectProposer, image, labels) -> int:
    from defectcam.core.model import INPUT_MULTIPLE
    from defectcam.core.tiling import TileGrid

    total = 0
    for label in proposer.check_labels(labels):
        m = proposer.predictors[label].metadata
        total += len(TileGrid.build(image.shape[0], image.shape[1], m.tile_size, m.tile_overlap,
                                    multiple=INPUT_MULTIPLE))
    return total
