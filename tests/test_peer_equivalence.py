"""The benchmark's naive peer (pytorch-grad-cam GradCAM + a per-tile AdvCAM loop) and the
engine compute the same maps, so the speed comparison in BENCHMARKS.md is like for like."""

from __future__ import annotations

import numpy as np
import pytest

from defectcam.core.advcam import AdvCAMSettings, advcam_climb
from defectcam.core.transforms import normalize_batch
from tests.helpers import concrete_texture, draw_crack, load_benchmark

pytest.importorskip("pytorch_grad_cam", reason="grad-cam (the benchmark's peer) not installed")


@pytest.mark.parametrize("iterations", [0, 2])
def test_peer_and_engine_give_the_same_map(fitted_crack_model, iterations):
    bench = load_benchmark("bench_engine")
    rng = np.random.default_rng(4)
    image = concrete_texture(64, 64, rng)
    draw_crack(image, rng)
    x0 = normalize_batch(image)
    settings = AdvCAMSettings(iterations=iterations, lam=7.0)
    for p in fitted_crack_model.parameters():
        p.requires_grad_(True)  # the library backpropagates to the weights
    peer = bench.peer_tile(fitted_crack_model, bench.RawGradCAM(fitted_crack_model), x0,
                           settings)
    for p in fitted_crack_model.parameters():
        p.requires_grad_(False)
    ours = advcam_climb(fitted_crack_model, x0, settings).cam[0].numpy()
    scale = float(np.abs(ours).max())
    assert scale > 0
    assert float(np.abs(ours - peer).max()) / scale < 1e-5
