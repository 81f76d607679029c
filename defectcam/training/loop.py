"""The training loop: AdamW + BCE, validation F1 each epoch, best checkpoint kept, resumable.

Single process on CPU or one GPU; DistributedDataParallel when started by ``torchrun`` with
several GPUs (WORLD_SIZE > 1). Batch 32 is reached by gradient accumulation over
micro-batches so that it fits any device.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from defectcam.core.device import cpu_supports_bf16
from defectcam.core.model import DefectClassifier, build_classifier
from defectcam.core.transforms import normalize_batch
from defectcam.core.weights import WeightsMetadata, load_weights, save_weights
from defectcam.training.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    """Method.md section 2: AdamW lr 1e-4, weight decay 1e-2, batch 32, BCE, best val F1."""

    epochs: int = 10
    batch_size: int = 32
    micro_batch: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-2
    seed: int = 0
    device: str | None = None
    #: auto: bf16 autocast where the device runs it natively (CUDA with bf16, a CPU with
    #: AVX-512 BF16 / AMX), else fp32. Validation always runs in fp32, as inference does.
    precision: str = "auto"
    max_steps_per_epoch: int | None = None
    #: Keep BatchNorm statistics fixed (eval mode) while training: for fine-tuning on a few
    #: feedback clicks, whose small batches would otherwise overwrite the statistics that the
    #: classifier was validated with.
    freeze_batchnorm: bool = False
    num_workers: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    weights: Path
    best_f1: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def binary_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, precision, recall and F1 of thresholded probabilities (0.5)."""
    pred = probabilities >= 0.5
    truth = labels >= 0.5
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = float((pred == truth).mean()) if len(truth) else 0.0
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


# --- DistributedDataParallel (torchrun) ----------------------------------------------------

def training_device(requested: str | None, world: int, local: int,
                    cuda_available: bool) -> torch.device:
    """This rank's device: the requested one, except that a bare ``cuda`` under torchrun
    (``world`` > 1) means this rank's GPU, ``cuda:LOCAL_RANK``; unset: ``cuda:LOCAL_RANK``
    when there is a GPU, else the CPU."""
    if requested:
        device = torch.device(requested)
        if world > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", local)
        return device
    return torch.device("cuda", local) if cuda_available else torch.device("cpu")


def _distributed(device: torch.device) -> tuple[int, int]:
    """(world size, rank); joins torchrun's process group: NCCL when this rank trains on a
    GPU (set as the current device, which NCCL's barrier uses), gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, (dist.get_rank() if world > 1 else 0)

# ------------------------------------------------------------------------------------------


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training runs under on ``device`` (None: fp32), as
    ``config.precision`` asks."""
    if config.precision == "fp32":
        return None
    if device.type == "cuda":
        if config.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported():
            return torch.bfloat16  # bf16 needs no loss scaling: safe for BCE on one logit
        return torch.float16 if config.precision == "fp16" else None
    if device.type == "cpu":
        if config.precision == "bf16" or (config.precision == "auto" and cpu_supports_bf16()):
            return torch.bfloat16
        if config.precision == "fp16":
            raise ValueError("precision fp16 needs CUDA; on CPU use bf16 or fp32")
    return None


@torch.no_grad()
def predict_probabilities(model: DefectClassifier, dataset: Dataset, device: torch.device,
                          metadata: WeightsMetadata, batch: int = 16) -> tuple[np.ndarray, ...]:
    """(probabilities, labels, CAM peaks) over a dataset of (uint8 HWC, label) items."""
    model.eval()
    probs, labels, peaks = [], [], []
    for images, y in DataLoader(dataset, batch_size=batch, shuffle=False):
        out = model(normalize_batch(images.to(device), metadata.mean, metadata.std))
        probs.append(torch.sigmoid(out.logit.float()).cpu().numpy())
        peaks.append(out.cam.float().amax(dim=(1, 2)).cpu().numpy())
        labels.append(y.numpy())
    if not probs:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(peaks)


def fit_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches,
             accumulate: int, device: torch.device, metadata: WeightsMetadata,
             amp: torch.dtype | None) -> float:
    """One optimiser step over ``accumulate`` micro-batches of ``batches`` ((uint8 NHWC
    images, float labels) pairs); returns the mean BCE loss. The training loop and
    ``benchmarks/bench_training.py`` both run this."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(accumulate):
        images, labels = next(batches)
        x = normalize_batch(images.to(device), metadata.mean, metadata.std)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logit = model(x).logit
        loss = F.binary_cross_entropy_with_logits(logit.float(), labels.to(device))
        (loss / accumulate).backward()
        total += loss.item() / accumulate
    optimizer.step()
    return total


def train_classifier(
    train_set: Dataset,
    val_set: Dataset,
    metadata: WeightsMetadata,
    out: str | Path,
    config: TrainConfig | None = None,
    init_weights: str | Path | None = None,
) -> TrainResult:
    """Train, keep the best-F1 weights at ``out`` (.safetensors + .json), log next to it.

    ``out``'s folder also receives ``<label>.checkpoint.safetensors`` (resumed automatically
    when present), ``<label>.log.jsonl`` and ``<label>.curves.png``. ``init_weights`` starts
    from existing weights (fine-tuning with new clicks).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = config or TrainConfig()
    device = training_device(config.device, int(os.environ.get("WORLD_SIZE", "1")),
                             int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.is_available())
    world, rank = _distributed(device)
    torch.manual_seed(config.seed + rank)
    model = build_classifier(seed=config.seed)
    if init_weights is not None:
        model.load_state_dict(load_weights(init_weights)[0].state_dict())
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    stem = out.with_suffix("")
    ckpt = stem.with_name(stem.name + ".checkpoint.safetensors")
    log_path = stem.with_name(stem.name + ".log.jsonl")
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": -1, "seconds": 0.0,
             "history": []}
    if ckpt.is_file():
        state = load_checkpoint(ckpt, model, optimizer)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    sampler = DistributedSampler(train_set, world, rank, seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed)
    accumulate = max(1, config.batch_size // (config.micro_batch * world))
    amp = autocast_dtype(config, device)
    started = time.perf_counter() - state["seconds"]
    for epoch in range(state["epoch"], config.epochs):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(config.seed * 1000 + epoch)  # same order on resume
        loader = DataLoader(train_set, batch_size=config.micro_batch, sampler=sampler,
                            shuffle=sampler is None, generator=generator, drop_last=True,
                            num_workers=config.num_workers)
        ddp.train()
        if config.freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        losses = []
        steps = len(loader) // accumulate
        if config.max_steps_per_epoch:
            steps = min(steps, config.max_steps_per_epoch)
        bar = tqdm(total=steps, desc=f"{metadata.label} epoch {epoch + 1}/{config.epochs}",
                   disable=not config.progress or rank != 0, leave=False)
        batches = iter(loader)
        for _ in range(steps):
            total = fit_step(ddp, optimizer, batches, accumulate, device, metadata, amp)
            state["step"] += 1
            losses.append(total)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}")
        bar.close()
        probs, labels, _ = predict_probabilities(model, val_set, device, metadata)
        scores = binary_scores(probs, labels)
        record = {"epoch": epoch + 1, "step": state["step"],
                  "train_loss": float(np.mean(losses)) if losses else None,
                  "seconds": time.perf_counter() - started, **{f"val_{k}": v
                                                                for k, v in scores.items()}}
        state["history"].append(record)
        state["seconds"] = time.perf_counter() - started
        if rank == 0:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if scores["f1"] > state["best_f1"]:
                state["best_f1"], state["best_epoch"] = scores["f1"], epoch + 1
                save_weights(model, _finished_metadata(metadata, state, config, device), out)
            state["epoch"] = epoch + 1
            save_checkpoint(ckpt, model, optimizer, state)
            if config.progress:
                tqdm.write(f"{metadata.label} epoch {epoch + 1}: loss {record['train_loss']:.4f} "
                           f"val F1 {scores['f1']:.3f} (best {state['best_f1']:.3f})")
    if world > 1:
        dist.barrier()
    if rank == 0:
        from defectcam.training.curves import plot_curves

        plot_curves(state["history"], stem.with_name(stem.name + ".curves.png"), metadata.label)
    return TrainResult(weights=out, best_f1=state["best_f1"], best_epoch=state["best_epoch"],
                       history=state["history"], seconds=state["seconds"], device=str(device))


def _finished_metadata(metadata: WeightsMetadata, state: dict, config: TrainConfig,
                       device: torch.device) -> WeightsMetadata:
    meta = WeightsMetadata(**{k: v for k, v in asdict(metadata).items()})
    meta.training = dict(metadata.training, config=asdict(config),
                         best_epoch=state["best_epoch"], steps=state["step"],
                         seconds=round(state["seconds"], 1), device=str(device),
                         torch=torch.__version__)
    meta.metrics = dict(metadata.metrics, val_classification=state["history"][-1])
    return meta
