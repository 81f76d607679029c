"""The training loop: the loss goes down, resuming equals not stopping, and the saved
weights load in the engine with the logits that were validated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from defectcam.core.predictor import DefectMapPredictor
from defectcam.core.weights import WeightsMetadata, load_weights
from defectcam.data.crops import ClickCropDataset, CropSet
from defectcam.training.loop import (
    TrainConfig,
    binary_scores,
    predict_probabilities,
    train_classifier,
)
from tests.helpers import crack_crop_batch


def crack_crops(n: int, seed: int) -> CropSet:
    crops, labels = crack_crop_batch(n, np.random.default_rng(seed))
    zeros = np.zeros((n, 2))
    return CropSet(crops, labels, zeros, zeros, [f"img{k}" for k in range(n)])


@pytest.fixture(scope="module")
def data():
    return (ClickCropDataset(crack_crops(96, 0), seed=0, layout="hwc"),
            ClickCropDataset(crack_crops(32, 1), augment=False, layout="hwc"))


def config(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, micro_batch=8, lr=1e-3, seed=0,
                       device="cpu", max_steps_per_epoch=5, progress=False)


def test_loss_goes_down_and_outputs_are_written(tmp_path, data):
    train, val = data
    out = tmp_path / "crack.safetensors"
    result = train_classifier(train, val, WeightsMetadata(label="crack", tile_size=64), out,
                              config(4))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] - 0.05, losses
    assert len(result.history) == 4 and result.history[-1]["step"] == 4 * 5
    lines = (tmp_path / "crack.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert (tmp_path / "crack.curves.png").stat().st_size > 1000
    assert (tmp_path / "crack.checkpoint.safetensors").is_file()

    # The saved (best) weights reproduce the F1 recorded for their epoch...
    model, meta = load_weights(out)
    best = result.history[meta.training["best_epoch"] - 1]
    probs, labels, _ = predict_probabilities(model, val, torch.device("cpu"), meta)
    assert binary_scores(probs, labels)["f1"] == pytest.approx(best["val_f1"], abs=1e-9)
    assert meta.training["steps"] == best["step"] and meta.metrics["val_classification"]
    # ... and the engine gives the same logit for a crop that is exactly one tile (in fp32,
    # the direct call's arithmetic; bf16's difference: tests/test_speed_switches.py).
    crop = val.crop_set.crops[1]
    predictor = DefectMapPredictor(model, meta, "cpu", precision="fp32")
    tile_p = predictor.predict(crop, iterations=0).tile_probability[0, 0]
    x = torch.from_numpy(crop[None])
    from defectcam.core.transforms import normalize_batch

    with torch.no_grad():
        direct = torch.sigmoid(model(normalize_batch(x)).logit)[0].item()
    assert tile_p == pytest.approx(direct, abs=1e-5)


def test_resume_equals_an_uninterrupted_run(tmp_path, data):
    train, val = data
    meta = WeightsMetadata(label="crack", tile_size=64)
    straight = tmp_path / "a" / "crack.safetensors"
    train_classifier(train, val, meta, straight, config(3))
    resumed = tmp_path / "b" / "crack.safetensors"
    train_classifier(train, val, meta, resumed, config(2))  # "interrupted" after 2 epochs
    result = train_classifier(train, val, meta, resumed, config(3))  # picks up epoch 3
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    a = load_file(str(straight.with_name("crack.checkpoint.safetensors")))
    b = load_file(str(resumed.with_name("crack.checkpoint.safetensors")))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_cpu_training_precision_follows_the_cpu() -> None:
    """auto = bf16 autocast on a CPU that runs bf16 natively (2.3-2.6x faster steps, see
    shared/docs/cpu.md), fp32 elsewhere; fp16 is CUDA-only and refused with a clear error."""
    import torch

    from defectcam.training.loop import TrainConfig, autocast_dtype, cpu_supports_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype(TrainConfig(precision="fp32"), cpu) is None
    assert autocast_dtype(TrainConfig(precision="bf16"), cpu) is torch.bfloat16
    expected = torch.bfloat16 if cpu_supports_bf16() else None
    assert autocast_dtype(TrainConfig(precision="auto"), cpu) is expected
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        autocast_dtype(TrainConfig(precision="fp16"), cpu)
