"""The click interactor: seconds per click on a 2 MP and a 25 MP frame, each defect.

Frames: a real validation photo of each defect (crack, spalling, rust) tiled to 1600 x 1200
(2 MP) and 5000 x 5000 (25 MP), its truth tiled alike; the clicks are the most interior
points of ``--clicks`` truth instances near the frame's centre (one click per interaction,
as an annotator's first click). Shipped weights, CPU, one process.

Three rows per defect and frame, on the same clicks:

- ``interactor``: ``core.interact.interact`` with the weights' interactor settings (sidecar
  ``interact``), as the function answers;
- ``previous settings``: the same code with the defaults the interactor had before the
  settings moved into the sidecars (the detector's threshold and dilation, the window
  growing up to 6 times with no cap on its side);
- ``click baseline``: the learning-free evidence rule chosen by the same click machinery
  (no classifier), as ``defectcam evaluate --interactive`` runs it.

    python benchmarks/bench_interactor.py            # writes its section of BENCHMARKS.md
    python benchmarks/bench_interactor.py --quick    # small frames, one click: checks the script
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np
from report import machine, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from defectcam.config import shared_data_path  # noqa: E402

DATA = shared_data_path()
#: One validation photo per defect (``split_source`` seed 0), each holding the defect.
PHOTOS = {"crack": "deepcrack", "spalling": "phinet", "rust": "corrosion"}
FRAMES = {"2 MP": (1600, 1200), "25 MP": (5000, 5000)}
QUICK = {"0.2 MP": (512, 384)}


def photo_for(defect: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, RGB, truth) of the first validation photo of ``defect`` whose truth holds an
    instance of at least 400 px."""
    from defectcam.evaluation.metrics import truth_instances
    from defectcam.evaluation.run import folder_items, load_item

    for item in folder_items([defect], "val", sources=[PHOTOS[defect]]):
        loaded = load_item(item, 1024)
        _, kept, _ = truth_instances(loaded.truth, 400)
        if kept:
            return item.image_id, loaded.image, loaded.truth
    raise FileNotFoundError(f"no {defect} validation photo with truth under {DATA}")


def tiled(array: np.ndarray, width: int, height: int) -> np.ndarray:
    reps = (-(-height // array.shape[0]), -(-width // array.shape[1])) + (1,) * (array.ndim - 2)
    return np.ascontiguousarray(np.tile(array, reps)[:height, :width])


def central_clicks(truth: np.ndarray, count: int) -> list[tuple[float, float]]:
    """The most interior points of the ``count`` truth instances nearest the frame's centre."""
    from defectcam.evaluation.interactive import interior_point
    from defectcam.evaluation.metrics import truth_instances

    labels, kept, _ = truth_instances(truth, 400)
    height, width = truth.shape
    points = [interior_point(labels == k) for k in kept]
    points.sort(key=lambda p: (p[0] - width / 2) ** 2 + (p[1] - height / 2) ** 2)
    return [(float(x), float(y)) for x, y in points[:count]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--clicks", type=int, default=3, help="clicks per defect and frame")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args()

    import torch

    from defectcam.core.interact import Clicks, InteractSettings, interact
    from defectcam.core.proposer import DefectProposer
    from defectcam.evaluation.interactive import baseline_method

    threads = torch.get_num_threads()
    line = machine(threads)
    started = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M")
    frames = QUICK if args.quick else FRAMES
    clicks_per = 1 if args.quick else args.clicks
    proposer = DefectProposer.from_weights(args.weights)
    rows, photos = [], []
    for defect in ("crack", "spalling", "rust"):
        predictor = proposer.predictors[defect]
        md = predictor.metadata
        name, image, truth = photo_for(defect)
        photos.append(f"{defect}: {name} ({image.shape[1]} x {image.shape[0]})")
        methods = {
            "interactor (sidecar settings)": lambda im, c, p=predictor: interact(p, im, c),
            "previous settings": lambda im, c, p=predictor: interact(
                p, im, c, settings=InteractSettings()),
            "click baseline": baseline_method(defect, md.tile_size, md.working_max_side,
                                              InteractSettings.from_dict(md.interact)),
        }
        warm = tiled(image, 640, 480)
        interact(predictor, warm, Clicks(((320.0, 240.0),)))  # model and allocator warm-up
        for frame, (width, height) in frames.items():
            frame_image, frame_truth = tiled(image, width, height), tiled(truth, width, height)
            points = central_clicks(frame_truth, clicks_per)
            for method, run in methods.items():
                seconds, windows, sides = [], [], []
                for point in points:
                    result = run(frame_image, Clicks((point,)))
                    seconds.append(result.seconds)
                    windows.append(result.windows)
                    x1, y1, x2, y2 = result.window
                    sides.append(f"{x2 - x1}x{y2 - y1}")
                rows.append((defect, frame, method, len(points), float(np.mean(seconds)),
                             float(np.max(seconds)), windows, sides))
                print(f"{defect} {frame} {method}: {np.mean(seconds):.2f} s/click "
                      f"(max {np.max(seconds):.2f}), windows {windows}", flush=True)
    load_after = os.getloadavg()[0]

    lines = ["## Click interactor: seconds per click", "",
             f"`python benchmarks/bench_interactor.py{' --quick' if args.quick else ''}`, "
             f"run started {started}, {line}; {load_after:.1f} at the end. The machine is "
             f"shared: the lead's training holds one of the two cores throughout (load "
             f"average above 1 before anything of this run), so one click gets one core.",
             "",
             "Shipped weights (weights/). Frames: one real validation photo per defect tiled "
             "to the frame's size (" + "; ".join(photos) + "), truth tiled alike; clicks at "
             f"the most interior points of the {clicks_per} truth instances nearest the "
             "frame's centre, one interaction each. `interactor`: the weights' interactor "
             "settings (sidecar `interact`); `previous settings`: the defaults before them "
             "(the detector's threshold and dilation, window growing up to 6 times with no "
             "cap); `click baseline`: the learning-free evidence rule on the same click "
             "machinery. Windows: how many windows were computed per click, and the last "
             "one's size (frame pixels).",
             "",
             "| defect | frame | method | clicks | mean s / click | max s | windows "
             "| last window |",
             "|---|---|---|---|---|---|---|---|"]
    for defect, frame, method, n, mean, worst, windows, sides in rows:
        lines.append(f"| {defect} | {frame} | {method} | {n} | {mean:.2f} | {worst:.2f} | "
                     f"{', '.join(map(str, windows))} | {', '.join(sides)} |")
    if not args.quick:
        write_section(args.out, "bench_interactor.py", "\n".join(lines))
        print(f"-> {args.out}")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
