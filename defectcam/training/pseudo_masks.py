"""Pseudo-masks: a click-trained classifier's refined map as pixel labels for the second stage.

Each clicked image gets a three-valued mask at the size training crops are cut from: defect
(the map fitted to image evidence, as the weights post-process proposals), background (a low
map far from any defect, discs around negative clicks, and every pixel of an image clicked
without a single positive: annotators click every defect, so such an image holds none) and
unsure (ignored by the loss). Masks are PNGs cached per image name with a manifest naming the
weights and settings that made them, so a run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from defectcam.core.proposer import DefectProposer
from defectcam.core.refine import disc
from defectcam.data.crops import at_working_scale, read_rgb
from defectcam.data.cvat_xml import CvatAnnotations, ImageClicks
from defectcam.data.image_roots import ImageRoots
from defectcam.feedback.match import shape_region
from defectcam.training.pixel_labels import (  # noqa: F401  (re-exported)
    BACKGROUND,
    DEFECT,
    UNSURE,
    PseudoMaskSettings,
)

MANIFEST = "pseudo-masks.json"


def mask_file(out: Path, name: str) -> Path:
    """Where the mask of image ``name`` (a path relative to the image folder) is cached."""
    return out / Path(name).with_suffix(".png")


def label_mask(defect_map: np.ndarray, defect: np.ndarray, clicks: ImageClicks,
               settings: PseudoMaskSettings) -> np.ndarray:
    """The three-valued mask of one image from its normalised map, the fitted defect region
    and its clicks (all at the same size).

    Args:
        defect_map: (H, W) float map in [0, 1].
        defect: (H, W) bool, the map fitted to image evidence.
        clicks: the image's clicks in the same pixels.
        settings: thresholds and radii.

    Returns:
        (H, W) uint8: 0 background, 1 defect, 255 unsure.
    """
    height, width = defect_map.shape
    mask = np.full((height, width), UNSURE, np.uint8)
    positives = np.asarray(clicks.positives, float).reshape(-1, 2)
    negatives = np.asarray(clicks.negatives, float).reshape(-1, 2)
    if not len(positives):  # an image clicked with no defect of this kind holds none
        mask[:] = BACKGROUND
        _stamp(mask, negatives, settings.click_radius, BACKGROUND)
        return mask
    near = np.zeros((height, width), np.uint8)
    _stamp(near, positives, settings.click_radius, 1)
    count, components = cv2.connectedComponents(defect.astype(np.uint8), connectivity=8)
    clicked = np.unique(components[(near > 0) & (components > 0)])
    kept = np.isin(components, clicked) & (components > 0)
    grown = cv2.dilate(defect.astype(np.uint8), disc(settings.margin)) > 0
    mask[(defect_map < settings.background_below) & ~grown] = BACKGROUND
    mask[kept] = DEFECT
    _stamp(mask, negatives, settings.click_radius, BACKGROUND)
    _stamp(mask, positives, 2, DEFECT)  # the clicked pixel is the annotator's own word
    return mask


def _stamp(mask: np.ndarray, points: np.ndarray, radius: int, value: int) -> None:
    for x, y in points:
        cv2.circle(mask, (int(round(x)), int(round(y))), int(radius), int(value), -1)


def pseudo_mask(proposer: DefectProposer, label: str, image: np.ndarray, clicks: ImageClicks,
                settings: PseudoMaskSettings) -> np.ndarray:
    """The three-valued mask of ``image`` (RGB at the working size) for ``label``.

    Args:
        proposer: holds ``label``'s classifier and its post-processing settings.
        label: the defect.
        image: (H, W, 3) uint8 RGB, already at the size crops are cut from.
        clicks: the image's clicks in its pixels.
        settings: how the map is made and labelled.

    Returns:
        (H, W) uint8 mask (see :func:`label_mask`).
    """
    height, width = image.shape[:2]
    if not len(clicks.positives):  # all background whatever the map says: no pass needed
        return label_mask(np.zeros((height, width), np.float32), np.zeros((height, width), bool),
                          clicks, settings)
    predictor = proposer.predictors[label]
    defect_map = predictor.predict(image, settings.iterations, screen_threshold=None)
    cam = defect_map.cam_map
    if settings.flips:
        flipped = predictor.predict(np.ascontiguousarray(image[:, ::-1]), settings.iterations,
                                    screen_threshold=None)
        cam = 0.5 * (cam + flipped.cam_map[:, ::-1])
    averaged = replace(defect_map, cam_map=np.ascontiguousarray(cam, dtype=np.float32))
    proposals = proposer.map_to_proposals(averaged, None, image)
    defect = np.zeros((height, width), bool)
    for proposal in proposals:
        defect |= proposal.full_mask(height, width)
    return label_mask(cam, defect, clicks, settings)


@dataclass
class PseudoMaskRun:
    """What :func:`make_pseudo_masks` did: masks written now, found cached, and seconds."""

    written: int
    cached: int
    seconds: float
    folder: Path


def make_pseudo_masks(weights: Path, label: str, clicks: Sequence[ImageClicks],
                      images: Path | Sequence[Path],
                      out: Path, settings: PseudoMaskSettings,
                      report: Callable[[str], None] = print,
                      device: str | None = None) -> PseudoMaskRun:
    """Write one pseudo-mask per clicked image into ``out`` (cached masks are kept).

    Args:
        weights: the classifier that makes the maps (a file or folder holding ``label``).
        label: the defect.
        clicks: every clicked image (full-size pixels).
        images: the folder(s) the clicks' image names are relative to.
        out: the cache folder; its manifest must name the same weights and settings.
        settings: see :class:`PseudoMaskSettings`.
        report: gets a progress line now and then.
        device: where the classifier runs (None: CUDA when present).

    Returns:
        The counts and time.
    """
    proposer = DefectProposer.from_weights(weights, device=device)
    if label not in proposer.labels:
        raise ValueError(f"{weights}: no {label} classifier (found {', '.join(proposer.labels)})")
    meta = proposer.predictors[label].metadata
    manifest = {"label": label, "weights_sha256": meta.sha256, "settings": asdict(settings),
                "working_scale": meta.working_scale, "working_max_side": meta.working_max_side}
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
            raise ValueError(f"{out} holds pseudo-masks of other weights or settings "
                             f"({manifest_path}); use another --out or remove it")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    scaled, load = at_working_scale(clicks, meta.working_scale, read_rgb,
                                    max_side=meta.working_max_side)
    roots = ImageRoots.of(images)  # by path or content hash, never a bare file name
    start, written, cached = time.perf_counter(), 0, 0
    reported = start
    for index, item in enumerate(scaled):
        path = mask_file(out, item.name)
        if path.is_file():
            cached += 1
            continue
        image = load(roots.resolve(item.name, item.sha256))
        mask = pseudo_mask(proposer, label, image, item, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path.with_suffix(".tmp.png")), mask)
        path.with_suffix(".tmp.png").replace(path)  # a killed run leaves no half mask
        written += 1
        if time.perf_counter() - reported > 60:
            reported = time.perf_counter()
            report(f"{label}: {index + 1}/{len(scaled)} masks, "
                   f"{(reported - start) / written:.1f} s each")
    return PseudoMaskRun(written, cached, time.perf_counter() - start, out)


def mask_loader(folders: Sequence[Path]) -> Callable[[str, tuple[int, int]], np.ndarray]:
    """``load(name, (height, width))``: the image's pixel labels from the first folder that
    holds them (annotated masks before pseudo-masks), resized (nearest) to the crops' size
    (annotated masks are written at the frame's own size).

    Args:
        folders: mask folders, first match wins.

    Returns:
        The loader ``defectcam.data.crops.build_crop_set`` takes.
    """

    def load(name: str, size: tuple[int, int]) -> np.ndarray:
        for folder in folders:
            path = mask_file(Path(folder), name)
            if path.is_file():
                mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if mask is None:
                    raise ValueError(f"{path}: not a readable mask PNG")
                if mask.shape != size:
                    mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
                return mask
        raise FileNotFoundError(f"no mask for {name!r} in {[str(f) for f in folders]}")

    return load


def annotated_masks(annotations: CvatAnnotations, label: str, out: Path,
                    names: set[str] | None = None) -> int:
    """Write the pixel labels a finished CVAT frame holds for ``label``: its polygons and
    masks are the defect, a box is unsure (it bounds the defect loosely), every other pixel
    is background (the team annotated the frame; other labels' shapes are not this defect).

    Args:
        annotations: a "CVAT for images 1.1" export of finished frames.
        label: the defect.
        out: the mask folder (``mask_file`` names).
        names: only these frames (None: every frame of the export).

    Returns:
        The number of masks written.
    """
    written = 0
    for frame in annotations.images:
        if names is not None and frame.name not in names:
            continue
        mask = np.full((frame.height, frame.width), BACKGROUND, np.uint8)
        for shape in frame.shapes:
            if shape.label != label:
                continue
            region = shape_region(shape, frame.height, frame.width)
            if region is not None:
                mask[region] = UNSURE if shape.kind == "box" else DEFECT
        path = mask_file(out, frame.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), mask)
        written += 1
    return written
