"""The evaluation engine: images with truth -> proposals per setting -> metrics.

Every image is decoded (and downscaled, when asked) once; each setting (an AdvCAM step count
with or without tile screening, or a learning-free baseline) then runs the very same
``DefectProposer.propose_detailed`` the CVAT function runs, and the proposals are measured
with :func:`defectcam.evaluation.metrics.match_instances`. The CAM-threshold sweep reuses the
maps of the main setting: the model never runs again for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from defectcam.core.image_io import shrink_to
from defectcam.core.postprocess import Proposal, polygon_to_mask
from defectcam.core.proposer import DefectProposer
from defectcam.core.weights import WeightsMetadata
from defectcam.data.crops import read_rgb
from defectcam.data.cvat_xml import CvatImage, read_cvat_xml
from defectcam.data.image_roots import ImageRoots
from defectcam.data.sources import (
    ImagePair,
    list_pairs,
    load_defect_mask,
    other_source_pairs,
    pairs_for_defect,
    shared_data_root,
    split_source,
)
from defectcam.evaluation.baselines import baseline_proposals
from defectcam.evaluation.metrics import (
    EvaluationSummary,
    ImageMatch,
    MatchRule,
    PixelCounts,
    SweepPoint,
    match_instances,
    proposals_union,
    summarize,
    threshold_sweep,
)
from defectcam.evaluation.timesave import AnnotatorModel, GroupThresholds

#: Shape kinds that carry dense truth in a CVAT export (points are clicks, boxes are coarse).
TRUTH_KINDS = ("polygon", "mask")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class EvalItem:
    """One image to evaluate for one defect: from a data-set folder or a CVAT export."""

    label: str
    image_id: str
    image_path: Path
    source: str
    pair: ImagePair | None = None
    cvat_image: CvatImage | None = None


@dataclass
class LoadedItem:
    """Pixels as evaluated: ``scale`` < 1 when ``max_side`` downscaled the image and truth."""

    image: np.ndarray
    truth: np.ndarray
    scale: float
    original_size: tuple[int, int]  # (height, width) on disk


def folder_items(defects: Sequence[str], split: str = "val", root: str | Path | None = None,
                 sources: Sequence[str] | None = None, limit: int | None = None,
                 seed: int = 0, val_fraction: float = 0.2, split_seed: int = 0,
                 other_sources: int = 0) -> list[EvalItem]:
    """Images of the data-set folders: the training split (``split_source(pairs,
    val_fraction, split_seed)``, defaults as ``defectcam simulate``), then an optional
    ``sources`` filter, then ``limit`` images per defect chosen with ``seed``.

    ``other_sources``: also up to this many images (same split, seeded) of each source that
    does not label the defect, with empty truth: in CVAT every classifier runs on every
    frame, so its false positives on the other defects' photos count too.
    """
    items: list[EvalItem] = []
    base = shared_data_root(root)
    for defect in defects:
        pairs = pairs_for_defect(defect, base)
        chosen = _pick(pairs, split, val_fraction, split_seed, limit, seed, sources)
        if other_sources:
            for source in sorted({p.source for p in other_source_pairs(defect, base)}):
                chosen += _pick(list_pairs(source, base), split, val_fraction, split_seed,
                                other_sources, seed)
        items += [EvalItem(defect, p.name, p.image, p.source, pair=p) for p in chosen]
    return items


def _pick(pairs: list[ImagePair], split: str, val_fraction: float, split_seed: int,
          limit: int | None, seed: int, sources: Sequence[str] | None = None
          ) -> list[ImagePair]:
    train, val = split_source(pairs, val_fraction, split_seed)
    chosen = {"train": train, "val": val, "all": train + val}[split]
    if sources:
        chosen = [p for p in chosen if p.source in sources]
    if limit is not None and len(chosen) > limit:
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(chosen), size=limit, replace=False).tolist())
        chosen = [chosen[i] for i in keep]
    return chosen


def cvat_items(xml_path: str | Path, images_dir: str | Path | Sequence[str | Path],
               defects: Sequence[str], limit: int | None = None, seed: int = 0,
               all_frames: bool = False) -> list[EvalItem]:
    """The frames of a CVAT export to score, with their image files.

    Args:
        xml_path: the export (CVAT for images 1.1).
        images_dir: the folder(s) its image names are relative to; a name resolves to one
            exact path or the frame's content hash, never to a file sharing its base name.
        defects: the labels scored.
        limit: at most this many frames per defect, a seeded choice.
        seed: seed of that choice.
        all_frames: every frame of the export was finished, so a frame without shapes is
            truly empty and its proposals count as false positives. Otherwise only frames
            holding a polygon or mask (any label) are scored: those were annotated densely.

    Returns:
        One item per defect and frame.
    """
    annotations = read_cvat_xml(xml_path)
    roots = ImageRoots.of(images_dir)
    dense = [im for im in annotations.images
             if all_frames or any(s.kind in TRUTH_KINDS for s in im.shapes)]
    items: list[EvalItem] = []
    for defect in defects:
        chosen = dense
        if limit is not None and len(chosen) > limit:
            rng = np.random.default_rng(seed)
            chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), limit, replace=False))]
        items += [EvalItem(defect, im.name, roots.resolve(im.name, im.sha256), "cvat",
                           cvat_image=im) for im in chosen]
    return items


def cvat_truth(image: CvatImage, label: str) -> np.ndarray:
    """Union of the export's polygons and masks of ``label`` as a boolean image."""
    truth = np.zeros((image.height, image.width), bool)
    for shape in image.shapes:
        if shape.label != label or shape.kind not in TRUTH_KINDS:
            continue
        if shape.kind == "polygon":
            truth |= polygon_to_mask(shape.points, image.height, image.width)
        elif shape.mask is not None and shape.box is not None:
            x1, y1 = shape.box[0], shape.box[1]
            crop = shape.mask[: max(0, image.height - y1), : max(0, image.width - x1)]
            truth[y1 : y1 + crop.shape[0], x1 : x1 + crop.shape[1]] |= crop
    return truth


def downscale(image: np.ndarray, truth: np.ndarray, max_side: int | None
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Shrink so that the longer side is ``max_side``: the image with area averaging, the
    truth by area share >= 0.5 (a pixel is defect when at least half its cell was)."""
    small, scale = shrink_to(image, max_side)
    if scale == 1.0:
        return image, truth, 1.0
    size = (small.shape[1], small.shape[0])
    share = cv2.resize(truth.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return small, share >= 0.5, scale


def load_item(item: EvalItem, max_side: int | None = None) -> LoadedItem:
    image = read_rgb(item.image_path)
    if item.pair is not None:
        truth = load_defect_mask(item.pair, item.label)
    elif item.cvat_image is not None:
        truth = cvat_truth(item.cvat_image, item.label)
    else:
        raise ValueError(f"{item.image_id}: no truth source")
    if truth.shape != image.shape[:2]:
        raise ValueError(f"{item.image_path}: image {image.shape[:2]} and truth {truth.shape} "
                         f"differ in size")
    original = truth.shape
    image, truth, scale = downscale(image, truth, max_side)
    return LoadedItem(np.ascontiguousarray(image), truth, scale, (original[0], original[1]))


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSetting:
    """One pass over the images. ``kind``: ``model`` (the proposer) or ``baseline``."""

    name: str
    kind: str = "model"
    iterations: int | None = None
    screen: bool = False
    cam_threshold: float | None = None

    def describe(self) -> str:
        if self.kind == "baseline":
            return "learning-free baseline (see baselines.py), same post-processing"
        t = "recommended" if self.iterations is None else str(self.iterations)
        method = "Grad-CAM" if self.iterations == 0 else "AdvCAM"
        screen = ", tile screening p >= 0.5" if self.screen else ""
        return f"{method}, T = {t}{screen}"


def model_setting(iterations: int, screen: bool = False,
                  cam_threshold: float | None = None) -> RunSetting:
    name = "gradcam-T0" if iterations == 0 else f"advcam-T{iterations}"
    if screen and iterations > 0:
        name += "-screen"
    return RunSetting(name, "model", iterations, bool(screen and iterations > 0), cam_threshold)


BASELINE_SETTING = RunSetting("baseline", "baseline")


def plan_settings(iterations: int, screen: bool = False, cam_threshold: float | None = None,
                  ablation: Sequence[int] | None = None, baseline: bool = False,
                  with_model: bool = True) -> list[RunSetting]:
    """Main setting first, then the ablation (each T unscreened, and the screened variant of
    the main T, or of the largest ablation T when the main one is Grad-CAM), then the
    baseline. Duplicates are dropped."""
    settings: list[RunSetting] = []
    if with_model:
        settings.append(model_setting(iterations, screen, cam_threshold))
        if ablation is not None:
            settings += [model_setting(t, False, cam_threshold) for t in ablation]
            climbing = [t for t in (iterations, *sorted(ablation, reverse=True)) if t > 0]
            if climbing:
                settings.append(model_setting(climbing[0], True, cam_threshold))
                settings.append(model_setting(climbing[0], False, cam_threshold))
    if baseline:
        settings.append(BASELINE_SETTING)
    return list(dict.fromkeys(settings))


# --------------------------------------------------------------------------- results


@dataclass
class ImageRecord:
    """One image under one setting: the match, the time it took, and how it was scaled."""

    match: ImageMatch
    source: str
    seconds: float
    scale: float
    union_bits: np.ndarray | None = None  # packed proposal union (main setting, gallery)

    def union(self) -> np.ndarray:
        h, w = self.match.height, self.match.width
        if self.union_bits is None:
            raise ValueError("this record kept no proposal union")
        return np.unpackbits(self.union_bits, count=h * w).reshape(h, w).astype(bool)


@dataclass
class RunResult:
    setting: RunSetting
    records: list[ImageRecord] = field(default_factory=list)

    def summary(self, thresholds: GroupThresholds, annotator: AnnotatorModel
                ) -> EvaluationSummary:
        return summarize([r.match for r in self.records], thresholds, annotator)

    def seconds_per_image(self, label: str | None = None) -> float:
        times = [r.seconds for r in self.records if label is None or r.match.label == label]
        return float(np.mean(times)) if times else 0.0

    def megapixels_per_image(self, label: str | None = None) -> float:
        sizes = [r.match.height * r.match.width / 1e6 for r in self.records
                 if label is None or r.match.label == label]
        return float(np.mean(sizes)) if sizes else 0.0


@dataclass
class SweepResult:
    """Per defect and threshold: raw ``map > t`` pixel counts, and the full post-processed
    pipeline (closing, components, min area) measured like the main setting."""

    thresholds: tuple[float, ...]
    raw: dict[str, list[SweepPoint]] = field(default_factory=dict)
    pipeline: dict[str, list[list[ImageMatch]]] = field(default_factory=dict)

    def add(self, label: str, cam_map: np.ndarray, truth: np.ndarray,
            matches: list[ImageMatch]) -> None:
        points = threshold_sweep([(cam_map, truth)], self.thresholds)
        if label not in self.raw:
            self.raw[label] = [SweepPoint(t, PixelCounts()) for t in self.thresholds]
            self.pipeline[label] = [[] for _ in self.thresholds]
        for k, point in enumerate(points):
            self.raw[label][k] = SweepPoint(point.threshold,
                                            self.raw[label][k].pixels + point.pixels)
            self.pipeline[label][k].append(matches[k])


@dataclass
class EvaluationRun:
    """Everything one ``defectcam evaluate`` measured."""

    runs: list[RunResult]
    sweep: SweepResult | None
    rule: MatchRule
    items: list[EvalItem]
    failures: list[str] = field(default_factory=list)

    @property
    def main(self) -> RunResult:
        return self.runs[0]


# --------------------------------------------------------------------------- engine


def _postprocessing(proposer: DefectProposer | None, label: str) -> WeightsMetadata:
    if proposer is not None and label in proposer.predictors:
        return proposer.predictors[label].metadata
    return WeightsMetadata(label=label)


def propose_once(proposer: DefectProposer | None, setting: RunSetting, image: np.ndarray,
                 label: str, min_confidence: float = 0.0):
    """(proposals, seconds, defect map or None) of one setting on one image."""
    if setting.kind == "baseline":
        m = _postprocessing(proposer, label)
        start = time.perf_counter()
        proposals = baseline_proposals(image, label, m.closing_size, m.min_area)
        return proposals, time.perf_counter() - start, None
    if proposer is None:
        raise ValueError(f"setting {setting.name!r} needs weights")
    result = proposer.propose_detailed(image, setting.iterations, setting.cam_threshold,
                                       labels=[label], screen=setting.screen,
                                       min_confidence=min_confidence)
    return result.proposals, result.seconds[label], result.maps[label]


def evaluate(
    items: Sequence[EvalItem],
    settings: Sequence[RunSetting],
    proposer: DefectProposer | None = None,
    rule: MatchRule | None = None,
    max_side: int | None = None,
    sweep_thresholds: Sequence[float] | None = None,
    keep_unions: bool = True,
    progress: Callable[[str], None] | None = None,
    min_confidence: float = 0.0,
) -> EvaluationRun:
    """Run every setting on every item (each image decoded once).

    ``sweep_thresholds``: when given, the main (first) setting's maps are also binarised at
    each threshold (needs a model setting first). ``keep_unions``: keep the main setting's
    proposal unions (bit-packed) for the gallery. ``progress(text)`` is called after each
    image and setting. ``min_confidence``: the model's proposals below it are dropped, as
    CVAT's ``threshold`` drops them (the baselines' confidence is 1).
    """
    if not settings:
        raise ValueError("nothing to evaluate: no settings")
    rule = rule or MatchRule()
    runs = [RunResult(s) for s in settings]
    sweep = None
    if sweep_thresholds is not None:
        if settings[0].kind != "model":
            raise ValueError("the threshold sweep needs a model setting (weights)")
        sweep = SweepResult(tuple(float(t) for t in sweep_thresholds))
    failures: list[str] = []
    for item in items:
        try:
            loaded = load_item(item, max_side)
        except (OSError, ValueError) as err:  # one unreadable file must not sink the run
            failures.append(f"{item.image_id}: {err}")
            for _ in runs:
                if progress:
                    progress(item.image_id)
            continue
        height, width = loaded.truth.shape
        for index, run in enumerate(runs):
            proposals, seconds, defect_map = propose_once(proposer, run.setting, loaded.image,
                                                          item.label, min_confidence)
            match = match_instances(proposals, loaded.truth, rule, item.label, item.image_id)
            record = ImageRecord(match, item.source, seconds, loaded.scale)
            if index == 0 and keep_unions:
                record.union_bits = np.packbits(proposals_union(proposals, height, width))
            run.records.append(record)
            if index == 0 and sweep is not None and defect_map is not None:
                sweep.add(item.label, defect_map.cam_map, loaded.truth,
                          _sweep_matches(proposer, defect_map, loaded, rule,
                                         sweep.thresholds, item, min_confidence))
            if progress:
                progress(item.image_id)
    return EvaluationRun(runs, sweep, rule, list(items), failures)


def _sweep_matches(proposer: DefectProposer | None, defect_map, loaded: LoadedItem,
                   rule: MatchRule, thresholds: Sequence[float], item: EvalItem,
                   min_confidence: float = 0.0) -> list[ImageMatch]:
    assert proposer is not None
    matches = []
    for t in thresholds:
        proposals: list[Proposal] = [
            p for p in proposer.map_to_proposals(defect_map, t, loaded.image)
            if p.confidence >= min_confidence]
        matches.append(match_instances(proposals, loaded.truth, rule, item.label,
                                       item.image_id))
    return matches


def select_gallery(run: RunResult, per_side: int) -> list[tuple[str, int, ImageRecord]]:
    """(``best`` | ``worst``, rank, record) per defect by pixel IoU of the proposal union.
    Images holding truth are preferred (an empty image with no proposal has IoU 1 and
    shows nothing); ties are broken by image id."""
    chosen: list[tuple[str, int, ImageRecord]] = []
    if per_side <= 0:
        return chosen
    for label in sorted({r.match.label for r in run.records}):
        records = [r for r in run.records if r.match.label == label]
        with_truth = [r for r in records if r.match.pixels.tp + r.match.pixels.fn > 0]
        pool = sorted(with_truth or records,
                      key=lambda r: (r.match.pixels.iou, r.match.image_id))
        # With few images, split them so that "best" is never empty when "worst" is not.
        n_worst = min(per_side, (len(pool) + 1) // 2)
        worst = pool[:n_worst]
        best = pool[n_worst:][::-1][:per_side]
        chosen += [("best", k, r) for k, r in enumerate(best)]
        chosen += [("worst", k, r) for k, r in enumerate(worst)]
    return chosen
