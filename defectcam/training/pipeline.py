"""The training pipeline behind ``defectcam train``: CVAT click exports -> crops -> a held-apart
split by image -> a trained classifier -> its calibrated CAM scale -> weights on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Subset

from defectcam.core.image_io import working_factor
from defectcam.core.labels import LABEL_NAMES as DEFECTS
from defectcam.core.labels import NEGATIVE_LABEL
from defectcam.core.weights import (
    WeightsMetadata,
    check_working_max_side,
    load_weights,
    save_weights,
)
from defectcam.data.crops import ClickCropDataset, CropSet, at_working_scale, build_crop_set
from defectcam.data.cvat_xml import clicks_from_annotations, read_cvat_xml
from defectcam.data.image_roots import ImageRoots
from defectcam.training.calibrate import calibrate_cam_scale
from defectcam.training.loop import (
    TrainConfig,
    binary_scores,
    predict_probabilities,
    train_classifier,
)

#: A fresh classifier's training settings (a resumed one inherits its weights' own).
FRESH_SETTINGS = {"crop_size": 320, "crops_per_click": 5, "working_scale": 1.0,
                  "working_max_side": 0}


@dataclass
class ClickTraining:
    """One ``defectcam train`` job (the fields are its options; ``config`` the loop's).

    ``crop_size``, ``crops_per_click``, ``working_scale``, ``working_max_side``: ``None``
    takes the resumed weights' values (a fresh classifier: :data:`FRESH_SETTINGS`).
    ``images``: the folders the exports' image names are relative to (searched together,
    :class:`~defectcam.data.image_roots.ImageRoots`). ``other_labels``: the labels whose
    clicks are negatives too where they apply (``None``: every other defect).
    ``force``: write weights whose held-apart figures are worse than the resumed ones'.
    """

    defect: str
    clicks: list[Path]
    images: Path | list[Path]
    out: Path
    negative_label: str = NEGATIVE_LABEL
    resume: Path | None = None
    crop_size: int | None = None
    crops_per_click: int | None = None
    holdout: float = 0.15
    max_holdout_crops: int = 512
    tile_size: int = 512
    seed: int = 0
    #: Crops are cut from images shrunk by this factor; recorded in the weights so that the
    #: predictor shrinks frames alike (``WeightsMetadata.working_scale``).
    working_scale: float | None = None
    #: ... and further until the longer side fits this (0: no limit;
    #: ``WeightsMetadata.working_max_side``).
    working_max_side: int | None = None
    other_labels: tuple[str, ...] | None = None
    force: bool = False
    config: TrainConfig = field(default_factory=TrainConfig)


class WorseThanResumedError(ValueError):
    """The fine-tuned weights are worse on the held-apart crops than the resumed ones."""


def holdout_split(names: list[str], fraction: float, seed: int) -> tuple[set, set]:
    """Split image names (not crops) so that no image feeds both fitting and validation."""
    ranked = sorted(set(names), key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).digest())
    n_val = max(1, round(len(ranked) * fraction)) if fraction > 0 and len(ranked) > 1 else 0
    return set(ranked[n_val:]), set(ranked[:n_val])


def resolve_settings(job: ClickTraining, resumed: WeightsMetadata | None,
                     report=print) -> ClickTraining:
    """``job`` with every unset training setting taken from the resumed weights (or the
    fresh defaults). A fine-tune must keep the working size (the classifier serves frames
    at the size it learnt), and says where its crop settings differ from the weights'."""
    trained = (resumed.training or {}).get("crops", {}) if resumed else {}
    inherited = {"crop_size": trained.get("size"), "crops_per_click": trained.get("per_click"),
                 "working_scale": resumed.working_scale if resumed else None,
                 "working_max_side": resumed.working_max_side if resumed else None}
    values = {}
    for name, option in (("crop_size", "--crop-size"), ("crops_per_click", "--crops-per-click"),
                         ("working_scale", "--working-scale"),
                         ("working_max_side", "--working-max-side")):
        told, theirs = getattr(job, name), inherited[name]
        if told is None:
            values[name] = theirs if theirs is not None else FRESH_SETTINGS[name]
            continue
        values[name] = told
        if theirs is not None and told != theirs:
            if name.startswith("working"):  # checked before the crops are cut
                raise ValueError(f"{job.resume} was trained at {option} {theirs:g}; "
                                 "pass the same to fine-tune it (or leave it out)")
            report(f"note: {option} {told} differs from the {theirs} {job.resume} was "
                   "trained with")
    return replace(job, **values)


def held_apart_score(probabilities: np.ndarray, labels: np.ndarray) -> tuple[str, float]:
    """The figure two classifiers are compared by on the same held-apart crops: F1 where
    they hold positives, else accuracy (F1 is 0 for every classifier without positives)."""
    scores = binary_scores(probabilities, labels)
    return ("f1", scores["f1"]) if (labels >= 0.5).any() else ("accuracy", scores["accuracy"])


def _score(model, dataset, metadata: WeightsMetadata) -> tuple[str, float]:
    probs, labels, _ = predict_probabilities(model, dataset, torch.device("cpu"), metadata)
    return held_apart_score(probs, labels)


def candidate_path(out: Path) -> Path:
    """Where a fine-tune trains before its weights may replace ``out``: a ``candidate``
    folder beside it (weights folders are read flat, so a candidate there is never served),
    which keeps the run's log and curves."""
    return out.parent / "candidate" / out.name


def split_crops(crops: CropSet, holdout: float, max_holdout_crops: int, seed: int
                ) -> tuple[Subset, Subset]:
    """(crops to fit, augmented; held-apart crops) split by image (:func:`holdout_split`),
    at most ``max_holdout_crops`` held apart (a seeded sample; 0: all)."""
    fit_names, val_names = holdout_split(crops.names, holdout, seed)
    fit_idx = [i for i, n in enumerate(crops.names) if n in fit_names]
    val_idx = [i for i, n in enumerate(crops.names) if n in val_names]
    if max_holdout_crops and len(val_idx) > max_holdout_crops:
        rng = np.random.default_rng(seed)
        val_idx = sorted(rng.choice(val_idx, max_holdout_crops, replace=False).tolist())
    train_set = Subset(ClickCropDataset(crops, augment=True, seed=seed, layout="hwc"), fit_idx)
    train_set.set_epoch = train_set.dataset.set_epoch  # keep per-epoch augmentation seeding
    return train_set, Subset(ClickCropDataset(crops, augment=False, layout="hwc"), val_idx)


def train_from_clicks(job: ClickTraining, report=print) -> dict | None:
    """Run ``job``; ``report`` gets one line before training and the notes. Returns the
    summary (weights path, best validation F1 and epoch, CAM scale, seconds, device), or
    None on the ranks other than 0 of a torchrun job (rank 0 alone calibrates and writes).

    A fine-tune (``resume``) trains into :func:`candidate_path` and writes ``out`` only when
    it scores at least as well as the resumed weights on the same held-apart crops (or with
    ``force``); otherwise it raises :class:`WorseThanResumedError` saying by how much, and
    ``out`` (which may be the resumed file itself) is left as it was.
    """
    resumed_model, resumed = load_weights(job.resume) if job.resume else (None, None)
    job = resolve_settings(job, resumed, report)
    if not 0.0 < job.working_scale <= 1.0:
        raise ValueError(f"--working-scale must be within (0, 1], got {job.working_scale}")
    check_working_max_side(job.working_max_side, "--working-max-side")
    others = (tuple(d for d in DEFECTS if d != job.defect) if job.other_labels is None
              else tuple(job.other_labels))
    # another label's click is a negative only where no clicked defect lies inside the
    # reach of its (centred, jittered) negative crop, measured in the image's own pixels
    reach = job.crop_size // 2 + job.crop_size // 8

    def clearance(width: int, height: int) -> float:
        return reach / working_factor(width, height, job.working_scale, job.working_max_side)

    clicks = []
    for path in job.clicks:
        clicks += clicks_from_annotations(read_cvat_xml(path), job.defect, job.negative_label,
                                          other_labels=others, clearance=clearance)
    if not any(len(c.positives) for c in clicks):
        raise ValueError(f"no {job.defect!r} clicks in {[str(p) for p in job.clicks]}")
    roots = ImageRoots.of(job.images)
    clicks, load_image = at_working_scale(clicks, job.working_scale,
                                          max_side=job.working_max_side)
    crops = build_crop_set(clicks, roots, crop_size=job.crop_size,
                           crops_per_click=job.crops_per_click, seed=job.seed,
                           load_image=load_image)
    train_set, val_set = split_crops(crops, job.holdout, job.max_holdout_crops, job.seed)
    fit_idx, val_idx = train_set.indices, val_set.indices
    out = job.out / f"{job.defect}.safetensors" if job.out.suffix == "" else job.out
    labels = crops.labels
    metadata = WeightsMetadata(label=job.defect, tile_size=job.tile_size,
                               working_scale=job.working_scale,
                               working_max_side=job.working_max_side)
    if resumed is not None:
        metadata = WeightsMetadata(**{**resumed.to_json(), "training": {}, "metrics": {},
                                      "sha256": "", "mean": resumed.mean, "std": resumed.std})
    metadata.training = {
        "clicks": [str(p) for p in job.clicks],
        "images": [str(p) for p in roots.roots],
        "images_clicked": len({c.name for c in clicks}),
        "positive_clicks": int(sum(len(c.positives) for c in clicks)),
        "negative_clicks": int(sum(len(c.negatives) for c in clicks)),
        "other_label_negative_clicks": int(sum(c.other_label_negatives for c in clicks)),
        "other_labels": list(others),
        "crops": {"total": len(labels), "positive": int(labels.sum()),
                  "fit": len(fit_idx), "holdout": len(val_idx),
                  "size": job.crop_size, "per_click": job.crops_per_click},
        "resumed_from": str(job.resume) if job.resume else None,
    }
    t = metadata.training
    report(f"{job.defect}: {len(fit_idx)} crops to fit, {len(val_idx)} held apart "
           f"({t['positive_clicks']} positive clicks on {t['images_clicked']} images; "
           f"{t['negative_clicks']} negative, of them {t['other_label_negative_clicks']} "
           f"other defects' clicks; crops of {job.crop_size} px, {job.crops_per_click} "
           "per click)")
    before = _score(resumed_model, val_set, resumed) if resumed_model is not None else None
    del resumed_model
    target = candidate_path(out) if job.resume is not None else out
    result = train_classifier(train_set, val_set, metadata, target, job.config,
                              init_weights=job.resume)
    if dist.is_available() and dist.is_initialized():  # under torchrun (DDP)
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return None  # rank 0 alone calibrates, writes the weights and reports
    model, best = load_weights(target)
    if target != out:  # a finished fine-tune: a later round must not resume this run
        target.with_name(target.stem + ".checkpoint.safetensors").unlink(missing_ok=True)
    positives = Subset(val_set.dataset, [i for i in val_idx if labels[i] >= 0.5])
    scale = calibrate_cam_scale(model, positives, best) if len(positives) else 0.0
    if scale > 0.0:
        best.cam_scale = scale
    else:  # no held-apart positive the classifier gets right: nothing to calibrate on
        best.cam_scale = resumed.cam_scale if resumed is not None else best.cam_scale
        report(f"note: no held-apart {job.defect} crop ({len(positives)} positive) that the "
               f"classifier calls {job.defect}: cam_scale kept at {best.cam_scale:g} "
               f"({'the resumed weights' if resumed else 'the default'}); add clicks or "
               "raise --holdout to calibrate it")
    summary = {"weights": str(out), "best_val_f1": round(result.best_f1, 4),
               "best_epoch": result.best_epoch, "cam_scale": round(best.cam_scale, 4),
               "seconds": round(result.seconds, 1), "device": result.device}
    if before is not None:
        after = _score(model, val_set, best)
        best.metrics = dict(best.metrics, held_apart_vs_resumed={
            "figure": after[0], "resumed": round(before[1], 4), "fine_tuned": round(after[1], 4),
            "crops": len(val_idx)})
        summary["held_apart"] = best.metrics["held_apart_vs_resumed"]
        worse = after[1] < before[1]
        if worse and not job.force:
            save_weights(model, best, target)
            raise WorseThanResumedError(
                f"the fine-tuned {job.defect} weights score {after[0]} {after[1]:.3f} on "
                f"{len(val_idx)} held-apart crops, the resumed {job.resume} {before[1]:.3f}: "
                f"{out} not written (the candidate is {target}); add clicks, or pass --force "
                "to write such a run anyway")
        if worse:
            report(f"note: --force: writing weights worse than {job.resume} on held-apart "
                   f"crops ({after[0]} {after[1]:.3f} < {before[1]:.3f})")
    save_weights(model, best, out)
    return summary
