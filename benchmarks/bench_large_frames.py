"""Large frames: peak memory and time of one request as the Nuclio function answers it.

A 2 MP photo (the baseline, the issue's 1600 x 1200 frame), a 45 MP drone frame
(8192 x 5460) and a 100 MP medium-format frame (11648 x 8736), each the real validation photo
``rust/corrosion/images/148.jpg`` scaled up and saved as a JPEG (quality 90), sent as the
base64 body CVAT sends. Shipped weights, all three defects, CPU.

Two rows per frame, each in its own subprocess (so that its peak RSS is its own):

- ``T=0, N tiles``: the request without a deadline (decode, one map per defect, proposals,
  shapes) but with only the first N tiles of each defect's grid run (``predict(tiles=...)``,
  the engine benchmark's subset path): every full-size buffer is allocated as for the whole
  frame, so the peak is the request's; the time for every tile is extrapolated (tile time
  measured x tiles, plus the rest as measured).
- ``deadline D s``: the service with ``DEFECTCAM_DEADLINE=D`` (the yaml files' 100 s), as
  CVAT's calls run: when it answered, the tiles it covered, its peak.

Peak memory: peak RSS of the process during the request (VmHWM, reset before it) minus its
RSS before the request (model loaded, request body in memory).

    python benchmarks/bench_large_frames.py            # writes its section of BENCHMARKS.md
    python benchmarks/bench_large_frames.py --quick    # small frames, to check the script
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import machine, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from defectcam.config import shared_data_path  # noqa: E402

DATA = shared_data_path()  # ../shared/data or $DEFECTCAM_SHARED_DATA
PHOTO = DATA / "rust/corrosion/images/148.jpg"  # 1600x1200, validation split
FRAMES = {"2mp": (1600, 1200), "45mp": (8192, 5460), "100mp": (11648, 8736)}
QUICK = {"2mp": (400, 300), "45mp": (1024, 683)}
THREADS = os.environ.get("OMP_NUM_THREADS", "2")  # torch threads of each measuring process


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Start the peak RSS (VmHWM) afresh: model loading and the deadline's warm-up climb
    must not count as the request's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_body(size: tuple[int, int], folder: Path) -> Path:
    """The request body's base64 text of the photo scaled to ``size``, in a file."""
    import cv2

    image = cv2.imread(str(PHOTO))
    if image.shape[1::-1] != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    path = folder / f"{size[0]}x{size[1]}.b64"
    path.write_bytes(base64.b64encode(data.tobytes()))
    return path


# ----------------------------------------------------------------------------- one run


def measure(body_path: Path, mode: str, tiles: int, deadline: float) -> dict:
    """One request in this process (run by the parent in a subprocess)."""
    import hashlib

    from defectcam.config import Settings
    from defectcam.core.image_io import decode_base64, decode_image
    from defectcam.core.options import ProposeOptions
    from defectcam.serving.service import ProposalService

    settings = Settings(weights=REPO / "weights", device="cpu", log_db=None,
                        deadline=deadline if mode == "deadline" else None)
    service = ProposalService.from_settings(settings)
    body = {"image": body_path.read_text()}
    reset_peak()
    before = rss_mb()
    start = time.perf_counter()
    data = decode_base64(body["image"])
    decoded = decode_image(data, settings.max_pixels)
    hashlib.sha256(data).hexdigest()
    decoded_at = time.perf_counter()
    rgb = decoded.rgb
    height, width = rgb.shape[:2]
    options = ProposeOptions.build({}, limits=service.limits)
    out = {"megapixels": width * height / 1e6, "size": f"{width}x{height}",
           "rss_before_mb": before, "decode_s": decoded_at - start}
    if mode == "deadline":
        answer = service.propose(rgb, options, started=start)
        report = answer.deadline
        out.update(seconds=time.perf_counter() - start, shapes=len(answer.shapes()),
                   tiles={r.label: [r.tiles_run, r.tiles] for r in report.labels},
                   steps={r.label: r.to_log()["steps"] for r in report.labels})
    else:
        total_tiles, tile_s, map_s = 0, 0.0, 0.0
        for predictor in service.proposer.predictors.values():
            grid = predictor.tile_grid(height, width)
            subset = grid.tiles()[: min(tiles, len(grid))]
            t0 = time.perf_counter()
            predictor.predict(rgb, 0, tiles=[])  # the map's own cost, paid once per defect
            t1 = time.perf_counter()
            defect_map = predictor.predict(rgb, 0, tiles=subset)
            t2 = time.perf_counter()
            service.proposer.map_to_proposals(defect_map, None, rgb)
            map_s += time.perf_counter() - t2 + (t1 - t0)
            tile_s += max(t2 - t1 - (t1 - t0), 0.0) / len(subset) * len(grid)
            total_tiles += len(grid)
        out.update(seconds=out["decode_s"] + tile_s + map_s, extrapolated=True,
                   tiles_measured=sum(min(tiles, len(p.tile_grid(height, width)))
                                      for p in service.proposer.predictors.values()),
                   tiles_total=total_tiles, proposals_s=map_s)
    out["peak_rss_mb"] = peak_mb()
    out["peak_extra_mb"] = out["peak_rss_mb"] - before
    return out


def run_child(body_path: Path, mode: str, tiles: int, deadline: float) -> dict:
    command = [sys.executable, __file__, "--child", str(body_path), "--mode", mode,
               "--tiles", str(tiles), "--deadline", str(deadline)]
    env = {**os.environ, "OMP_NUM_THREADS": THREADS}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} on {body_path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def report(rows: list[dict], args, host: str) -> str:
    base = {r["mode"]: r for r in rows if r["frame"] == rows[0]["frame"]}
    lines = [
        "## Large frames: memory and the deadline", "",
        f"`python benchmarks/bench_large_frames.py`, {datetime.date.today().isoformat()}, "
        f"{host}.", "",
        "One request as the Nuclio function answers it (base64 body -> decode -> three "
        "defects -> proposals), shipped weights, the photo `rust/corrosion/images/148.jpg` "
        "scaled up and saved as a JPEG (quality 90). Peak: peak RSS during the request minus "
        "the RSS before it (model loaded, body in memory). `T=0, N tiles`: no deadline, only "
        f"the first N = {args.tiles} tiles of each defect run, time extrapolated to every tile "
        "(every full-size buffer is allocated, so the peak is the whole request's; the "
        "map's own cost is timed apart and counted once). "
        f"`deadline {args.deadline:g} s`: `DEFECTCAM_DEADLINE={args.deadline:g}` as in the yaml "
        "files; tiles covered per defect (all at T=0 here unless the steps say otherwise).", "",
        "Worker peak: the process's peak RSS during the request (model and body included). "
        "Request's own: that peak minus the RSS before the request. A worker with a deadline "
        "measured its tile costs at start (one climb): the CPU malloc tuning keeps that "
        "memory in the heap and the request reuses it, so its own share is small there.", "",
        "| frame | run | answer s | tiles run / all | worker peak MB | peak vs 2 MP | "
        "request's own MB | decode s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o = r["result"]
        if r["mode"] == "deadline":
            covered = sum(v[0] for v in o["tiles"].values())
            total = sum(v[1] for v in o["tiles"].values())
            seconds = f"{o['seconds']:.1f}"
            run = f"deadline {args.deadline:g} s"
        else:
            covered, total = o["tiles_measured"], o["tiles_total"]
            seconds = f"{o['seconds']:.0f} (extrapolated)"
            run = f"T=0, {args.tiles} tiles"
        ratio = o["peak_rss_mb"] / base[r["mode"]]["result"]["peak_rss_mb"]
        lines.append(f"| {r['frame']} ({o['size']}, {o['megapixels']:.1f} MP) | {run} | "
                     f"{seconds} | {covered} / {total} | {o['peak_rss_mb']:.0f} | "
                     f"{ratio:.2f}x | {o['peak_extra_mb']:.0f} | {o['decode_s']:.1f} |")
    lines += ["", "Deadline runs, steps per defect (steps -> tiles): " + "; ".join(
        f"{r['frame']}: {json.dumps(r['result']['steps'])}" for r in rows
        if r["mode"] == "deadline")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small frames, to check the script")
    parser.add_argument("--tiles", type=int, default=4, help="tiles per defect (T=0 rows)")
    parser.add_argument("--deadline", type=float, default=100.0)
    parser.add_argument("--frames", default=None, help="comma-separated subset of the frames")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="subset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.mode, args.tiles, args.deadline)))
        return
    if not PHOTO.is_file():
        sys.exit(f"needs {PHOTO} (../shared/data, or set DEFECTCAM_SHARED_DATA)")
    frames = QUICK if args.quick else FRAMES
    if args.frames:
        frames = {k: frames[k] for k in args.frames.split(",")}
    host = machine(int(THREADS))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, size in frames.items():
            body = make_body(size, Path(folder))
            for mode in ("subset", "deadline"):
                result = run_child(body, mode, args.tiles, args.deadline)
                print(name, mode, json.dumps(result), flush=True)
                rows.append({"frame": name, "mode": mode, "result": result})
    section = report(rows, args, host)
    print(section)
    if not args.quick:
        write_section(args.out, "bench_large_frames.py", section)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
