"""``defectcam propose``: photos -> CVAT-shaped JSON, overlay PNG and (optionally) heat maps.

The command-line face of the request contract: the same options, bounds and defaults as the
CVAT function (``defectcam.core.options``), the same service (confidence filter, label guard,
interaction log), so ``<name>.cvat.json`` is what the function answers for that photo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from defectcam.config import (
    CAM_THRESHOLD_ENV,
    CONFIDENCE_THRESHOLD_ENV,
    ITERATIONS_ENV,
    LABELS_ENV,
    LOG_DB_ENV,
    MAX_ITERATIONS_ENV,
    MAX_PIXELS_ENV,
    OUTPUT_ENV,
    PRECISION_NAMES,
    SCREEN_ENV,
    WEIGHTS_ENV,
    Settings,
    parse_log_path,
    resolve_weights,
)
from defectcam.core.device import resolve_device
from defectcam.core.image_io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageInputError,
    decode_image,
)
from defectcam.core.options import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_ITERATIONS,
    OPTION_NAMES,
    OUTPUT_TYPES,
    Limits,
    ProposeOptions,
    Spelling,
    split_labels,
)

#: The command's flags: each option's name with dashes (``--min-confidence``).
CLI = Spelling({name: "--" + name.replace("_", "-") for name in OPTION_NAMES})


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("propose", help="propose defects on photos (CVAT JSON + overlay PNG)",
                       description="Propose defects on photos: for each, <name>.cvat.json (the "
                       "shapes the CVAT function answers) and <name>.overlay.png.")
    p.add_argument("images", nargs="+", type=Path,
                   help="image files (JPEG, PNG, ...) or folders (every image file inside: "
                        f"{', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--weights", default=None,
                   help="weights folder or comma-separated .safetensors files (default: "
                        f"${WEIGHTS_ENV}, else the repository's weights/)")
    options = p.add_argument_group("request options (as the CVAT function's)")
    options.add_argument("--min-confidence", type=float, default=None,
                         help="drop proposals whose confidence is below this; CVAT's "
                              f"'threshold' (default: ${CONFIDENCE_THRESHOLD_ENV}, else "
                              f"{DEFAULT_MIN_CONFIDENCE:g})")
    options.add_argument("--iterations", type=int, default=None,
                         help=f"AdvCAM steps T, 0..{MAX_ITERATIONS}; 0 = plain Grad-CAM "
                              f"(default: ${ITERATIONS_ENV}, else the weights' value: "
                              f"'iterations' in weights/<defect>.json; at most "
                              f"${MAX_ITERATIONS_ENV})")
    options.add_argument("--cam-threshold", type=float, default=None,
                         help="binarisation threshold of the normalised map, in (0, 1) "
                              f"(default: ${CAM_THRESHOLD_ENV}, else the weights' value: "
                              "'cam_threshold' in weights/<defect>.json)")
    options.add_argument("--labels", default=None,
                         help="comma-separated subset, e.g. crack,rust (default: "
                              f"${LABELS_ENV}, else every label of the weights)")
    options.add_argument("--output", choices=OUTPUT_TYPES, default=None,
                         help=f"CVAT shape type (default: ${OUTPUT_ENV}, else polygon)")
    options.add_argument("--screen", action=argparse.BooleanOptionalAction, default=None,
                         help="skip the climb on tiles the classifier calls negative "
                              f"(default: ${SCREEN_ENV}, else each classifier's "
                              "screen_threshold; 0 there: climb everywhere)")
    p.add_argument("--heatmaps", action="store_true",
                   help="also write one heat map per defect (default: no)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 or auto (default: $DEFECTCAM_DEVICE, else auto: "
                        "cuda if present)")
    p.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                   help="auto: bf16 autocast on CPUs with native bf16 and bf16-capable GPUs, "
                        "else fp32; fp16: CUDA only (default: $DEFECTCAM_PRECISION, else auto)")
    p.add_argument("--tile-batch", type=int, default=None,
                   help="tiles per forward pass (default: 8 on CUDA, 2 on CPU)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help=f"largest photo (width x height) (default: ${MAX_PIXELS_ENV}, else "
                        f"{DEFAULT_MAX_PIXELS})")
    p.add_argument("--log", default=None,
                   help="interaction log (SQLite) for the feedback loop; 'off' for none "
                        f"(default: ${LOG_DB_ENV}, else runs/defectcam-log.sqlite)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (default: show them)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings with the options given on the command line."""
    weights = args.weights
    if weights is not None and "," in weights:
        weights = tuple(Path(w.strip()) for w in weights.split(",") if w.strip())
    elif weights is not None:
        weights = resolve_weights(weights)
    given = {"weights": weights, "device": args.device, "precision": args.precision,
             "max_pixels": args.max_pixels}
    given = {key: value for key, value in given.items() if value is not None}
    if args.log is not None:
        given["log_db"] = parse_log_path(args.log)
    return Settings.from_env().override("command line", **given)


def options_from_args(args: argparse.Namespace, limits: Limits | None = None
                      ) -> ProposeOptions:
    """The request options among the command's parsed arguments.

    Args:
        args: ``defectcam propose``'s arguments (``labels`` comma-separated).
        limits: the operator's caps and defaults (from the environment's settings).

    Returns:
        The validated options.

    Raises:
        OptionError: a value is wrong, named by its flag (``--iterations``).
    """
    values = {option: getattr(args, option, None) for option in OPTION_NAMES}
    values["labels"] = split_labels(values["labels"])
    return ProposeOptions.build(values, CLI, limits)


def run(args: argparse.Namespace) -> int:
    # Everything the user can get wrong is checked before the model loads.
    settings = settings_from_args(args)
    options = options_from_args(args, settings.limits())
    if args.tile_batch is not None and args.tile_batch < 1:
        raise ValueError(f"--tile-batch must be >= 1, got {args.tile_batch}")
    if settings.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {settings.max_pixels}")
    images = image_paths(args.images)
    resolve_device(settings.device, "--device")  # one line, not torch's traceback

    from tqdm import tqdm  # the heavy part: torch and the weights

    from defectcam.core.overlay import draw_proposals, heatmap, write_rgb
    from defectcam.core.weights import WeightsError
    from defectcam.serving.service import ProposalService

    try:
        service = ProposalService.from_settings(settings, tile_batch=args.tile_batch)
    except WeightsError as exc:
        raise ValueError(str(exc)) from exc
    service.check(options, CLI)  # labels the loaded weights lack
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(images, desc="images", unit="img", disable=args.no_progress):
        try:
            data = path.read_bytes()
            decoded = decode_image(data, settings.max_pixels, name=str(path),
                                   limit_name="--max-pixels", min_side=1)
        except (OSError, ImageInputError) as exc:
            tqdm.write(f"{path}: skipped: {exc}", file=sys.stderr)
            failures += 1
            continue
        image = decoded.rgb
        with tqdm(total=service.tile_count(*image.shape[:2], options), desc=path.name,
                  unit="tile",
                  leave=False, disable=args.no_progress) as bar:
            answer = service.propose(image, options.replace(name=path.name), face="cli",
                                     image_sha256=hashlib.sha256(data).hexdigest(),
                                     progress=bar.update)
        stem = args.out / path.stem
        stem.with_suffix(".cvat.json").write_text(json.dumps(answer.shapes()) + "\n")
        write_rgb(stem.with_suffix(".overlay.png"), draw_proposals(image, answer.proposals))
        if args.heatmaps:
            for label, defect_map in answer.maps.items():
                write_rgb(args.out / f"{path.stem}.{label}.heatmap.png",
                          heatmap(image, defect_map.cam_map))
        counts = {lab: sum(p.label == lab for p in answer.proposals) for lab in answer.maps}
        tqdm.write(f"{path.name}: {image.shape[1]}x{image.shape[0]}, "
                   f"{len(answer.proposals)} proposals {counts} "
                   f"({answer.left_out} below --min-confidence {options.min_confidence:g} "
                   f"left out) in {answer.seconds:.1f} s -> {stem}.cvat.json, "
                   f"{stem}.overlay.png")
    return 1 if failures else 0


def image_paths(paths: list[Path]) -> list[Path]:
    """The photos to propose on: each file as given, each folder's image files (by suffix,
    sorted by name; not its subfolders).

    Args:
        paths: files and folders from the command line.

    Returns:
        The image files, in the order given.

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no image file.
    """
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise FileNotFoundError(f"no such image file or folder: {', '.join(missing)}")
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        inside = sorted(f for f in path.iterdir()
                        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not inside:
            raise FileNotFoundError(f"{path} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
        files += inside
    return files

