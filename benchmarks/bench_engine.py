"""Engine benchmark: defectcam's batched free Grad-CAM + AdvCAM vs a naive peer.

The peer is what one would write with the ``grad-cam`` package (pytorch-grad-cam): its
``GradCAM`` on the same model and weights (hooks on the decoder output, a backward pass per
tile), plus a straightforward per-tile AdvCAM loop, one tile at a time. Both use the same
tiles and the same stitching, so their maps must agree; the report states the difference.
pytorch-grad-cam min-max scales every CAM it returns; that scaling is switched off for the
peer (per-tile scaling is exactly what method.md section 5 forbids), everything else is the
library's own code.

Each measurement runs in its own subprocess so that its peak RSS is its own.

    python benchmarks/bench_engine.py                 # writes its section of BENCHMARKS.md
    python benchmarks/bench_engine.py --quick         # small sizes, to check the script
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from report import machine, write_section  # benchmarks/report.py (the script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from defectcam.config import malloc_tuning, shared_data_path  # noqa: E402
from defectcam.core.advcam import AdvCAMSettings  # noqa: E402
from defectcam.core.model import INPUT_MULTIPLE, build_classifier  # noqa: E402
from defectcam.core.predictor import DefectMapPredictor  # noqa: E402
from defectcam.core.tiling import TileGrid, extract_tile, stitch_tiles  # noqa: E402
from defectcam.core.transforms import normalize_batch  # noqa: E402
from defectcam.core.weights import WeightsMetadata, load_weights  # noqa: E402

DATA = shared_data_path()  # ../shared/data or $DEFECTCAM_SHARED_DATA
TWO_MP = DATA / "rust/corrosion/images/148.jpg"  # 1600x1200, validation split


def load_model(device: str):
    path = REPO / "weights" / "crack.safetensors"  # final; speed does not depend on values
    if path.is_file():
        model, meta = load_weights(path, device)
        return model, meta, f"shipped {path.name}"
    meta = WeightsMetadata(label="crack")
    return build_classifier(seed=0).to(device).eval(), meta, "untrained (seed 0)"


def make_image(kind: str) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(TWO_MP)), cv2.COLOR_BGR2RGB)
    if kind == "2mp":
        return image
    if kind == "25mp":  # a real photo scaled to 5000x5000, as a drone frame would be
        return cv2.resize(image, (5000, 5000), interpolation=cv2.INTER_LINEAR)
    side = {"quick": 384, "quick-large": 768}[kind]
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- the peer
class RawGradCAM:
    """pytorch-grad-cam's GradCAM without its per-image min-max scaling."""

    def __init__(self, model):
        from pytorch_grad_cam import GradCAM

        class Unscaled(GradCAM):
            def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
                acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
                grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
                return [np.maximum(self.get_cam_image(input_tensor, layer, targets, a, g,
                                                      eigen_smooth), 0)[:, None]
                        for layer, a, g in zip(self.target_layers, acts, grads, strict=True)]

            def aggregate_multi_layers(self, cam_per_target_layer):
                return np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)

        class LogitOnly(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x).logit[:, None]

        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.cam = Unscaled(model=LogitOnly(model), target_layers=[model.decoder])
        self.targets = [ClassifierOutputTarget(0)]

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        h, w = x.shape[-2:]
        return self.cam(input_tensor=x, targets=self.targets)[0] * (h * w)  # our CAM's scale


def peer_tile(model, gradcam: RawGradCAM, x0: torch.Tensor, s: AdvCAMSettings) -> np.ndarray:
    """One tile, the straightforward way: library Grad-CAM per step + a separate climb step."""
    acc = gradcam(x0)
    cam0 = None
    low, high = x0.min(), x0.max()
    x = x0.clone()
    for _ in range(s.iterations):
        x = x.detach().requires_grad_(True)
        out = model(x)
        if cam0 is None:
            # As the official AdvCAM: the reference is the first step's own CAM, so that
            # |cam - cam0| is exactly 0 there (a CAM computed elsewhere differs by rounding,
            # and the sign of that noise would steer the first step).
            cam0 = out.cam.detach()
        salient = (out.cam.detach() / out.cam.detach().max().clamp_min(1e-12) > s.tau).float()
        loss = out.logit.sum() - s.lam * (salient * (out.cam - cam0).abs()).mean()
        model.zero_grad()
        loss.backward()
        g = x.grad
        x = torch.clamp(x.detach() + s.xi * g / g.abs().max().clamp_min(1e-12), low, high)
        acc = acc + gradcam(x)
    return acc


def run_peer(model, meta, image, iterations, max_tiles):
    grid = TileGrid.build(*image.shape[:2], meta.tile_size, meta.tile_overlap,
                          multiple=INPUT_MULTIPLE)
    acc = np.zeros(image.shape[:2], np.float32)
    gradcam = RawGradCAM(model)
    settings = AdvCAMSettings(iterations, meta.xi, meta.tau, meta.lam)
    tiles = grid.tiles()[:max_tiles] if max_tiles else grid.tiles()
    for i, j in tiles:
        x0 = normalize_batch(extract_tile(image, grid, i, j), meta.mean, meta.std)
        stitch_tiles(acc, grid, i, j, peer_tile(model, gradcam, x0, settings))
    return acc, len(tiles), len(grid)


def run_ours(model, meta, image, iterations, max_tiles, device, fold=True):
    # fp32 and fixed tiles: the peer's arithmetic and tiles (bench_request.py measures the
    # faster defaults against this engine).
    predictor = DefectMapPredictor(model, meta, device, precision="fp32", tiling="fixed",
                                   working_scale=1.0, malloc_tuning=malloc_tuning())
    if not fold:  # the same engine on the model as loaded, to measure what folding gains
        predictor.model = model.to(device, memory_format=torch.channels_last).eval()
        for p in predictor.model.parameters():
            p.requires_grad_(False)
    grid = TileGrid.build(*image.shape[:2], meta.tile_size, meta.tile_overlap,
                          multiple=INPUT_MULTIPLE)
    tiles = grid.tiles()[:max_tiles] if max_tiles else None  # the peer's subset
    result = predictor.predict(image, iterations=iterations, tiles=tiles)
    return result.cam_map * result.normaliser, len(tiles or grid), len(grid)


def one(args) -> None:
    """Child process: one measurement, JSON on stdout, the map in a .npy file."""
    torch.manual_seed(0)
    model, meta, weights = load_model(args.device)
    image = make_image(args.image)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    runner = run_peer if args.method == "peer" else run_ours
    extra = () if args.method == "peer" else (args.device, args.method != "ours-untuned")
    cam, tiles, total = runner(model, meta, image, args.iterations, args.max_tiles, *extra)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.map_out, cam)
    print(json.dumps({"seconds": seconds, "tiles": tiles, "tiles_in_image": total,
                      "megapixels": image.shape[0] * image.shape[1] / 1e6,
                      "peak_rss_mb": peak, "rss_before_mb": rss_before, "weights": weights,
                      "image_mb": image.nbytes / 2**20}))


def measure(image: str, method: str, iterations: int, max_tiles: int, device: str, tmp: Path):
    map_out = tmp / f"{image}-{method}-{iterations}.npy"
    cmd = [sys.executable, __file__, "--one", "--image", image, "--method", method,
           "--iterations", str(iterations), "--max-tiles", str(max_tiles), "--device", device,
           "--map-out", str(map_out)]
    # The CPU malloc tuning is part of the engine; the peer and the untuned variants run
    # without it (each measurement is its own process, so the setting cannot leak).
    tuned = method == "ours"
    env = dict(os.environ, DEFECTCAM_MALLOC_TUNING="1" if tuned else "0")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["map"] = map_out
    print(f"{image} {method} T={iterations}: {result['seconds']:.1f} s, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", default="2mp")
    parser.add_argument("--method", default="ours")
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--max-tiles", type=int, default=0)
    parser.add_argument("--map-out", default="")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny images: check the script")
    parser.add_argument("--peer-tiles-large", type=int, default=6,
                        help="on the 25 MP image the peer runs on this many tiles only")
    parser.add_argument("--full-large-t2", action="store_true",
                        help="run ours at T=2 on the whole 25 MP image (17+ min on 2 CPU "
                             "cores); default: the same tiles as the peer, extrapolated")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    small, large = ("quick", "quick-large") if args.quick else ("2mp", "25mp")
    host = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image, peer_tiles in ((small, 0), (large, args.peer_tiles_large)):
            for t in (0, 2):
                whole = not peer_tiles or t == 0 or args.full_large_t2
                ours = measure(image, "ours", t, 0, args.device, tmp) if whole else None
                ours_sub = (measure(image, "ours", t, peer_tiles, args.device, tmp)
                            if peer_tiles else ours)
                if ours is None:  # extrapolate the whole image from the measured tiles
                    ours = dict(ours_sub, extrapolated=True, seconds=ours_sub["seconds"]
                                * ours_sub["tiles_in_image"] / ours_sub["tiles"])
                peer = measure(image, "peer", t, peer_tiles, args.device, tmp)
                a, b = np.load(ours_sub["map"]), np.load(peer["map"])
                covered = b != 0 if peer_tiles else np.ones_like(b, bool)
                diff = float(np.abs(a - b)[covered].max() / max(np.abs(a[covered]).max(), 1e-12))
                variants = ({v: measure(image, v, t, 0, args.device, tmp)
                             for v in ("ours-untuned", "ours-fold-only")}
                            if not peer_tiles else None)
                rows.append({"image": image, "T": t, "ours": ours, "ours_sub": ours_sub,
                             "peer": peer, "max_rel_diff": diff, "variants": variants})
    write_report(rows, args, host)


def write_report(rows, args, host: str) -> None:
    """Write this script's section of ``args.out``; ``host``: the device line of the run."""
    lines = [
        "## Engine: defectcam vs a naive peer", "",
        f"Engine benchmark (`python benchmarks/bench_engine.py`), "
        f"{datetime.date.today().isoformat()}, {host}.",
        f"Weights: {rows[0]['ours']['weights']}; tiles {512}px, overlap 128px.", "",
        "Peer: pytorch-grad-cam `GradCAM` (hooks + backward, per-image scaling off) on the "
        "same model and weights, plus a plain per-tile AdvCAM loop, one tile at a time. Ours: "
        "free Grad-CAM in the forward pass, climb gradients w.r.t. the input only, tile batches, "
        "BatchNorm folded into the convolutions.",
        "Peak memory: peak RSS of the measuring process minus its RSS before the run "
        "(model loaded, image decoded).", "",
        "| image | T | ours s/image | ours MP/s | peer s (tiles) | speed-up | max rel. map diff "
        "| ours peak MB | peer peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, s, p = r["ours"], r["ours_sub"], r["peer"]
        ratio = p["seconds"] / s["seconds"]
        mark = " (extrapolated)" if o.get("extrapolated") else ""
        peer_text = f"{p['seconds']:.1f} ({p['tiles']}/{p['tiles_in_image']})"
        lines.append(
            f"| {r['image']} ({o['megapixels']:.1f} MP) | {r['T']} | {o['seconds']:.1f}{mark} | "
            f"{o['megapixels'] / o['seconds']:.3f} | {peer_text} | {ratio:.2f}x | "
            f"{r['max_rel_diff']:.1e} | {o['peak_rss_mb'] - o['rss_before_mb']:.0f} | "
            f"{p['peak_rss_mb'] - p['rss_before_mb']:.0f} |")
    lines += ["", "Where the peer ran on a subset of tiles (25 MP), the speed-up compares it "
              "with ours on the same tiles, measured in the same run. An extrapolated time is "
              "ours on those tiles x (tiles in the image / tiles measured); its peak memory "
              "includes the whole image's buffers (the map is allocated in full).", ""]
    tuned = [r for r in rows if r["variants"]]
    if tuned:
        lines += ["What the two CPU tweaks gain (same engine, same run): `untuned` = BatchNorm "
                  "not folded and default malloc; `fold` = BatchNorm folded into the convs; "
                  "`ours` = folded + large allocations kept in the malloc heap.", "",
                  "| image | T | untuned s | fold s | ours s | fold gain | total gain | "
                  "peer / untuned |", "|---|---|---|---|---|---|---|---|"]
        for r in tuned:
            u, f = r["variants"]["ours-untuned"]["seconds"], \
                r["variants"]["ours-fold-only"]["seconds"]
            o = r["ours"]["seconds"]
            lines.append(f"| {r['image']} | {r['T']} | {u:.1f} | {f:.1f} | {o:.1f} | "
                         f"{u / f:.2f}x | {u / o:.2f}x | {r['peer']['seconds'] / u:.2f}x |")
        lines.append("")
    write_section(args.out, "bench_engine.py", "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
