"""Cost of the proposal log per answered request (docs/feedback-loop.md, BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_log.py [--proposals 20] [--requests 200]
    .venv/bin/python benchmarks/bench_log.py --append BENCHMARKS.md   # writes its section

Baseline: what the handler does anyway after inference (proposals -> CVAT shape dicts).
Logged: the same plus ``log_proposals`` (one committed transaction), given the shape dicts
or the Proposal objects (cheaper for mask answers: no list-of-ints round trip). Also the
sha256 of the image file that identifies the frame (linear in file size).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from report import machine, write_section  # benchmarks/report.py (the script's folder)

from defectcam.core.cvat import proposal_to_cvat_shape
from defectcam.core.postprocess import mask_to_proposals
from defectcam.serving.interaction_log import ProposalLog, log_proposals


def crack_like_proposals(count: int, seed: int = 0):
    """``count`` thin, wandering components on a 2048x1536 frame (realistic outlines)."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((1536, 2048), np.uint8)
    import cv2

    for k in range(count):
        x, y = 60 + (k % 5) * 390, 60 + (k // 5) * 360
        pts = np.cumsum(rng.integers(-12, 13, size=(40, 2)) + [8, 6], axis=0) + [x, y]
        cv2.polylines(canvas, [pts.astype(np.int32)], False, 1, thickness=3)
    return mask_to_proposals(canvas.astype(bool), "crack", min_area=10)[:count]


def per_request_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proposals", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--append", type=Path, default=None,
                        help="write the table as this script's section of this Markdown "
                             "file (replacing the section of an earlier run)")
    args = parser.parse_args()
    host = machine()
    proposals = crack_like_proposals(args.proposals)
    print(f"{len(proposals)} proposals per request, mean area "
          f"{statistics.fmean(p.area for p in proposals):.0f} px, "
          f"{args.requests} requests each; median / p95 ms per request")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for output in ("polygon", "mask"):
            def baseline(output=output):
                return [proposal_to_cvat_shape(p, output) for p in proposals]

            rows.append((f"baseline: shapes ({output})", per_request_ms(baseline, args.requests)))
            variants = [("shape dicts", "NORMAL"), ("Proposal objects", "NORMAL"),
                        ("Proposal objects", "FULL")]
            for what, sync in variants:
                path = Path(tmp) / f"{output}-{what[0]}-{sync}.sqlite"
                log = ProposalLog(path, synchronous=sync)

                def logged(output=output, log=log, what=what):
                    shapes = baseline(output)
                    items = shapes if what == "shape dicts" else proposals
                    log_proposals(log, "0" * 64, (2048, 1536), None, {"output": output},
                                  {"crack": "0" * 64}, items, 1.0)
                    return shapes

                logged()  # creates the file and schema
                rows.append((f"+ log {what}, {sync} ({output})",
                             per_request_ms(logged, args.requests),
                             path.stat().st_size / (args.requests + 1) / 1024))
        for mb in (5, 80):
            data = os.urandom(mb << 20)
            rows.append((f"sha256 of a {mb} MB image file",
                         per_request_ms(lambda data=data: hashlib.sha256(data).hexdigest(), 5)))
    table = ["| what | median ms | p95 ms | KiB per request in the file |", "|---|---|---|---|"]
    for row in rows:
        name, times = row[0], sorted(row[1])
        extra = f"  ({row[2]:.1f} KiB/request in the file)" if len(row) > 2 else ""
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(f"{name:42s} {statistics.median(times):8.2f} {p95:8.2f}{extra}")
        size = f"{row[2]:.1f}" if len(row) > 2 else ""
        table.append(f"| {name} | {statistics.median(times):.2f} | {p95:.2f} | {size} |")
    if args.append:
        header = [
            "## Interaction log overhead", "",
            f"`python benchmarks/bench_log.py --append BENCHMARKS.md`, "
            f"{datetime.date.today().isoformat()}, {host}: {len(proposals)} crack-like "
            f"proposals per request on a 2048x1536 frame, {args.requests} requests each. "
            "Baseline = building the answer's shapes without logging, in the same run.", ""]
        write_section(args.append, "bench_log.py", "\n".join(header + table))
        print(f"wrote {args.append}")


if __name__ == "__main__":
    main()
