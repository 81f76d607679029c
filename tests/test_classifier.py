"""The classifier's free Grad-CAM, and the weights format."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from defectcam.core.model import build_classifier
from defectcam.core.transforms import normalize_batch
from defectcam.core.weights import (
    WeightsError,
    WeightsMetadata,
    find_weights,
    load_weights,
    save_weights,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_classifier(seed=0).eval()
    # Random BN statistics and a non-trivial head so that the CAM is not all zeros.
    for module in m.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return m.double()


def test_free_gradcam_equals_autograd_gradcam(model):
    """Grad-CAM from hooks + autograd on the decoder output equals the 1x1-conv CAM."""
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    captured = {}

    def hook(_module, _inputs, output):
        output.retain_grad()
        captured["A"] = output

    handle = model.decoder.register_forward_hook(hook)
    out = model(x)
    handle.remove()
    out.logit.sum().backward()
    a, grad = captured["A"], captured["A"].grad
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # Grad-CAM channel weights
    gradcam = F.relu((alpha * a).sum(dim=1))
    h, w = x.shape[-2:]
    assert gradcam.abs().max() > 0
    # Our CAM is Grad-CAM times H*W (tile-size independent), computed without backward.
    torch.testing.assert_close(out.cam.detach() / (h * w), gradcam.detach(), rtol=0, atol=1e-6)


def test_folded_batchnorm_gives_the_same_maps_and_climb(model):
    """The predictor's inference copy (BatchNorm folded into the convs) computes the same
    logits, CAMs and input gradients, leaves the original untouched and keeps no BatchNorm."""
    from defectcam.core.advcam import AdvCAMSettings, advcam_climb
    from defectcam.core.model import fold_batchnorm

    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        ref, got = model(x), folded(x)
    assert ref.cam.abs().max() > 0
    # float64 here: the folded weights differ from the unfolded products by rounding only.
    torch.testing.assert_close(got.logit, ref.logit, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.cam, ref.cam, rtol=1e-9, atol=1e-9)
    settings = AdvCAMSettings(iterations=2)
    torch.testing.assert_close(advcam_climb(folded, x, settings).cam,
                               advcam_climb(model, x, settings).cam, rtol=1e-8, atol=1e-8)


def test_output_shapes_and_input_check(model):
    out = model(torch.randn(1, 3, 40, 56, dtype=torch.float64))
    assert out.logit.shape == (1,) and out.cam.shape == (1, 40, 56)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 42, 56, dtype=torch.float64))


def test_unused_resnet_layers_are_not_saved(tmp_path):
    path = save_weights(build_classifier(0), WeightsMetadata(label="crack"),
                        tmp_path / "crack.safetensors")
    model, meta = load_weights(path)
    keys = model.state_dict().keys()
    assert not any(k.startswith(("encoder.layer3", "encoder.layer4")) for k in keys)
    assert any(k.startswith("encoder.layer2") for k in keys)
    assert meta.label == "crack" and meta.sha256


def test_weights_round_trip_gives_same_logits(tmp_path):
    original = build_classifier(seed=3).eval()
    path = save_weights(original, WeightsMetadata(label="rust", tile_size=256),
                        tmp_path / "rust.safetensors")
    loaded, meta = load_weights(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logit, original(x).logit)
    assert meta.tile_size == 256 and meta.mean == (0.485, 0.456, 0.406)
    assert find_weights(tmp_path) == {"rust": path}
    # a training run's folder: its checkpoints (another JSON, no label) are not weights
    for name in ("rust.checkpoint", "rust.finished-checkpoint"):
        (tmp_path / f"{name}.safetensors").write_bytes(path.read_bytes())
        (tmp_path / f"{name}.json").write_text('{"epoch": 3}')
    assert find_weights(tmp_path) == {"rust": path}


def test_weights_errors_name_the_file(tmp_path):
    path = save_weights(build_classifier(0), WeightsMetadata(label="crack"),
                        tmp_path / "crack.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")
    # Truncated tensor file: the checksum in the sidecar catches it.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"crack\.safetensors.*checksum"):
        load_weights(path)
    # Truncated and without a checksum: safetensors itself refuses, named.
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"crack\.safetensors.*not a readable safetensors"):
        load_weights(path)
    # Missing sidecar.
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match=r"crack\.json.*missing"):
        load_weights(path)


def test_mismatched_tensors_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "spalling.safetensors"
    save_file({"encoder.conv1.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"label": "spalling"}))
    with pytest.raises(WeightsError, match=r"spalling\.safetensors.*do not match"):
        load_weights(path)
    model = build_classifier(0)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["head.weight"] = torch.zeros(1, 32)
    save_file(tensors, str(path))
    with pytest.raises(WeightsError, match=r"head\.weight has shape"):
        load_weights(path)


def test_bad_sidecar_is_refused(tmp_path):
    path = save_weights(build_classifier(0), WeightsMetadata(label="crack"),
                        tmp_path / "crack.safetensors")
    side = path.with_suffix(".json")
    side.write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_weights(path)
    side.write_text(json.dumps({"label": "crack", "format_version": 99}))
    with pytest.raises(WeightsError, match="format_version 99"):
        load_weights(path)
    side.write_text(json.dumps({"label": "crack", "colour": "red"}))
    with pytest.raises(WeightsError, match="unknown metadata keys"):
        load_weights(path)


def test_normalize_batch():
    img = torch.full((4, 6, 3), 255, dtype=torch.uint8)
    x = normalize_batch(img)
    assert x.shape == (1, 3, 4, 6)
    torch.testing.assert_close(x[0, 0, 0, 0], torch.tensor((1 - 0.485) / 0.229))
    with pytest.raises(ValueError, match="expected"):
        normalize_batch(torch.zeros(4, 6, 4, dtype=torch.uint8))
