"""Request benchmark: seconds per CVAT request (all three defects, T = 2), today vs new defaults.

One run measures, on the same photos: today's engine (fp32, fixed tiles, working scale 1, no
screening) and each speed change added to the row before it, every row with its ratio to the
previous row and to today's; then the defaults as shipped (the weights' own working scale and
screening), at T = 2 and at the weights' own T. The photos: one 2 MP (1600 x 1200) validation
photo per defect (rust: a real 1600 x 1200 photo of the rust validation split; crack and
spalling, whose photos are small, a 1600 x 1200 mosaic of their validation photos at their
own resolution), and a 25 MP frame (the rust photo scaled to 5000 x 5000, as bench_engine.py
does). Each row runs in its own process (a fresh malloc state, its own peak memory), loads
the weights once and warms up, as a worker does before its first frame; photo by photo, every
row in turn, so that a change in the machine's load hits all rows alike. Every row's maps are
compared with today's: the largest map difference and the IoU of the proposals.

The 25 MP frame runs ``--large-tiles`` tiles per defect spread over the frame (every k-th
tile), extrapolated to the whole grid, plus the whole frame's map and proposals (measured);
``--large full`` runs the new defaults on the whole frame instead.

    python benchmarks/bench_request.py                  # writes its sections
    python benchmarks/bench_request.py --quick          # small images: checks the script
    python benchmarks/bench_request.py --resume         # goes on after an interruption

Writes its section of BENCHMARKS.md and the generated table of docs/deploy.md's "Speed" section;
raw figures in runs/bench_request.json (``--from-json`` rewrites both without measuring).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from report import cpu_name, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRIPT = "bench_request.py"
#: docs/deploy.md's generated table is this script's section "speed table" there.
SUMMARY_SECTION = "speed table"
LABELS = ("crack", "spalling", "rust")
ITERATIONS = 2
SIZE = (1200, 1600)  # (height, width) of the 2 MP photos
LARGE = (5000, 5000)
#: CVAT's default CVAT_NUCLIO_DEFAULT_TIMEOUT.
CVAT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Config:
    """One row: how the proposer is built and called."""

    name: str
    change: str
    precision: str = "fp32"
    tiling: str = "fixed"
    #: label -> factor; {} = the weights' own working_scale
    working_scale: dict = field(default_factory=lambda: dict.fromkeys(LABELS, 1.0))
    #: None = the weights' screen_threshold
    screen: bool | None = False
    iterations: int | None = ITERATIONS


TODAY = Config("today", "today's engine: fp32, fixed 512 px tiles, working scale 1, "
                        "no screening")
BF16 = replace(TODAY, name="bf16", change="+ bf16 autocast (forward passes and climb), "
                                          "precision auto on this CPU", precision="auto")
BALANCED = replace(BF16, name="balanced", change="+ balanced tiles", tiling="balanced")
SCALE = replace(BALANCED, name="scale", change="+ working scale 0.5 for rust and spalling",
                working_scale={"crack": 1.0, "spalling": 0.5, "rust": 0.5})
SCREEN = replace(SCALE, name="screen", change="+ tile screening (climb where p >= 0.5)",
                 screen=True)
SHIPPED = replace(BALANCED, name="shipped", change="defaults as shipped: auto precision, "
                  "balanced tiles, the weights' working scale and screening", working_scale={},
                  screen=None)
SHIPPED_OWN_T = replace(SHIPPED, name="shipped-own-t", change="defaults as shipped at the "
                        "weights' own T (what a CVAT call gets)", iterations=None)
CUMULATIVE = (TODAY, BF16, BALANCED, SCALE, SCREEN)
ROWS = (*CUMULATIVE, SHIPPED, SHIPPED_OWN_T)


# ----------------------------------------------------------------------------- photos

def data_root() -> Path:
    from defectcam.config import shared_data_path

    return shared_data_path()


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"{path}: not readable (set DEFECTCAM_SHARED_DATA)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _validation(defect: str) -> list:
    from defectcam.evaluation.run import folder_items

    return sorted(folder_items([defect], "val", data_root()), key=lambda item: item.image_id)


def rust_photo() -> tuple[np.ndarray, str]:
    """The first 1600 x 1200 photo of the rust validation split (by name)."""
    for item in _validation("rust"):
        width, height = _size(item.image_path)
        if (height, width) == SIZE:
            return _rgb(item.image_path), item.image_id
    raise FileNotFoundError("no 1600 x 1200 photo in the rust validation split")


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def mosaic(defect: str) -> tuple[np.ndarray, str]:
    """Validation photos of ``defect`` that hold it (by name), of its source with the largest
    photos, side by side at their own resolution, cut to 1600 x 1200."""
    from collections import Counter

    from defectcam.data.sources import load_defect_mask

    items = [(item, _size(item.image_path)) for item in _validation(defect)]
    counts = Counter(size for _, size in items)
    width, height = max((size for size, n in counts.items() if n >= 12),
                        key=lambda size: size[0] * size[1])
    cols, rows = -(-SIZE[1] // width), -(-SIZE[0] // height)
    canvas = np.zeros((rows * height, cols * width, 3), np.uint8)
    used = 0
    for item, size in items:
        if size != (width, height) or not load_defect_mask(item.pair, defect).any():
            continue
        r, c = divmod(used, cols)
        canvas[r * height : (r + 1) * height, c * width : (c + 1) * width] = _rgb(
            item.image_path)
        used += 1
        if used == rows * cols:
            break
    if used < rows * cols:
        raise ValueError(f"too few {defect} validation photos for a 1600 x 1200 mosaic")
    return (np.ascontiguousarray(canvas[: SIZE[0], : SIZE[1]]),
            f"{cols} x {rows} {defect} validation photos of {width} x {height} holding "
            f"{defect}, cut to 1600 x 1200")


def load_image(spec: str) -> np.ndarray:
    """``crack``, ``spalling``, ``rust``: the 2 MP photos; ``large``: the 25 MP frame;
    ``quick:<defect>``: a 384 x 512 crop of a 2 MP photo (checks the script)."""
    if spec.startswith("quick:"):
        return np.ascontiguousarray(load_image(spec[6:])[:384, :512])
    if spec == "large":
        return cv2.resize(load_image("rust"), LARGE[::-1], interpolation=cv2.INTER_LINEAR)
    if spec == "rust":
        return rust_photo()[0]
    return mosaic(spec)[0]


def describe_image(spec: str) -> str:
    if spec.startswith("quick:"):
        return f"384 x 512 crop of the {spec[6:]} photo"
    if spec == "large":
        return f"the rust photo ({rust_photo()[1]}) scaled to 5000 x 5000"
    if spec == "rust":
        return f"rust validation photo {rust_photo()[1]} (1600 x 1200)"
    return mosaic(spec)[1]


# ----------------------------------------------------------------------------- one row

def build(config: Config, weights: Path):
    from defectcam.config import malloc_tuning
    from defectcam.core.proposer import DefectProposer

    return DefectProposer.from_weights(weights, device="cpu", precision=config.precision,
                                       working_scale=config.working_scale or None,
                                       tiling=config.tiling, malloc_tuning=malloc_tuning())


def union_mask(proposals, label: str, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for p in proposals:
        if p.label == label:
            mask |= p.full_mask(*shape)
    return mask


def spread(tiles: list, count: int) -> list:
    """``count`` tiles spread over the grid (every k-th, row-major)."""
    if count >= len(tiles):
        return tiles
    step = len(tiles) / count
    return [tiles[int(k * step)] for k in range(count)]


def one(args: argparse.Namespace) -> None:
    """Child process: one row on one image; JSON on stdout, maps and masks in an .npz."""
    import torch

    from defectcam.core.predictor import ImageScales
    from defectcam.core.proposer import screen_threshold

    config = Config(**json.loads(args.config))
    proposer = build(config, args.weights)
    image = load_image(args.image)
    warm = np.ascontiguousarray(image[:384, :512])
    proposer.propose(warm, iterations=1, screen=config.screen)  # allocations, first calls
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shape = image.shape[:2]
    out = {"image": args.image, "megapixels": shape[0] * shape[1] / 1e6,
           "threads": torch.get_num_threads(),
           "precision": {k: p.precision for k, p in proposer.predictors.items()},
           "working_size": {k: list(p.working_size(*shape))
                            for k, p in proposer.predictors.items()}}
    if args.subset_tiles:  # a spread subset of the tiles, extrapolated; the map in full
        scales = ImageScales(image)
        seconds, per_defect, tiles = 0.0, {}, {}
        start_cpu = time.process_time()
        for label, predictor in proposer.predictors.items():
            grid = predictor.tile_grid(*shape)
            subset = spread(grid.tiles(), args.subset_tiles)
            threshold = screen_threshold(config.screen, predictor.metadata)
            t0 = time.perf_counter()
            predictor.predict(scales, config.iterations, threshold, tiles=[])
            t1 = time.perf_counter()
            defect_map = predictor.predict(scales, config.iterations, threshold, tiles=subset)
            t2 = time.perf_counter()
            proposer.map_to_proposals(defect_map, None, image)
            t3 = time.perf_counter()
            tile_s = max(t2 - t1 - (t1 - t0), 0.0) / len(subset) * len(grid)
            per_defect[label] = (t1 - t0) + tile_s + (t3 - t2)
            seconds += per_defect[label]
            tiles[label] = [len(subset), len(grid)]
        out.update(seconds=seconds, per_defect=per_defect, tiles=tiles, extrapolated=True,
                   cpu_seconds=None, cpu_seconds_measured=time.process_time() - start_cpu)
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = proposer.propose_detailed(image, iterations=config.iterations,
                                           screen=config.screen)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        np.savez_compressed(
            Path(args.map_out),
            **{f"map_{label}": m.cam_map for label, m in result.maps.items()},
            **{f"mask_{label}": union_mask(result.proposals, label, shape)
               for label in result.maps})
        out.update(seconds=seconds, cpu_seconds=cpu_seconds, per_defect=result.seconds,
                   tiles={label: [len(m.grid), len(m.grid)] for label, m in result.maps.items()},
                   climbed_share={label: float(m.climbed.mean())
                                  for label, m in result.maps.items()},
                   iterations={label: m.iterations for label, m in result.maps.items()},
                   extrapolated=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(peak_rss_mb=peak, rss_before_mb=rss_before)
    print(json.dumps(out))


def measure(config: Config, image: str, args: argparse.Namespace, map_out: Path,
            subset_tiles: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--one", "--config", json.dumps(asdict(config)),
           "--weights", str(args.weights), "--map-out", str(map_out), "--image", image,
           "--subset-tiles", str(subset_tiles)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{config.name} on {image} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{config.name:>14} {image:>14}: {result['seconds']:7.1f} s  ("
          + ", ".join(f"{k} {v:.1f}" for k, v in result["per_defect"].items()) + ")",
          flush=True)
    return result


def compare(ours: Path, base: Path) -> dict[str, list[float]]:
    """Per defect: [max |map - today's map|, IoU of the proposal unions with today's,
    99.9th percentile of |map - today's map|]."""
    a, b = np.load(ours), np.load(base)
    out = {}
    for key in a.files:
        if key.startswith("map_"):
            label = key[4:]
            mine, theirs = a[f"mask_{label}"], b[f"mask_{label}"]
            union = (mine | theirs).sum()
            diff = np.abs(a[key] - b[key])
            out[label] = [float(diff.max()),
                          float((mine & theirs).sum() / union) if union else 1.0,
                          float(np.quantile(diff, 0.999))]
    return out


# ----------------------------------------------------------------------------- the run

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--image", default="", help=argparse.SUPPRESS)
    parser.add_argument("--map-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--subset-tiles", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--quick", action="store_true",
                        help="384 x 512 crops and a 2 MP 'large' frame: checks the script "
                             "(writes nothing unless --out / --summary are given)")
    parser.add_argument("--large", choices=("subset", "full", "skip"), default="subset",
                        help="25 MP frame: --large-tiles tiles per defect, extrapolated "
                             "(default); full: the new defaults on the whole frame")
    parser.add_argument("--large-tiles", type=int, default=8)
    parser.add_argument("--note", default="", help="e.g. 'machine otherwise idle'")
    parser.add_argument("--out", type=Path, default=None, help="default: BENCHMARKS.md")
    parser.add_argument("--summary", type=Path, default=None,
                        help="where the summary table goes (default: docs/deploy.md)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "bench_request")
    parser.add_argument("--resume", action="store_true",
                        help="keep the measurements already in --work-dir")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="write the sections from saved measurements, measure nothing")
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    if not args.quick:
        args.out = args.out or REPO / "BENCHMARKS.md"
        args.summary = args.summary or REPO / "docs" / "deploy.md"
    if args.from_json:
        write_sections(json.loads(args.from_json.read_text()), args)
        return
    images = ["quick:rust"] if args.quick else list(LABELS)
    large_image = "quick:rust" if args.quick else "large"
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    progress_file = work / "progress.json"
    done = json.loads(progress_file.read_text()) if (
        args.resume and progress_file.is_file()) else {}
    if done.get("images", images) != images:
        raise ValueError(f"{progress_file} holds another image set: rerun without --resume")
    done.update(images=images, load_before=list(os.getloadavg()),
                started=done.get("started") or datetime.datetime.now().isoformat("T", "minutes"))

    def step(key: str, run) -> dict:
        if key not in done:
            done[key] = run()
            progress_file.write_text(json.dumps(done))
        return done[key]

    for image in images:  # photo by photo, every row in turn
        for config in ROWS:
            step(f"{config.name}/{image}", lambda c=config, i=image: measure(
                c, i, args, work / f"{c.name}-{i.replace(':', '-')}.npz"))
    for config in ROWS:
        done.setdefault("diffs", {})[config.name] = {
            image: compare(work / f"{config.name}-{image.replace(':', '-')}.npz",
                           work / f"today-{image.replace(':', '-')}.npz") for image in images}
    if args.large != "skip":
        for config in (TODAY, SCREEN, SHIPPED, SHIPPED_OWN_T):
            full = args.large == "full" and config is not TODAY
            step(f"{config.name}/large", lambda c=config, f=full: measure(
                c, large_image, args, work / f"{c.name}-large.npz",
                0 if f else args.large_tiles))
    done["load_after"] = list(os.getloadavg())
    done["descriptions"] = {i: describe_image(i) for i in [*images, large_image]}
    done["large_image"] = large_image
    progress_file.write_text(json.dumps(done))
    raw = REPO / "runs" / "bench_request.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(done, indent=1))
    print(f"raw figures: {raw}")
    write_sections(done, args)


# ----------------------------------------------------------------------------- report

def _flags() -> str:
    try:
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo")
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512"


def per_defect(values: dict, digits: int = 1) -> str:
    return " / ".join(f"{values[lab]:.{digits}f}" for lab in LABELS if lab in values)


def row_figures(done: dict, config: Config) -> dict:
    runs = [done[f"{config.name}/{image}"] for image in done["images"]]
    return {"seconds": [r["seconds"] for r in runs],
            "mean": float(np.mean([r["seconds"] for r in runs])),
            "cpu": float(np.mean([r["cpu_seconds"] for r in runs])),
            "per": {lab: float(np.mean([r["per_defect"][lab] for r in runs])) for lab in LABELS
                    if lab in runs[0]["per_defect"]},
            "peak": max(r["peak_rss_mb"] - r["rss_before_mb"] for r in runs),
            "climbed": {lab: float(np.mean([r["climbed_share"][lab] for r in runs]))
                        for lab in runs[0]["climbed_share"]}}


def write_sections(done: dict, args: argparse.Namespace) -> None:
    import torch

    first = done[f"today/{done['images'][0]}"]
    describe = done["descriptions"]
    header = (f"`python benchmarks/bench_request.py`, run started {done['started']}, CPU: "
              f"{cpu_name()} ({_flags()}), {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{first['threads']} threads; load average before / after: "
              f"{done['load_before'][0]:.1f} / {done['load_after'][0]:.1f}"
              f"{'; ' + args.note if args.note else ''}.")
    today = row_figures(done, TODAY)
    lines = ["## Request: all three defects at T = 2, today's engine vs the new "
             "defaults", "", header,
             f"Weights: {args.weights.name}/ (crack, spalling, rust). A request = the three "
             "defects at AdvCAM T = 2 on one photo, as CVAT asks (one decode; the defects "
             "share the shrunk copy at a working scale). Photos: "
             + "; ".join(describe[i] for i in done["images"]) + ". Each measurement runs in "
             "its own process after a warm-up; photo by photo, every row in turn. Rows are "
             "cumulative down to screening; CPU s = processor time of the process (all "
             "threads).", "",
             "| row | s / request (crack, spalling, rust photo) | mean s | vs previous row | "
             "vs today | CPU s | crack / spalling / rust s | map diff vs today: max (99.9 %) | "
             "min proposal IoU vs today | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    previous = None
    for config in ROWS:
        if config is SHIPPED:
            previous = None
        f = row_figures(done, config)
        diffs = done["diffs"][config.name]
        diff = max(d[lab][0] for d in diffs.values() for lab in d)
        tail = max(d[lab][2] for d in diffs.values() for lab in d)
        iou = min(d[lab][1] for d in diffs.values() for lab in d)
        ratio = f"{previous / f['mean']:.2f}x" if previous else ""
        lines.append(
            f"| {config.change} | {', '.join(f'{s:.1f}' for s in f['seconds'])} | "
            f"{f['mean']:.1f} | {ratio} | "
            f"{today['mean'] / f['mean']:.2f}x | {f['cpu']:.0f} | {per_defect(f['per'])} | "
            f"{diff:.3f} ({tail:.3f}) | {iou:.4f} | {f['peak']:.0f} |")
        previous = f["mean"]
    screen = row_figures(done, SCREEN)
    lines += ["", "Map difference: the largest |difference| of the normalised maps (in [0, 1]) "
              "of any defect on any photo against today's engine, and its 99.9th percentile over "
              "the pixels; proposal IoU: the smallest "
              "IoU of a defect's proposal union with today's. bf16 and balanced tiles change "
              "the maps by rounding only; a working scale and screening change them by "
              "design: their quality price is measured by `benchmarks/quality_price.py` "
              "(section \"Quality price\"), not by these two columns. Tiles climbed with "
              "screening (mean over the photos): "
              + ", ".join(f"{lab} {screen['climbed'][lab]:.0%}" for lab in LABELS) + ".", ""]
    large = {c.name: done.get(f"{c.name}/large") for c in (TODAY, SCREEN, SHIPPED,
                                                           SHIPPED_OWN_T)}
    if all(large.values()):
        lines += [f"25 MP frame ({describe[done['large_image']]}), the three defects:", "",
                  "| engine | s / request | crack / spalling / rust s | tiles run / grid |",
                  "|---|---|---|---|"]
        for config in (TODAY, SCREEN, SHIPPED, SHIPPED_OWN_T):
            r = large[config.name]
            how = "extrapolated" if r["extrapolated"] else "whole frame"
            lines.append(f"| {config.change} ({how}) | {r['seconds']:.0f} | "
                         f"{per_defect(r['per_defect'], 0)} | "
                         + ", ".join(f"{a}/{b}" for a, b in r["tiles"].values()) + " |")
        lines += ["", "Extrapolated: the tiles run (spread over the frame, every k-th) x "
                  "(tiles in the grid / tiles run), plus the whole frame's map buffers and "
                  "proposals, measured. Speed-up on 25 MP, all changes: "
                  f"{large['today']['seconds'] / large['screen']['seconds']:.2f}x; defaults "
                  f"as shipped: {large['today']['seconds'] / large['shipped']['seconds']:.2f}x.",
                  ""]
    section = "\n".join(lines)
    if args.out:
        write_section(args.out, SCRIPT, section)
        print(f"wrote {args.out}")
    else:
        print(section)
    summary = summary_table(done, large if all(large.values()) else None, header)
    if args.summary:
        write_section(args.summary, SCRIPT, summary, SUMMARY_SECTION)
        print(f"wrote {args.summary}")
    else:
        print(summary)


def within(seconds_2mp: float, seconds_25mp: float | None, limit: float) -> str:
    """The largest frame answered within ``limit`` s, from a line through the two sizes."""
    if seconds_25mp is None:
        return f"{limit / seconds_2mp * 1.92:.0f} MP (assumed proportional)"
    mp2, mp25 = SIZE[0] * SIZE[1] / 1e6, LARGE[0] * LARGE[1] / 1e6
    slope = (seconds_25mp - seconds_2mp) / (mp25 - mp2)
    fixed = seconds_2mp - slope * mp2
    return f"{max(limit - fixed, 0) / slope:.0f} MP" if slope > 0 else "any"


def summary_table(done: dict, large: dict | None, header: str) -> str:
    today, screen = row_figures(done, TODAY), row_figures(done, SCREEN)
    shipped, own = row_figures(done, SHIPPED), row_figures(done, SHIPPED_OWN_T)
    own_t = sorted({t for r in (done[f"shipped-own-t/{i}"] for i in done["images"])
                    for t in r["iterations"].values()})
    rows = [("today's engine (fp32, fixed tiles)", today, large and large["today"]),
            ("all speed changes (+ working scale 0.5 for rust and spalling, screening)",
             screen, large and large["screen"]),
            ("defaults as shipped, T = 2", shipped, large and large["shipped"]),
            (f"defaults as shipped, the weights' own T ({', '.join(map(str, own_t))})", own,
             large and large["shipped-own-t"])]
    lines = [f"Generated by {header}", "",
             "| engine, three defects per request | 2 MP photo | 25 MP frame | largest "
             f"frame within CVAT's {CVAT_TIMEOUT:.0f} s |", "|---|---|---|---|"]
    for name, figures, big in rows:
        big_s = big["seconds"] if big else None
        lines.append(f"| {name} | {figures['mean']:.0f} s | "
                     + (f"{big_s:.0f} s" if big_s else "-")
                     + f" | {within(figures['mean'], big_s, CVAT_TIMEOUT)} |")
    lines += ["", "Largest frame: a line through the 2 MP and 25 MP figures, solved for "
              f"{CVAT_TIMEOUT:.0f} s (no deadline; with `DEFECTCAM_DEADLINE` larger frames "
              "are answered in time with less work)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
