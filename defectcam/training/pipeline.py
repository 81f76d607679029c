"""The training pipeline behind ``defectcam train``: CVAT click exports -> crops -> a held-apart
split by image -> a trained classifier -> its calibrated CAM scale -> weights on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.distributed as dist
from torch.utils.data import Subset

from defectcam.core.labels import NEGATIVE_LABEL
from defectcam.core.weights import (
    WeightsMetadata,
    check_working_max_side,
    load_weights,
    save_weights,
)
from defectcam.data.crops import ClickCropDataset, at_working_scale, build_crop_set
from defectcam.data.cvat_xml import clicks_from_annotations, read_cvat_xml
from defectcam.training.calibrate import calibrate_cam_scale
from defectcam.training.loop import TrainConfig, train_classifier


@dataclass
class ClickTraining:
    """One ``defectcam train`` job (the fields are its options; ``config`` the loop's)."""

    defect: str
    clicks: list[Path]
    images: Path
    out: Path
    negative_label: str = NEGATIVE_LABEL
    resume: Path | None = None
    crop_size: int = 320
    crops_per_click: int = 5
    holdout: float = 0.15
    max_holdout_crops: int = 512
    tile_size: int = 512
    seed: int = 0
    #: Crops are cut from images shrunk by this factor; recorded in the weights so that the
    #: predictor shrinks frames alike (``WeightsMetadata.working_scale``).
    working_scale: float = 1.0
    #: ... and further until the longer side fits this (0: no limit;
    #: ``WeightsMetadata.working_max_side``).
    working_max_side: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)


def holdout_split(names: list[str], fraction: float, seed: int) -> tuple[set, set]:
    """Split image names (not crops) so that no image feeds both fitting and validation."""
    ranked = sorted(set(names), key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).digest())
    n_val = max(1, round(len(ranked) * fraction)) if fraction > 0 and len(ranked) > 1 else 0
    return set(ranked[n_val:]), set(ranked[:n_val])


def train_from_clicks(job: ClickTraining, report=print) -> dict | None:
    """Run ``job``; ``report`` gets one line before training. Returns the summary
    (weights path, best validation F1 and epoch, CAM scale, seconds, device), or None on
    the ranks other than 0 of a torchrun job (rank 0 alone calibrates and writes)."""
    if not 0.0 < job.working_scale <= 1.0:
        raise ValueError(f"--working-scale must be within (0, 1], got {job.working_scale}")
    check_working_max_side(job.working_max_side, "--working-max-side")
    if job.resume is not None:
        resumed = load_weights(job.resume)[1]
        for option, theirs, ours in (
                ("--working-scale", resumed.working_scale, job.working_scale),
                ("--working-max-side", resumed.working_max_side, job.working_max_side)):
            if theirs != ours:  # checked before the crops are cut
                raise ValueError(f"{job.resume} was trained at {option} {theirs:g}; "
                                 "pass the same to fine-tune it")
    clicks = []
    for path in job.clicks:
        clicks += clicks_from_annotations(read_cvat_xml(path), job.defect, job.negative_label)
    if not any(len(c.positives) for c in clicks):
        raise ValueError(f"no {job.defect!r} clicks in {[str(p) for p in job.clicks]}")
    clicks, load_image = at_working_scale(clicks, job.working_scale,
                                          max_side=job.working_max_side)
    crops = build_crop_set(clicks, job.images, crop_size=job.crop_size,
                           crops_per_click=job.crops_per_click, seed=job.seed,
                           load_image=load_image)
    fit_names, val_names = holdout_split(crops.names, job.holdout, job.seed)
    fit_idx = [i for i, n in enumerate(crops.names) if n in fit_names]
    val_idx = [i for i, n in enumerate(crops.names) if n in val_names]
    if job.max_holdout_crops and len(val_idx) > job.max_holdout_crops:
        rng = np.random.default_rng(job.seed)
        val_idx = sorted(rng.choice(val_idx, job.max_holdout_crops, replace=False).tolist())
    train_set = Subset(ClickCropDataset(crops, augment=True, seed=job.seed, layout="hwc"),
                       fit_idx)
    train_set.set_epoch = train_set.dataset.set_epoch  # keep per-epoch augmentation seeding
    val_set = Subset(ClickCropDataset(crops, augment=False, layout="hwc"), val_idx)
    out = job.out / f"{job.defect}.safetensors" if job.out.suffix == "" else job.out
    labels = crops.labels
    metadata = WeightsMetadata(label=job.defect, tile_size=job.tile_size,
                               working_scale=job.working_scale,
                               working_max_side=job.working_max_side)
    if job.resume is not None:
        previous = load_weights(job.resume)[1]
        metadata = WeightsMetadata(**{**previous.to_json(), "training": {}, "metrics": {},
                                      "sha256": "", "mean": previous.mean, "std": previous.std})
    metadata.training = {
        "clicks": [str(p) for p in job.clicks],
        "images": str(job.images),
        "images_clicked": len({c.name for c in clicks}),
        "positive_clicks": int(sum(len(c.positives) for c in clicks)),
        "negative_clicks": int(sum(len(c.negatives) for c in clicks)),
        "crops": {"total": len(labels), "positive": int(labels.sum()),
                  "fit": len(fit_idx), "holdout": len(val_idx),
                  "size": job.crop_size, "per_click": job.crops_per_click},
        "resumed_from": str(job.resume) if job.resume else None,
    }
    report(f"{job.defect}: {len(fit_idx)} crops to fit, {len(val_idx)} held apart "
           f"({metadata.training['positive_clicks']} positive clicks on "
           f"{metadata.training['images_clicked']} images)")
    result = train_classifier(train_set, val_set, metadata, out, job.config,
                              init_weights=job.resume)
    if dist.is_available() and dist.is_initialized():  # under torchrun (DDP)
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return None  # rank 0 alone calibrates, writes the weights and reports
    model, best = load_weights(out)
    positives = Subset(val_set.dataset, [i for i in val_idx if labels[i] >= 0.5])
    best.cam_scale = calibrate_cam_scale(model, positives, best)
    save_weights(model, best, out)
    return {"weights": str(out), "best_val_f1": round(result.best_f1, 4),
            "best_epoch": result.best_epoch, "cam_scale": round(best.cam_scale, 4),
            "seconds": round(result.seconds, 1), "device": result.device}
