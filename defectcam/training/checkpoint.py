"""Resumable training state without pickles: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from defectcam.core.weights import WeightsError


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict) -> None:
    """``path`` (.safetensors) holds model and AdamW tensors; ``path.json`` the counters."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, slot in opt["state"].items():
        for key, value in slot.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)  # atomic: a killed run never leaves half a checkpoint
    meta = dict(state, param_groups=[{k: v for k, v in g.items() if k != "params"}
                                     for g in opt["param_groups"]])
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_checkpoint(path: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer in place; returns the JSON state (epoch, step, ...)."""
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise WeightsError(f"{path}: checkpoint (and its {side.name}) not found")
    try:
        tensors = load_file(str(path))
        state = json.loads(side.read_text())
    except Exception as exc:  # any corruption is reported with the file name
        raise WeightsError(f"{path}: unreadable checkpoint ({exc})") from exc
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt = optimizer.state_dict()
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    opt["state"] = slots
    for group, saved in zip(opt["param_groups"], state.pop("param_groups"), strict=True):
        group.update(saved)
    optimizer.load_state_dict(opt)
    return state
