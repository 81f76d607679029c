"""A device the machine lacks is a one-line error naming the setting, on every face.

The subprocess tests hide every GPU with ``CUDA_VISIBLE_DEVICES=""`` so that they ask for a
missing CUDA device on any machine, GPU or not; the in-process tests use ``cuda:99``, missing
everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from defectcam.core.device import DeviceError, resolve_device
from defectcam.core.predictor import pick_device
from tests.function_support import environment, import_main

REPO = Path(__file__).resolve().parents[1]
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def _one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "defectcam.cli", *args], capture_output=True,
                          text=True, env={**NO_GPU, "PYTHONPATH": str(REPO)}, cwd=cwd,
                          timeout=120)


def test_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for value in (None, "", "auto", " AUTO "):
        assert resolve_device(value).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("value", "why"),
    [("gpu", "not a torch device"), ("cuda:x", "not a torch device"), ("cuda:99", "CUDA")],
)
def test_bad_values_name_the_setting(value: str, why: str) -> None:
    with pytest.raises(DeviceError, match=rf"^--device={value}: .*{why}") as info:
        resolve_device(value, "--device")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # the CLI's one-line error path


def test_the_library_checks_too() -> None:
    with pytest.raises(DeviceError, match=r"^device=cuda:99: "):
        pick_device("cuda:99")


def test_propose_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("propose", str(REPO / "samples" / "rust_corrosion_148.jpg"), "--out", str(out),
                  "--device", "cuda", cwd=tmp_path)
    line = _one_line_error(result, "defectcam propose: error: --device=cuda: ",
                           "finds no CUDA GPU")
    assert "use cpu or auto" in line
    assert not out.exists()  # refused before the weights load and the output folder appears


def test_train_cli_checks_before_reading_clicks(tmp_path: Path) -> None:
    result = _cli("train", "--defect", "crack", "--clicks", str(tmp_path / "missing.xml"),
                  "--images", str(tmp_path), "--out", str(tmp_path / "w"), "--device", "cuda:0",
                  cwd=tmp_path)
    _one_line_error(result, "defectcam train: error: --device=cuda:0: ")


def test_evaluate_cli(tmp_path: Path) -> None:
    result = _cli("evaluate", "--weights", str(REPO / "weights"), "--defect", "crack",
                  "--out", str(tmp_path / "e"), "--device", "cuda", cwd=tmp_path)
    _one_line_error(result, "defectcam evaluate: error: --device=cuda: ")


def test_serve_names_the_environment_variable(tmp_path: Path) -> None:
    env = {**NO_GPU, "PYTHONPATH": str(REPO), "DEFECTCAM_DEVICE": "cuda",
           "DEFECTCAM_LOG_DB": "off"}
    result = subprocess.run(
        [sys.executable, "-m", "defectcam.cli", "serve", "--port", "0",
         "--function-dir", str(REPO)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    _one_line_error(result, "defectcam serve: cannot start: DEFECTCAM_DEVICE=cuda: ")


def test_nuclio_init_context_names_the_environment_variable() -> None:
    main = import_main()

    class Context:  # init_context must fail before it touches the context
        logger = None
        user_data = None

    with environment(DEFECTCAM_DEVICE="cuda:99"), pytest.raises(
        DeviceError, match=r"^DEFECTCAM_DEVICE=cuda:99: "
    ):
        main.init_context(Context())


def test_cvat_function_parameter() -> None:
    from defectcam.cvat_function import FunctionParameterError, parse_settings

    with pytest.raises(FunctionParameterError, match=r"^-p device=cuda:99: "):
        parse_settings(device="cuda:99")
    assert parse_settings(device="cpu").settings.device == "cpu"
