"""The deadline as an operator sees it: sequences of frames through one warm Nuclio worker.

Each sequence runs in a fresh process (a freshly started function): ``main.handler`` with
``function.yaml``'s environment (the shipped weights, CPU), called with the base64 body CVAT
sends, the frames one after another. Frames are a real photo (``rust/corrosion/images/
148.jpg``) tiled to the frame size and saved as a JPEG (quality 90); ``8x8`` is a tiny frame.
For each frame: the wall time of the call (decoding to JSON) against the deadline, and per
defect the share of its tiles that ran, the steps they ran at and the size the proposals were
made at, read from the interaction log record the call wrote.

The baseline in the same run is the code before the deadline became a planner (``--baseline
COMMIT``: its ``defectcam``, ``main.py`` and ``model_handler.py``, unpacked from git into a
temporary folder), run on the same frames.

    python benchmarks/bench_deadline.py                    # the full run (see --help)
    python benchmarks/bench_deadline.py --short            # 2 MP and one large frame
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import machine, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
#: The photo the frames are made of (1600x1200, validation split), under the shared data.
PHOTO = "rust/corrosion/images/148.jpg"
SIZES = {"8x8": (8, 8), "2mp": (1600, 1200), "25mp": (6000, 4200), "36mp": (7360, 4912),
         "45mp": (8192, 5460), "100mp": (11648, 8736)}
#: The sequences of the full run (each in a fresh worker); ``busy``: competing processes.
FULL = [("fresh, 45 MP first", ["45mp"], 0), ("tiny, then 45 MP", ["8x8", "45mp"], 0),
        ("2 to 100 MP", ["2mp", "25mp", "45mp", "100mp"], 0),
        ("2 to 100 MP, two busy processes", ["2mp", "25mp", "45mp", "100mp"], 2)]
SHORT = [("tiny, then large", ["8x8", "36mp"], 0), ("2 MP, then large", ["2mp", "36mp"], 0)]


def function_env(deadline: float, log_db: Path, weights: Path = REPO / "weights"
                 ) -> dict[str, str]:
    """``function.yaml``'s environment, with ``weights``, a temporary log and the given
    deadline."""
    import yaml

    spec = yaml.safe_load((REPO / "function.yaml").read_text())["spec"]
    env = {item["name"]: str(item.get("value", "")) for item in spec.get("env", [])}
    env.update(DEFECTCAM_WEIGHTS=str(weights), DEFECTCAM_LOG_DB=str(log_db),
               DEFECTCAM_DEADLINE=f"{deadline:g}")
    return env


def photo_path() -> Path:
    from defectcam.config import shared_data_path

    return shared_data_path() / PHOTO


def make_body(name: str, folder: Path) -> Path:
    """The base64 body text of frame ``name`` (the photo tiled to its size), in a file."""
    import cv2
    import numpy as np

    path = folder / f"{name}.b64"
    if path.is_file():
        return path
    width, height = SIZES[name]
    photo = cv2.imread(str(photo_path()))
    if (width, height) == (8, 8):
        image = cv2.resize(photo, (8, 8), interpolation=cv2.INTER_AREA)
    else:
        reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
        image = np.ascontiguousarray(np.tile(photo, reps)[:height, :width])
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    path.write_bytes(base64.b64encode(data.tobytes()))
    return path


# ----------------------------------------------------------------------------- one worker


def run_worker(code: Path, frames: list[Path], log_db: Path) -> list[dict]:
    """One fresh worker (in this process) answering ``frames`` in order."""
    sys.path.insert(0, str(code))
    import nuclio_sdk
    import nuclio_sdk.test

    import main
    from defectcam.feedback import read_log

    platform = nuclio_sdk.test.Platform()
    platform.call_handler(main.handler, nuclio_sdk.Event(body={}))  # init_context
    rows = []
    for frame in frames:
        body = {"image": frame.read_text()}
        start = time.perf_counter()
        response = platform.call_handler(main.handler, nuclio_sdk.Event(body=body))
        seconds = time.perf_counter() - start
        record = read_log(log_db)[-1]
        deadline = record.params.get("deadline", {})
        rows.append({"frame": frame.stem, "status": response.status_code,
                     "seconds": seconds, "shapes": len(json.loads(response.body)),
                     "size": f"{record.width}x{record.height}",
                     "labels": deadline.get("labels", {})})
    return rows


def run_sequence(code: Path, frames: list[Path], deadline: float, busy: int,
                 folder: Path) -> list[dict]:
    log_db = folder / f"log-{time.monotonic_ns()}.sqlite"
    # The baseline runs with its own commit's weights: today's sidecars hold keys its
    # reader refuses.
    weights = code / "weights" if (code / "weights").is_dir() else REPO / "weights"
    env = {**os.environ, **function_env(deadline, log_db, weights), "PYTHONPATH": str(code)}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(busy)]
    try:
        done = subprocess.run([sys.executable, __file__, "--child", str(code), "--log-db",
                               str(log_db), *map(str, frames)], capture_output=True,
                              text=True, env=env, cwd=code, check=False)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def unpack(commit: str, folder: Path) -> Path:
    """The baseline's function code and weights at ``commit``, from git, in ``folder``."""
    target = folder / f"code-{commit[:12]}"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "defectcam",
                              "main.py", "model_handler.py", "weights"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


# ----------------------------------------------------------------------------- report


def label_cell(got: dict) -> str:
    if not got:
        return "-"
    tiles = got.get("tiles", 0)
    ran = got.get("tiles_run", tiles - got.get("tiles_left_out", 0))
    steps = ",".join(f"T{t}:{n}" for t, n in got.get("steps", {}).items()) or "none"
    side = got.get("proposals_max_side")
    post = f", proposals {side} px" if side else ""
    cut = ", cut" if got.get("proposals_cut") else ""
    return f"{ran}/{tiles} ({steps}{post}{cut})"


def report(results: list[tuple[str, str, list[dict]]], deadline: float, host: str,
           short: bool, baseline: str) -> str:
    labels = sorted({label for _, _, rows in results for row in rows for label in row["labels"]})
    lines = [
        "## Deadline: frame sequences through one warm worker", "",
        f"{host}; {datetime.date.today().isoformat()}. `python benchmarks/bench_deadline.py"
        f"{' --short' if short else ''}`: `main.handler` with `function.yaml`'s environment "
        f"and `DEFECTCAM_DEADLINE={deadline:g}`, each sequence in a freshly started worker; "
        "frames: a real photo tiled to the size (JPEG), `8x8` a tiny frame. Time: the call "
        "from the base64 body to the JSON answer; ratio: time / deadline (target: at most "
        "1.05). Per defect: tiles run / tiles of the frame (steps: tiles per AdvCAM steps T; "
        "the proposals' size when the deadline made them smaller). Baseline: "
        f"`{baseline[:12]}` (before the deadline became a planner) with that commit's weights, "
        "same frames, same run.",
        "", "| code | sequence | frame | time (s) | ratio | shapes | "
        + " | ".join(labels) + " |",
        "|---|---|---|---:|---:|---:|" + "---|" * len(labels)]
    for code, sequence, rows in results:
        for row in rows:
            cells = [label_cell(row["labels"].get(label, {})) for label in labels]
            lines.append(f"| {code} | {sequence} | {row['size']} | {row['seconds']:.1f} | "
                         f"{row['seconds'] / deadline:.2f} | {row['shapes']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=None,
                        help="DEFECTCAM_DEADLINE (default: 100, the yaml's; --short: 20)")
    parser.add_argument("--short", action="store_true",
                        help="2 MP and one 36 MP frame after a tiny one (a few minutes)")
    parser.add_argument("--baseline", default="6886e2b",
                        help="commit whose code is the baseline ('' for none)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log-db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("frames", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_worker(args.child, args.frames, args.log_db)))
        return 0
    sys.path.insert(0, str(REPO))  # the workers import their own code (PYTHONPATH)
    if not photo_path().is_file():
        print(f"the photo {photo_path()} is missing (set DEFECTCAM_SHARED_DATA)",
              file=sys.stderr)
        return 2
    deadline = args.deadline or (20.0 if args.short else 100.0)
    sequences = SHORT if args.short else FULL
    host = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        codes = [("this", REPO)]
        if args.baseline:
            codes.append(("baseline", unpack(args.baseline, folder)))
        for name, frames, busy in sequences:
            bodies = [make_body(frame, folder) for frame in frames]
            for code_name, code in codes:
                rows = run_sequence(code, bodies, deadline, busy, folder)
                results.append((code_name, name, rows))
                for row in rows:
                    print(code_name, name, row["size"], f"{row['seconds']:.1f} s",
                          row["shapes"], "shapes", flush=True)
    write_section(args.out, "bench_deadline.py",
                  report(results, deadline, host, args.short, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
