"""The second stage: the classifier's decoder learns pixels while its head keeps the clicks.

One optimiser step sums the clicks' BCE on the crop logit and, on the crop's certain pixels
only (unsure = 255 is ignored), a BCE + soft-Dice loss of the pixel head. Validation each
epoch on held-apart crops: pixel IoU on their certain pixels (the served map) and the
classification F1; the best pixel IoU is kept, and training stops once it has not risen for
``patience`` epochs (the held-apart curve, not a fixed step count, ends the run).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from defectcam.core.model import DefectClassifier, build_classifier
from defectcam.core.transforms import normalize_batch
from defectcam.core.weights import WeightsMetadata, load_weights, save_weights
from defectcam.training.checkpoint import load_checkpoint, save_checkpoint
from defectcam.training.curves import plot_curves
from defectcam.training.loop import TrainConfig, autocast_dtype, binary_scores, training_device
from defectcam.training.pixel_labels import UNSURE

#: The pixel head starts at this bias: a low probability everywhere, as most pixels are not a
#: defect, so the first steps do not paint whole crops.
PIXEL_BIAS_INIT = -2.0


@dataclass
class PixelConfig:
    """The loop's settings beyond :class:`TrainConfig`'s (whose ``epochs`` is the ceiling)."""

    #: Weight of the pixel loss against the clicks' BCE.
    pixel_weight: float = 1.0
    #: Stop after this many epochs without a better held-apart pixel IoU (0: never).
    patience: int = 3
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PixelResult:
    """The best epoch's held-apart figures, the history, and where the weights went."""

    weights: Path
    best_iou: float
    best_epoch: int
    history: list[dict]
    seconds: float
    crops_per_second: float


def pixel_loss(pixel_logit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over the certain pixels of a batch.

    Args:
        pixel_logit: (B, H, W) logits.
        mask: (B, H, W) uint8, 0 background, 1 defect, 255 unsure (ignored).

    Returns:
        A scalar (0 when no pixel is certain).
    """
    certain = mask != UNSURE
    if not bool(certain.any()):
        return pixel_logit.sum() * 0.0
    target = (mask == 1).float()
    logit = pixel_logit.float()
    bce = F.binary_cross_entropy_with_logits(logit[certain], target[certain])
    prob = torch.sigmoid(logit) * certain
    target = target * certain
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def pixel_fit_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches,
                   accumulate: int, device: torch.device, metadata: WeightsMetadata,
                   amp: torch.dtype | None, pixel_weight: float) -> float:
    """One optimiser step over ``accumulate`` micro-batches of (images, labels, masks);
    returns the mean total loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(accumulate):
        images, labels, masks = next(batches)
        x = normalize_batch(images.to(device), metadata.mean, metadata.std)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.logit.float(), labels.to(device))
        loss = loss + pixel_weight * pixel_loss(out.pixel_logit, masks.to(device))
        (loss / accumulate).backward()
        total += loss.item() / accumulate
    optimizer.step()
    return total


@torch.no_grad()
def held_apart_scores(model: DefectClassifier, dataset: Dataset, device: torch.device,
                      metadata: WeightsMetadata, batch: int = 16) -> dict:
    """Pixel IoU (probability >= 0.5 vs defect, on certain pixels) summed over the crops,
    and the classification scores of :func:`binary_scores`."""
    model.eval()
    inter = union = 0
    probs, labels = [], []
    for images, y, masks in DataLoader(dataset, batch_size=batch, shuffle=False):
        out = model(normalize_batch(images.to(device), metadata.mean, metadata.std))
        certain = masks.to(device) != UNSURE
        pred = (out.cam >= 0.5) & certain
        truth = (masks.to(device) == 1) & certain
        inter += int((pred & truth).sum())
        union += int((pred | truth).sum())
        probs.append(torch.sigmoid(out.logit.float()).cpu().numpy())
        labels.append(y.numpy())
    scores = binary_scores(np.concatenate(probs), np.concatenate(labels)) if probs else {}
    return {"pixel_iou": inter / union if union else 0.0, **scores}


def start_model(init_weights: Path, seed: int) -> tuple[DefectClassifier, WeightsMetadata]:
    """A classifier with a pixel head, from weights with or without one (a click-trained
    classifier gets a fresh pixel head; its other tensors are kept)."""
    source, metadata = load_weights(init_weights)
    model = build_classifier(seed=seed, pixel_head=True)
    state = source.state_dict()
    missing = set(model.state_dict()) - set(state)
    if missing - {"pixel_head.weight", "pixel_head.bias"}:
        raise ValueError(f"{init_weights}: missing tensors {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)
    if "pixel_head.bias" in missing:
        with torch.no_grad():
            model.pixel_head.bias.fill_(PIXEL_BIAS_INIT)
    return model, metadata


def train_pixels(train_set: Dataset, val_set: Dataset, metadata: WeightsMetadata,
                 init_weights: Path, out: Path, config: PixelConfig) -> PixelResult:
    """Train the pixel stage; the best held-apart pixel IoU is saved at ``out``.

    Args:
        train_set: (image, label, mask) crops to fit.
        val_set: held-apart crops of the same kind.
        metadata: the sidecar to write (``serves`` pixel).
        init_weights: the classifier to start from (with or without a pixel head).
        out: weights path; its folder also gets ``<label>.checkpoint.safetensors`` (resumed
            when present), ``<label>.log.jsonl`` and ``<label>.curves.png``.
        config: loop settings.

    Returns:
        The best epoch's figures and the run's time.
    """
    tc = config.train
    out.parent.mkdir(parents=True, exist_ok=True)
    device = training_device(tc.device, 1, 0, torch.cuda.is_available())
    torch.manual_seed(tc.seed)
    model, _ = start_model(init_weights, tc.seed)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    stem = out.with_suffix("")
    ckpt = stem.with_name(stem.name + ".checkpoint.safetensors")
    log_path = stem.with_name(stem.name + ".log.jsonl")
    state = {"epoch": 0, "step": 0, "best_iou": -1.0, "best_epoch": -1, "seconds": 0.0,
             "crops": 0, "history": []}
    if ckpt.is_file():
        state = load_checkpoint(ckpt, model, optimizer)
    accumulate = max(1, tc.batch_size // tc.micro_batch)
    amp = autocast_dtype(tc, device)
    started = time.perf_counter() - state["seconds"]
    generator = torch.Generator()
    for epoch in range(state["epoch"], tc.epochs):
        if config.patience and epoch - state["best_epoch"] >= config.patience \
                and state["best_epoch"] > 0:
            break
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        generator.manual_seed(tc.seed * 1000 + epoch)
        loader = DataLoader(train_set, batch_size=tc.micro_batch, shuffle=True,
                            generator=generator, drop_last=True)
        model.train()
        if tc.freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        steps = len(loader) // accumulate
        if tc.max_steps_per_epoch:
            steps = min(steps, tc.max_steps_per_epoch)
        batches, losses = iter(loader), []
        for _ in range(steps):
            losses.append(pixel_fit_step(model, optimizer, batches, accumulate, device,
                                         metadata, amp, config.pixel_weight))
            state["step"] += 1
        state["crops"] += steps * accumulate * tc.micro_batch
        scores = held_apart_scores(model, val_set, device, metadata)
        state["seconds"] = time.perf_counter() - started
        record = {"epoch": epoch + 1, "step": state["step"],
                  "train_loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(state["seconds"], 1),
                  **{f"val_{k}": v for k, v in scores.items()}}
        state["history"].append(record)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if scores["pixel_iou"] > state["best_iou"]:
            state["best_iou"], state["best_epoch"] = scores["pixel_iou"], epoch + 1
            save_weights(model, _finished(metadata, state, tc, device), out)
        state["epoch"] = epoch + 1
        save_checkpoint(ckpt, model, optimizer, state)
        if tc.progress:
            print(f"{metadata.label} epoch {epoch + 1}: loss {record['train_loss']:.4f} "
                  f"held-apart pixel IoU {scores['pixel_iou']:.3f} F1 {scores['f1']:.3f} "
                  f"(best IoU {state['best_iou']:.3f})", flush=True)
    if state["history"]:
        plot_curves(state["history"], stem.with_name(stem.name + ".curves.png"),
                    metadata.label)
    seconds = state["seconds"]
    return PixelResult(weights=out, best_iou=state["best_iou"], best_epoch=state["best_epoch"],
                       history=state["history"], seconds=seconds,
                       crops_per_second=state["crops"] / seconds if seconds else 0.0)


def _finished(metadata: WeightsMetadata, state: dict, config: TrainConfig,
              device: torch.device) -> WeightsMetadata:
    meta = WeightsMetadata(**asdict(metadata))
    meta.training = dict(metadata.training, config=asdict(config),
                         best_epoch=state["best_epoch"], steps=state["step"],
                         crops_seen=state["crops"], seconds=round(state["seconds"], 1),
                         device=str(device), torch=torch.__version__)
    meta.metrics = dict(metadata.metrics, val_pixels=state["history"][-1])
    return meta
