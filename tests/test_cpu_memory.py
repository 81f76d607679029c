"""The CPU malloc tuning: freed tile-sized buffers are reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, torch
from defectcam.core.advcam import AdvCAMSettings, advcam_climb
from defectcam.core.model import build_classifier
from defectcam.config import malloc_tuning
from defectcam.core.cpu_memory import keep_large_allocations_in_heap
applied = keep_large_allocations_in_heap(malloc_tuning())
torch.set_num_threads(1)
model = build_classifier(seed=0).eval().requires_grad_(False)
x = torch.randn(2, 3, 256, 256)
def climb():  # one tile batch through one climbing step: ~0.5 GB of activations
    advcam_climb(model, x, AdvCAMSettings(iterations=1))
for _ in range(2):  # warm up, as the first batches of an image do
    climb()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
climb()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(tuning: str) -> dict:
    env = dict(os.environ, DEFECTCAM_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_buffers_are_reused_without_page_faults():
    off, on = _probe("0"), _probe("1")
    assert off["applied"] is False  # the switch works
    if not on["applied"]:
        pytest.skip("not glibc: mallopt is unavailable, nothing to tune")
    # Untuned, every large activation is a fresh mapping, one fault per 4 KiB page (measured
    # 116709 faults per climbing step on this batch; tuned 4096).
    assert off["faults"] > 20000, off
    assert on["faults"] < off["faults"] / 10, (on, off)
