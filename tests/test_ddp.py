"""The ``torchrun`` DistributedDataParallel training path, run for real: two CPU processes
(gloo) on 127.0.0.1, started by torch.distributed.run as docs/training.md's command starts them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    result = _torchrun(str(REPO / "tests" / "ddp_worker.py"), str(out), str(EPOCHS), cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


def test_both_ranks_train_the_same_weights(ddp_run: Path) -> None:
    summaries = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world"] for s in summaries] == [2, 2]
    assert all(s["device"] == "cpu" for s in summaries)
    # batch 16 = 2 ranks x micro-batch 4 x 2 accumulation steps; 3 optimizer steps per epoch.
    assert summaries[0]["steps"] == summaries[1]["steps"] == 3 * EPOCHS
    for epoch in range(1, EPOCHS + 1):
        ranks = [torch.load(ddp_run / f"rank{r}-epoch{epoch}.pt") for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys()
        for name, value in ranks[0].items():
            assert torch.equal(value, ranks[1][name]), (epoch, name)
    # ... and they did train: the weights moved away from the initial ones between epochs.
    first, last = (torch.load(ddp_run / f"rank0-epoch{e}.pt") for e in (1, EPOCHS))
    assert any(not torch.equal(first[k], last[k]) for k in first)
    # Each rank saw its own half of the data: their losses differ.
    assert summaries[0]["losses"] != summaries[1]["losses"]


def test_rank_zero_wrote_the_files_once(ddp_run: Path) -> None:
    folder = ddp_run / "weights"
    assert sorted(p.name for p in folder.iterdir()) == [
        "crack.checkpoint.json", "crack.checkpoint.safetensors", "crack.curves.png",
        "crack.json", "crack.log.jsonl", "crack.safetensors"]
    log = [json.loads(line) for line in (folder / "crack.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, EPOCHS + 1))  # one writer, not two
    # The saved weights are rank 0's parameters at the best epoch (BatchNorm statistics are
    # buffers, kept per rank: the saved ones are rank 0's).
    best = json.loads((ddp_run / "rank0.json").read_text())["best_epoch"]
    meta = json.loads((folder / "crack.json").read_text())
    assert meta["training"]["best_epoch"] == best
    saved = load_file(str(folder / "crack.safetensors"))
    params = torch.load(ddp_run / f"rank0-epoch{best}.pt")
    for name, value in params.items():
        assert torch.equal(saved[name], value), name


def _clicked_photos(folder: Path) -> Path:
    """Four photos with a drawn crack each, and a CVAT export with a click on every crack and
    two on clean concrete."""
    import numpy as np
    from PIL import Image

    from defectcam.data.cvat_xml import (
        CvatAnnotations,
        CvatImage,
        CvatShape,
        defect_labels,
        write_cvat_xml,
    )
    from tests.helpers import concrete_texture, draw_crack

    rng = np.random.default_rng(3)
    (folder / "images").mkdir(parents=True)
    images = []
    for k in range(4):
        photo = concrete_texture(160, 160, rng)
        ys, xs = np.nonzero(draw_crack(photo, rng))
        Image.fromarray(photo).save(folder / "images" / f"p{k}.png")
        crack = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], float)
        clean = np.array([[8.0, 8.0], [150.0, 150.0]])
        images.append(CvatImage(k, f"p{k}.png", 160, 160, [
            CvatShape("points", "crack", crack), CvatShape("points", "no-defect", clean)]))
    return write_cvat_xml(CvatAnnotations(defect_labels(), images), folder / "clicks.xml")


def test_defectcam_train_under_torchrun(tmp_path: Path) -> None:
    """docs/training.md's command, ``torchrun --nproc_per_node N -m defectcam.cli train ...``:
    only rank 0 writes (and calibrates) the weights and prints the summary."""
    clicks = _clicked_photos(tmp_path)
    out = tmp_path / "weights"
    result = _torchrun("-m", "defectcam.cli", "train", "--defect", "crack", "--clicks",
                       str(clicks), "--images", str(tmp_path / "images"), "--out", str(out),
                       "--crop-size", "48", "--crops-per-click", "4", "--epochs", "2",
                       "--batch-size", "8", "--micro-batch", "4", "--max-steps-per-epoch", "2",
                       "--holdout", "0.25", "--tile-size", "48", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith('{"weights"')]
    assert len(summaries) == 1, result.stdout  # rank 0 only
    summary = json.loads(summaries[0])
    from defectcam.core.weights import load_weights

    model, meta = load_weights(out / "crack.safetensors")  # checksum matches: one writer
    assert meta.cam_scale == pytest.approx(summary["cam_scale"], abs=1e-4)
    assert meta.training["steps"] <= 4
    assert len((out / "crack.log.jsonl").read_text().splitlines()) == 2


def test_each_rank_gets_its_own_gpu() -> None:
    """Under torchrun a bare ``--device cuda`` is ``cuda:LOCAL_RANK`` (not every rank on GPU
    0); explicit devices and single-process runs are left as asked (decided without a GPU)."""
    from defectcam.training.loop import training_device

    cuda = torch.device
    assert training_device("cuda", 4, 3, True) == cuda("cuda", 3)
    assert training_device("cuda:1", 4, 3, True) == cuda("cuda", 1)
    assert training_device("cuda", 1, 0, True) == cuda("cuda")
    assert training_device("cpu", 4, 3, True) == cuda("cpu")  # gloo, even beside GPUs
    assert training_device(None, 4, 2, True) == cuda("cuda", 2)
    assert training_device(None, 4, 2, False) == cuda("cpu")
