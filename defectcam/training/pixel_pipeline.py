"""``defectcam train --masks``: clicks + pixel masks -> a classifier that serves pixels.

The crops are the clicks' crops (the head keeps learning from them), each with the pixel
labels of its image cut alongside: annotated masks where a team has them, pseudo-masks
elsewhere (``defectcam pseudo-masks``). The start is a click-trained classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from defectcam.core.labels import NEGATIVE_LABEL
from defectcam.core.weights import WeightsMetadata, read_metadata
from defectcam.data.crops import at_working_scale, build_crop_set
from defectcam.data.cvat_xml import clicks_from_annotations, read_cvat_xml
from defectcam.training.pipeline import split_crops
from defectcam.training.pixel_loop import PixelConfig, train_pixels
from defectcam.training.pseudo_masks import mask_loader

#: Post-processing of a pixel map: its probability is the map, 0.5 the natural cut, and the
#: head learned the fitted outlines, so no evidence refinement is applied on top.
PIXEL_SERVING = {"cam_threshold": 0.5, "cam_scale": 1.0, "iterations": 0, "refinement": {},
                 "confidence": "mean", "serves": "pixel"}


@dataclass
class PixelTraining:
    """One ``defectcam train --masks`` job."""

    defect: str
    clicks: list[Path]
    images: list[Path]
    masks: list[Path]
    start: Path
    out: Path
    negative_label: str = NEGATIVE_LABEL
    crop_size: int = 128
    crops_per_click: int = 3
    holdout: float = 0.15
    max_holdout_crops: int = 512
    seed: int = 0
    config: PixelConfig = field(default_factory=PixelConfig)


def pixel_metadata(start: WeightsMetadata, job: PixelTraining) -> WeightsMetadata:
    """The sidecar of the trained pixel classifier: the start's working size, tiles and
    AdvCAM settings, pixel serving (:data:`PIXEL_SERVING`)."""
    data = {**start.to_json(), **PIXEL_SERVING, "training": {}, "metrics": {}, "sha256": ""}
    data["mean"], data["std"] = start.mean, start.std
    return WeightsMetadata(**data)


def train_pixels_from_clicks(job: PixelTraining, report=print) -> dict:
    """Run ``job``. Returns a summary: weights, best held-apart pixel IoU and epoch, F1,
    seconds, crops/s, crop counts."""
    start = read_metadata(job.start)
    if job.defect != start.label:
        raise ValueError(f"--resume {job.start} is a {start.label} classifier, "
                         f"not {job.defect}")
    clicks = []
    for path in job.clicks:
        clicks += clicks_from_annotations(read_cvat_xml(path), job.defect, job.negative_label)
    if not any(len(c.positives) for c in clicks):
        raise ValueError(f"no {job.defect!r} clicks in {[str(p) for p in job.clicks]}")
    clicks, load_image = at_working_scale(clicks, start.working_scale,
                                          max_side=start.working_max_side)
    crops = build_crop_set(clicks, job.images, crop_size=job.crop_size,
                           crops_per_click=job.crops_per_click, seed=job.seed,
                           load_image=load_image, load_mask=mask_loader(job.masks))
    train_set, val_set = split_crops(crops, job.holdout, job.max_holdout_crops, job.seed)
    fit_idx, val_idx = train_set.indices, val_set.indices
    out = job.out / f"{job.defect}.safetensors" if job.out.suffix == "" else job.out
    metadata = pixel_metadata(start, job)
    certain = crops.masks != 255
    metadata.training = {
        "stage": "pixels",
        "clicks": [str(p) for p in job.clicks], "images": [str(p) for p in job.images],
        "masks": [str(m) for m in job.masks], "started_from": str(job.start),
        "images_clicked": len({c.name for c in clicks}),
        "positive_clicks": int(sum(len(c.positives) for c in clicks)),
        "negative_clicks": int(sum(len(c.negatives) for c in clicks)),
        "crops": {"total": len(crops), "fit": len(fit_idx), "holdout": len(val_idx),
                  "size": job.crop_size, "per_click": job.crops_per_click,
                  "certain_pixels": round(float(certain.mean()), 4),
                  "defect_pixels": round(float((crops.masks == 1).mean()), 4)},
    }
    report(f"{job.defect}: {len(fit_idx)} crops to fit, {len(val_idx)} held apart, "
           f"{metadata.training['crops']['certain_pixels']:.0%} of pixels certain, "
           f"{metadata.training['crops']['defect_pixels']:.1%} defect")
    result = train_pixels(train_set, val_set, metadata, job.start, out, job.config)
    best = result.history[result.best_epoch - 1] if result.best_epoch > 0 else {}
    return {"weights": str(out), "best_pixel_iou": round(result.best_iou, 4),
            "best_epoch": result.best_epoch, "best_f1": round(best.get("val_f1", 0.0), 4),
            "epochs_run": len(result.history), "seconds": round(result.seconds, 1),
            "crops_per_second": round(result.crops_per_second, 1)}
