"""Defect maps -> instance proposals, for every loaded classifier: the library's front door.

    proposer = DefectProposer.from_weights("weights/")
    proposals = proposer.propose(rgb_uint8_image, iterations=2)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from defectcam.core.image_io import scaled_size, working_factor
from defectcam.core.options import Limits, ProposeOptions
from defectcam.core.postprocess import (
    Proposal,
    binarize_map,
    close_mask,
    enlarge_proposals,
    mask_to_proposals,
)
from defectcam.core.predictor import (
    DefectMap,
    DefectMapPredictor,
    ImageScales,
    MapParts,
    as_scales,
)
from defectcam.core.refine import Refinement
from defectcam.core.weights import WeightsMetadata, find_weights, load_weights

#: Screening's probability threshold for ``screen=True`` with weights that set none.
SCREEN_THRESHOLD = 0.5


def screen_threshold(screen: bool | float | None, metadata: WeightsMetadata) -> float | None:
    """The probability below which a tile is not climbed, ``None`` for no screening.

    ``screen``: ``None`` = the weights' ``screen_threshold`` (0: off); ``True`` = the weights'
    threshold, else :data:`SCREEN_THRESHOLD`; ``False`` = off; a number = that threshold.
    """
    if screen is None:
        return metadata.screen_threshold or None
    if screen is True:
        return metadata.screen_threshold or SCREEN_THRESHOLD
    if screen is False:
        return None
    if not 0.0 < float(screen) < 1.0:
        raise ValueError(f"a screening threshold must be in (0, 1), got {screen}")
    return float(screen)


@dataclass
class TileRun:
    """One call of the predictor a schedule asks for: ``tiles`` (``None``: every tile) at
    ``iterations`` AdvCAM steps, screened below ``screen_threshold`` (``None``: no
    screening); ``stop`` is asked before each tile batch (``None``: never stops)."""

    iterations: int
    screen_threshold: float | None = None
    tiles: list[tuple[int, int]] | None = None
    stop: Callable[[], bool] | None = None


@dataclass
class PostRun:
    """How a defect's map becomes proposals: at a longer side of at most ``max_side`` px
    (``None``: the weights' own size), ``stop`` asked before each component; ``skip``: none
    at all (a deadline already past)."""

    max_side: int | None = None
    stop: Callable[[], bool] | None = None
    skip: bool = False


class Schedule(Protocol):
    """What one defect of a request runs, decided as it goes (a deadline's planner)."""

    def runs(self) -> Iterator[TileRun]:
        """The predictor calls, one at a time; :meth:`ran` follows each."""

    def ran(self, part: DefectMap) -> int:
        """The map of the last run; returns how many tiles it ran."""

    def post(self) -> PostRun:
        """How the merged map becomes proposals (asked once every map is made)."""

    def posted(self, pixels: int, seconds: float, proposals: int) -> None:
        """The proposals took ``seconds`` at ``pixels`` (the post-processing's size)."""


class Planner(Protocol):
    """Decides each defect's :class:`Schedule` for one request."""

    def schedule(self, label: str, iterations: int, screen_threshold: float | None
                 ) -> Schedule:
        """The schedule of ``label`` asked at ``iterations`` steps and that screening."""


class WholeRun:
    """The schedule without a planner: every tile as asked, proposals at the weights' size."""

    def __init__(self, iterations: int, screen_threshold: float | None) -> None:
        self.run = TileRun(iterations, screen_threshold)

    def runs(self) -> Iterator[TileRun]:
        yield self.run

    def ran(self, part: DefectMap) -> int:
        return len(part.grid)

    def post(self) -> PostRun:
        return PostRun()

    def posted(self, pixels: int, seconds: float, proposals: int) -> None:
        pass


@dataclass
class ProposalResult:
    """Proposals of one image, with the maps they came from and the time per defect."""

    proposals: list[Proposal]
    maps: dict[str, DefectMap] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class DefectProposer:
    """One :class:`DefectMapPredictor` per defect, plus post-processing into proposals."""

    def __init__(self, predictors: Sequence[DefectMapPredictor]) -> None:
        if not predictors:
            raise ValueError("DefectProposer needs at least one classifier")
        self.predictors = {p.metadata.label: p for p in predictors}
        if len(self.predictors) != len(predictors):
            raise ValueError("two classifiers share a label")

    @classmethod
    def from_weights(
        cls,
        weights: str | Path | Sequence[str | Path],
        device: str | torch.device | None = None,
        tile_batch: int | None = None,
        precision: str = "auto",
        working_scale: float | Mapping[str, float] | None = None,
        tiling: str = "balanced",
        malloc_tuning: bool = True,
    ) -> DefectProposer:
        """Load every ``*.safetensors`` of a directory (or the listed files).

        Args:
            weights: a folder, one ``.safetensors`` file, or several files (each with its
                ``.json`` sidecar).
            device: ``cpu``, ``cuda``, ``cuda:N`` (``None``: CUDA when present).
            tile_batch: tiles per forward pass (``None``: the device's default).
            precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see
                :class:`DefectMapPredictor`).
            working_scale: overrides the weights' own: one factor for every defect, or
                ``{label: factor}`` for some of them (the others keep the weights' value).
            tiling: ``balanced`` or ``fixed`` (see :class:`DefectMapPredictor`).
            malloc_tuning: keep large CPU buffers in the malloc heap.

        Returns:
            One predictor per classifier found.

        Raises:
            WeightsError: a file is missing, unreadable or disagrees with its sidecar.
        """
        found = find_weights(weights if isinstance(weights, (str, Path)) else list(weights))
        if isinstance(working_scale, Mapping) and (
                unknown := sorted(set(working_scale) - set(found))):
            raise ValueError(f"working scale for unknown labels {unknown}; the weights know "
                             f"{sorted(found)}")
        predictors = []
        for label, path in found.items():
            model, metadata = load_weights(path)
            scale = (working_scale.get(label) if isinstance(working_scale, Mapping)
                     else working_scale)
            predictors.append(
                DefectMapPredictor(model, metadata, device, tile_batch=tile_batch,
                                   precision=precision, working_scale=scale, tiling=tiling,
                                   malloc_tuning=malloc_tuning)
            )
        return cls(predictors)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.predictors)

    @property
    def device(self) -> torch.device:
        return next(iter(self.predictors.values())).device

    def check_labels(self, labels: Sequence[str] | None) -> list[str]:
        """The labels to run, each checked against the loaded classifiers.

        Args:
            labels: the labels asked for (``None``: every loaded one).

        Returns:
            The labels, without repeats, in the order asked.

        Raises:
            OptionError: a label no loaded classifier knows (a ``ValueError``).
        """
        if labels is None:
            return list(self.predictors)
        options = ProposeOptions.build({"labels": list(labels)}, limits=Limits(labels=self.labels))
        return list(options.labels)

    def propose(
        self,
        image: np.ndarray | ImageScales,
        iterations: int | None = None,
        cam_threshold: float | None = None,
        labels: Sequence[str] | None = None,
        screen: bool | float | None = None,
        min_confidence: float = 0.0,
    ) -> list[Proposal]:
        """Proposals for ``image``: :meth:`propose_detailed` without the maps.

        Returns:
            The proposals of every defect asked for, at least ``min_confidence`` sure.
        """
        return self.propose_detailed(
            image, iterations, cam_threshold, labels, screen, min_confidence
        ).proposals

    def propose_detailed(
        self,
        image: np.ndarray | ImageScales,
        iterations: int | Mapping[str, int] | None = None,
        cam_threshold: float | None = None,
        labels: Sequence[str] | None = None,
        screen: bool | float | None = None,
        min_confidence: float = 0.0,
        progress: Callable[[int], None] | None = None,
        planner: Planner | None = None,
    ) -> ProposalResult:
        """Maps and proposals: every defect's map first, then every defect's proposals.

        A proposal's confidence is, as the weights' metadata says (``confidence``), the
        classifier's probability for the tile that holds the proposal's strongest pixel
        (``tile``), that pixel's value on the normalised map (``peak``), or the map's
        maximum within the refinement's dilation of the proposal (``near-peak``), or the
        proposal's mean on the map (``mean``).

        Args:
            image: (H, W, 3) uint8 RGB, or its :class:`ImageScales`.
            iterations: AdvCAM steps T (``None``: each classifier's own, ``iterations`` in
                its sidecar; 0: plain Grad-CAM; or ``{label: T}``).
            cam_threshold: binarisation of the normalised map (``None``: each classifier's
                own, ``cam_threshold`` in its sidecar).
            labels: the defects to run (``None``: every loaded one).
            screen: skip the climb on tiles the classifier calls negative (``None``: as each
                classifier's ``screen_threshold`` says; True: below that, else p < 0.5;
                False: climb every tile; or a probability threshold):
                :func:`screen_threshold`.
            min_confidence: drop proposals below this confidence (CVAT's ``threshold``).
            progress: called with the number of tiles done after each tile batch.
            planner: decides which tiles run at how many steps and the proposals' size (a
                deadline, ``defectcam.serving.deadline``); ``None``: everything as asked.

        Returns:
            The proposals, each defect's map and each defect's seconds.
        """
        # The request contract's bounds (core/options.py; OptionError is a ValueError).
        steps = dict(iterations) if isinstance(iterations, Mapping) else {}
        for count in [*steps.values(), None if steps else iterations]:
            ProposeOptions(iterations=count, cam_threshold=cam_threshold)
        result = ProposalResult(proposals=[])
        scales = as_scales(image)  # one shrunk copy per working size, for every defect
        schedules: dict[str, Schedule] = {}
        for label in self.check_labels(labels):
            predictor = self.predictors[label]
            start = time.perf_counter()
            asked = steps.get(label) if steps else iterations
            asked = predictor.metadata.iterations if asked is None else asked
            threshold = screen_threshold(screen, predictor.metadata)
            schedule = (WholeRun(asked, threshold) if planner is None
                        else planner.schedule(label, asked, threshold))
            parts = MapParts(predictor.metadata)
            for run in schedule.runs():
                part = predictor.predict(scales, run.iterations, run.screen_threshold,
                                         progress=progress, tiles=run.tiles, stop=run.stop)
                parts.add(part, schedule.ran(part))
            defect_map = parts.finish()
            result.seconds[label] = time.perf_counter() - start
            if defect_map is not None:
                result.maps[label] = defect_map
                schedules[label] = schedule
        for label, schedule in schedules.items():
            start = time.perf_counter()
            post = schedule.post()
            if post.skip:
                continue
            proposals, pixels = self._proposals(result.maps[label], cam_threshold, scales,
                                                post.max_side, post.stop)
            seconds = time.perf_counter() - start
            schedule.posted(pixels, seconds, len(proposals))
            result.proposals.extend(p for p in proposals if p.confidence >= min_confidence)
            result.seconds[label] += seconds
        return result

    def map_to_proposals(
        self, defect_map: DefectMap, cam_threshold: float | None = None,
        image: np.ndarray | ImageScales | None = None, max_side: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[Proposal]:
        """Threshold, fit to image evidence (when the weights ask for it), close, split into
        components, drop small ones (method.md section 5; ``defectcam.core.refine``).

        ``image`` is the RGB image the map was made of (or the request's
        :class:`ImageScales`, whose shrunk copy the classifier already used); weights with a
        refinement need it. Weights with a working longer side post-process a frame beyond it
        at that size, where their pixel settings (dilation, kernels, areas) were chosen, and
        the proposals are enlarged back to the frame's pixels; ``max_side`` caps that size
        further (a deadline's choice). ``stop``: see :func:`mask_to_proposals`.
        """
        return self._proposals(defect_map, cam_threshold, image, max_side, stop)[0]

    def post_size(self, label: str, height: int, width: int, max_side: int | None = None
                  ) -> tuple[int, int]:
        """(height, width) a ``label`` map of a frame this size is turned into proposals at."""
        sides = [s for s in (self.predictors[label].metadata.working_max_side, max_side) if s]
        factor = working_factor(width, height, 1.0, min(sides, default=0))
        if factor >= 1.0:
            return height, width
        small_w, small_h = scaled_size(width, height, factor)
        return small_h, small_w

    def _proposals(self, defect_map: DefectMap, cam_threshold: float | None,
                   image: np.ndarray | ImageScales | None, max_side: int | None,
                   stop: Callable[[], bool] | None) -> tuple[list[Proposal], int]:
        """The proposals and the pixel count they were made at."""
        m = self.predictors[defect_map.label].metadata
        scales = None if image is None else as_scales(image)
        height, width = defect_map.cam_map.shape
        small_h, small_w = self.post_size(defect_map.label, height, width, max_side)
        if (small_h, small_w) == (height, width):
            return self._fit(defect_map, m, cam_threshold,
                             None if scales is None else scales.image, stop), height * width
        # working_size keeps tile-confidence lookups on the classifier's own grid
        small = replace(defect_map, cam_map=cv2.resize(defect_map.cam_map, (small_w, small_h),
                                                       interpolation=cv2.INTER_AREA),
                        working_size=defect_map.working_size or (height, width))
        proposals = self._fit(small, m, cam_threshold,
                              None if scales is None else scales.at((small_h, small_w)), stop)
        return enlarge_proposals(proposals, (small_h, small_w), height, width), small_h * small_w

    @staticmethod
    def _fit(defect_map: DefectMap, m: WeightsMetadata, cam_threshold: float | None,
             image: np.ndarray | None, stop: Callable[[], bool] | None = None
             ) -> list[Proposal]:
        threshold = m.cam_threshold if cam_threshold is None else cam_threshold
        binary = binarize_map(defect_map.cam_map, threshold)
        refinement = Refinement.from_dict(m.refinement)
        if refinement.active:
            if image is None:
                raise ValueError(f"{m.label}: these weights fit proposals to image evidence "
                                 f"({refinement.evidence}); pass the image")
            binary = refinement.apply(binary, image)
        binary = close_mask(binary, m.closing_size)
        by_tile = m.confidence == "tile"
        scores = (refinement.score_map(defect_map.cam_map) if m.confidence == "near-peak"
                  else defect_map.cam_map)
        return mask_to_proposals(
            binary,
            defect_map.label,
            m.min_area,
            score_map=scores,
            confidence_fn=(lambda y, x, peak: defect_map.probability_at(y, x)) if by_tile
            else None,
            mean_confidence=m.confidence == "mean",
            stop=stop,
        )
