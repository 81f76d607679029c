"""Which torch device a setting names, checked once, with a one-line error naming the setting.

Every face resolves its device here before loading a model: ``--device`` of the CLI,
``DEFECTCAM_DEVICE`` of the Nuclio function (and so of ``defectcam serve``), cvat-cli's
``-p device=...``. Without this check ``--device cuda`` on a machine without a GPU ends in a
long traceback from deep inside torch when the first tensor moves.
"""

from __future__ import annotations

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
