"""Training throughput on this machine: crops per second of the real training step.

    .venv/bin/python benchmarks/bench_training.py            # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/bench_training.py --quick    # 2 steps per row, prints only

Crops are cut from real crack photos of ../shared/data (the training data's own pixels),
augmented and batched by the training pipeline's ``ClickCropDataset`` + ``DataLoader``, and
each step is ``defectcam.training.loop.fit_step`` (the loop's own code: normalise, forward,
BCE, backward, AdamW). Rows run in one process, one after the other, on the same crops:

- ``fp32``: float32, default (contiguous) memory format: the round-2 training step;
- ``fp32 + channels_last``: the memory format oneDNN prefers for convolutions;
- ``bf16 + channels_last``: bf16 autocast (what ``--precision auto`` picks on a CPU with
  native bf16): today's default.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from report import machine, write_section  # benchmarks/report.py (the script's folder)
from torch.utils.data import DataLoader

from defectcam.core.device import cpu_supports_bf16
from defectcam.core.model import build_classifier
from defectcam.core.weights import WeightsMetadata
from defectcam.data.crops import ClickCropDataset, CropSet, read_rgb
from defectcam.data.sources import pairs_for_defect
from defectcam.training.loop import fit_step

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "bench_training.py"
ROWS = (("fp32", False, None), ("fp32 + channels_last", True, None),
        ("bf16 + channels_last", True, torch.bfloat16))


def real_crops(size: int, count: int, seed: int = 0) -> CropSet:
    """``count`` random ``size`` px windows of real crack photos, half labelled positive."""
    rng = np.random.default_rng(seed)
    pairs = pairs_for_defect("crack")
    crops = []
    for k in rng.choice(len(pairs), size=min(16, len(pairs)), replace=False):
        image = read_rgb(pairs[int(k)].image)
        h, w = image.shape[:2]
        for _ in range(-(-count // 16)):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops.append(image[y:y + size, x:x + size])
    crops = np.stack(crops[:count])
    n = len(crops)
    return CropSet(crops, (np.arange(n) % 2).astype(np.float32), np.zeros((n, 2), int),
                   np.zeros((n, 2), int), ["bench"] * n)


def steps_per_second(crop_set: CropSet, channels_last: bool, amp, steps: int, warmup: int,
                     batch: int) -> tuple[float, float]:
    """(median seconds per step, crops per second) for one configuration."""
    torch.manual_seed(0)
    model = build_classifier(seed=0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dataset = ClickCropDataset(crop_set, augment=True, layout="hwc")
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    batches = iter(_forever(loader))
    meta = WeightsMetadata(label="crack")
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        fit_step(model, optimizer, batches, 1, torch.device("cpu"), meta, amp)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return step, batch / step


def _forever(loader):
    while True:
        yield from loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,96", help="crop sides in px")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup = 2, 1
    host = machine()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        crop_set = real_crops(size, args.batch * 4)
        previous = None
        for name, channels_last, amp in ROWS:
            step, rate = steps_per_second(crop_set, channels_last, amp, args.steps,
                                          args.warmup, args.batch)
            ratio = "" if previous is None else f"{previous / step:.2f}x"
            results.append((size, name, step, rate, ratio))
            print(f"{size} px {name:22s} {step:.3f} s/step {rate:6.1f} crops/s {ratio}",
                  flush=True)
            previous = step
    if args.quick:
        return
    lines = ["## Training throughput", "",
             f"`python benchmarks/{SCRIPT}`, {datetime.date.today().isoformat()}, {host}; "
             f"bf16 native on this CPU: {cpu_supports_bf16()}.", "",
             f"One training step = {args.batch} augmented crops of real crack photos through "
             "`ClickCropDataset` + `DataLoader` and `training.loop.fit_step` (forward, BCE, "
             f"backward, AdamW); median of {args.steps} steps after {args.warmup} warm-up, "
             "the rows one after the other in one process.", "",
             "| crop | setting | s / step | crops / s | vs previous row | vs fp32 |",
             "|---|---|---|---|---|---|"]
    for size, name, step, rate, ratio in results:
        fp32 = next(r for r in results if r[0] == size and r[1] == "fp32")
        lines.append(f"| {size} px | {name} | {step:.3f} | {rate:.1f} | {ratio or '-'} | "
                     f"{fp32[2] / step:.2f}x |")
    write_section(args.out, SCRIPT, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
