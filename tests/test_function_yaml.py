"""function.yaml / function-gpu.yaml / function-kube.yaml parse, follow CVAT's conventions and
agree with the code; the Kubernetes file is the GPU function, scaled out."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from defectcam.config import DEFAULT_MAX_BODY_BYTES, REQUEST_ENV, Settings
from defectcam.core.labels import DEFECT_LABELS, LABEL_NAMES, cvat_spec
from defectcam.core.options import MAX_ITERATIONS

REPO = Path(__file__).resolve().parents[1]
FILES = {
    "cpu": REPO / "function.yaml",
    "gpu": REPO / "function-gpu.yaml",
    "kube": REPO / "function-kube.yaml",
}
#: Files that run on a GPU; the Kubernetes one is the GPU function on Nuclio's kube platform.
GPU_KINDS = ("gpu", "kube")
#: What function-kube.yaml may change in function-gpu.yaml's spec: scaling and scheduling.
KUBE_ONLY = {"minReplicas", "maxReplicas", "readinessTimeoutSeconds"}
#: What the yaml files may set: the worker's settings (defectcam/config.py).
KNOWN_ENV = {
    "DEFECTCAM_WEIGHTS",
    "DEFECTCAM_DEVICE",
    "DEFECTCAM_PRECISION",
    *REQUEST_ENV,
    "DEFECTCAM_LOG_DB",
}
#: Base64 of a 5120 x 5120 RGB PNG of noise (incompressible): 4/3 of 3 bytes per pixel.
BASE64_5K_PNG = 5120 * 5120 * 3 * 4 // 3


@pytest.fixture(params=sorted(FILES), scope="module")
def config(request) -> tuple[str, dict]:
    return request.param, yaml.safe_load(FILES[request.param].read_text())


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", str(duration))
    assert match, f"eventTimeout {duration!r} is not a Go duration like 300s"
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _env(config: dict) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in config["spec"].get("env", [])}


def test_metadata_follows_cvat(config) -> None:
    kind, data = config
    metadata = data["metadata"]
    assert metadata["name"] == ("defectcam-gpu" if kind in GPU_KINDS else "defectcam-cpu")
    assert metadata["namespace"] == "cvat"
    annotations = metadata["annotations"]
    assert annotations["type"] == "detector"
    assert annotations["framework"] == "pytorch"
    assert annotations["name"]
    assert data["spec"]["description"].strip()


def test_spec_labels_are_the_single_label_list(config) -> None:
    spec = json.loads(config[1]["metadata"]["annotations"]["spec"])
    assert spec == cvat_spec()
    assert [item["name"] for item in spec] == list(LABEL_NAMES) == ["crack", "spalling", "rust"]
    assert len({item["id"] for item in spec}) == len(spec) == len(DEFECT_LABELS)
    assert all(item["type"] == "polygon" for item in spec)


def test_handler_and_runtime_match_the_code(config) -> None:
    spec = config[1]["spec"]
    module, function = spec["handler"].split(":")
    tree = ast.parse((REPO / f"{module}.py").read_text())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {function, "init_context"} <= functions
    python = re.search(r"ARG PYTHON_VERSION=(\S+)", (REPO / "Dockerfile").read_text()).group(1)
    assert spec["runtime"] == f"python:{python}"


def test_http_trigger_and_limits(config) -> None:
    kind, data = config
    spec = data["spec"]
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["kind"] == "http"
    assert trigger["numWorkers"] == (1 if kind in GPU_KINDS else 2)
    assert trigger["workerAvailabilityTimeoutMilliseconds"] >= 1000
    body = trigger["attributes"]["maxRequestBodySize"]
    assert body >= BASE64_5K_PNG and body == DEFAULT_MAX_BODY_BYTES
    # CVAT waits 120 s by default; the function must never be the one cutting a call short.
    assert _seconds(spec["eventTimeout"]) >= 120
    if kind == "kube":  # restartPolicy and mountMode are for Docker platforms only
        assert "platform" not in spec
    else:
        restart = spec["platform"]["attributes"]["restartPolicy"]
        assert restart["name"] == "always" and restart["maximumRetryCount"] >= 1


def test_gpu_resources(config) -> None:
    kind, data = config
    resources = data["spec"].get("resources", {})
    if kind in GPU_KINDS:
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert _env(data)["DEFECTCAM_DEVICE"].startswith("cuda")
    else:
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert _env(data)["DEFECTCAM_DEVICE"] == "cpu"


def test_gpu_image_asks_the_nvidia_runtime_for_gpus(config) -> None:
    """As CVAT's GPU functions: NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES in the
    image (build directives), never in spec.env, where they would override the choice of
    --gpus or of Kubernetes' device plugin."""
    kind, data = config
    directives = data["spec"]["build"].get("directives", {}).get("preCopy", [])
    image_env = dict(d["value"].split("=", 1) for d in directives if d["kind"] == "ENV")
    if kind in GPU_KINDS:
        assert image_env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert set(image_env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}
    else:
        assert not any(key.startswith("NVIDIA_") for key in image_env)
    assert not any(key.startswith("NVIDIA_") for key in _env(data))


def test_build_images_come_from_the_dockerfile(config) -> None:
    kind, data = config
    build = data["spec"]["build"]
    assert build["image"]
    assert build["baseImage"] == ("defectcam-base:gpu" if kind in GPU_KINDS
                                  else "defectcam-base:cpu")
    assert 'BASE_IMAGE="defectcam-base:${MODE}"' in (REPO / "deploy.sh").read_text()


def test_env_is_valid_for_the_handler(config, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(config[1])
    assert set(env) <= KNOWN_ENV, set(env) - KNOWN_ENV
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"DEFECTCAM_WEIGHTS={env['DEFECTCAM_WEIGHTS']}" in dockerfile
    assert 0 <= int(env["DEFECTCAM_MAX_ITERATIONS"]) <= MAX_ITERATIONS
    assert 4096 * 4096 <= int(env["DEFECTCAM_MAX_PIXELS"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()  # what init_context does; raises on an invalid value
    assert settings.max_pixels == int(env["DEFECTCAM_MAX_PIXELS"])
    assert settings.max_iterations == int(env["DEFECTCAM_MAX_ITERATIONS"])
    assert settings.min_confidence == float(env["DEFECTCAM_CONFIDENCE_THRESHOLD"])


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml", "function-kube.yaml"])
def test_log_volume_holds_the_log_db(name: str) -> None:
    config = yaml.safe_load((REPO / name).read_text())
    env = {e["name"]: e["value"] for e in config["spec"]["env"]}
    mounts = [v["volumeMount"]["mountPath"] for v in config["spec"]["volumes"]]
    assert any(env["DEFECTCAM_LOG_DB"].startswith(m + "/") for m in mounts)


def _without(spec: dict, keys: set[str]) -> dict:
    return {key: value for key, value in spec.items() if key not in keys}


def test_kube_is_the_gpu_function_scaled_out() -> None:
    gpu = yaml.safe_load(FILES["gpu"].read_text())
    kube = yaml.safe_load(FILES["kube"].read_text())
    assert kube["metadata"] == gpu["metadata"]
    # Same handler, limits, environment, image, trigger, GPU limit; only scaling differs,
    # Kubernetes scheduling requests are added, and the Docker-only platform block goes.
    shared = KUBE_ONLY | {"platform", "resources", "volumes"}
    assert _without(kube["spec"], shared) == _without(gpu["spec"], shared)
    assert kube["spec"]["resources"]["limits"] == gpu["spec"]["resources"]["limits"]
    assert set(kube["spec"]["resources"]) == {"limits", "requests"}
    # The log volume: the same mount; on Kubernetes the node's folder is created when missing.
    host = kube["spec"]["volumes"][0]["volume"]["hostPath"]
    assert host == {**gpu["spec"]["volumes"][0]["volume"]["hostPath"], "type": "DirectoryOrCreate"}
    assert kube["spec"]["volumes"][0]["volumeMount"] == gpu["spec"]["volumes"][0]["volumeMount"]


def test_kube_replicas_one_gpu_each() -> None:
    spec = yaml.safe_load(FILES["kube"].read_text())["spec"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["triggers"]["myHttpTrigger"]["numWorkers"] == 1
    # Nuclio's default readiness timeout (60 s) is shorter than pulling a CUDA image.
    assert spec["readinessTimeoutSeconds"] >= 300
    assert "replicas" not in spec  # a fixed "replicas" would switch min/max off
