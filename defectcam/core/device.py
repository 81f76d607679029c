"""Which torch device a setting names, checked once, with a one-line error naming the setting.

Every face resolves its device here before loading a model: ``--device`` of the CLI,
``DEFECTCAM_DEVICE`` of the Nuclio function (and so of ``defectcam serve``), cvat-cli's
``-p device=...``. Without this check ``--device cuda`` on a machine without a GPU ends in a
long traceback from deep inside torch when the first tensor moves.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a device is resolved, not on import (fast --help)
    import torch

#: Values that mean "CUDA when present, else CPU".
AUTO = ("", "auto")


class DeviceError(ValueError):
    """A device setting that cannot be used here; the message names the setting."""


def resolve_device(value: str | torch.device | None, setting: str = "device") -> torch.device:
    """The torch device ``value`` names, after checking that this machine has it.

    ``None``, ``""`` and ``"auto"`` pick CUDA when torch sees a GPU, else the CPU. ``setting``
    is how the user spelled the option (``--device``, ``DEFECTCAM_DEVICE``); a
    :class:`DeviceError` (a ``ValueError``) reads ``<setting>=<value>: <why>``.
    """
    import torch

    if isinstance(value, torch.device):
        text = str(value)
    else:
        text = (value or "").strip()
    if text.lower() in AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = f"{setting}={text}"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{where}: not a torch device (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        _check_cuda(device, where)
        return device
    backend = getattr(torch, device.type, None)  # torch.mps, torch.xpu, ...
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        raise DeviceError(f"{where}: torch {torch.__version__} has no usable {device.type} "
                          "device here (use cpu, cuda or auto)")
    return device


def _check_cuda(device: torch.device, where: str) -> None:
    import torch

    if torch.version.cuda is None:
        raise DeviceError(f"{where}: this torch build ({torch.__version__}) has no CUDA "
                          "support; use cpu, or install a CUDA build of torch")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"{where}: torch {torch.__version__} finds no CUDA GPU on this machine (no NVIDIA "
            "driver, CUDA_VISIBLE_DEVICES hides them, or the container was started without "
            "GPUs); use cpu or auto"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"{where}: only {count} CUDA device(s) visible (cuda:0 to "
                          f"cuda:{count - 1})")


# --------------------------------------------------------------------------- precision

#: What a setting may ask for: ``auto`` resolves per device (:func:`resolve_precision`), the
#: rest are autocast dtypes (``defectcam.core.predictor.PRECISIONS``).
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX): there bf16 is
    faster than fp32 (BENCHMARKS.md); elsewhere it is emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, setting: str = "precision") -> str:
    """The precision a model runs at on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    ``auto``: bf16 autocast on a CPU with native bf16 (:func:`cpu_supports_bf16`), bf16 on a
    CUDA GPU that supports it, fp32 everywhere else (emulated bf16 is slower than fp32; fp16
    stays a choice on CUDA, never a default: the climb's gradients get no loss scaling).
    ``fp16`` needs CUDA; ``bf16`` asked for explicitly runs anywhere. A :class:`ValueError`
    names ``setting`` (``--precision``, ``DEFECTCAM_PRECISION``).
    """
    import torch

    if precision not in PRECISION_CHOICES:
        raise ValueError(f"{setting} must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cpu":
            return "bf16" if cpu_supports_bf16() else "fp32"
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{setting}=fp16 needs CUDA; on {device.type} use bf16 or fp32")
    return precision
