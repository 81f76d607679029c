"""Defect maps -> instance proposals, for every loaded classifier: the library's front door.

    proposer = DefectProposer.from_weights("weights/")
    proposals = proposer.propose(rgb_uint8_image, iterations=2)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

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
from defectcam.core.predictor import DefectMap, DefectMapPredictor, ImageScales, as_scales
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
        iterations: int | None = None,
        cam_threshold: float | None = None,
        labels: Sequence[str] | None = None,
        screen: bool | float | None = None,
        min_confidence: float = 0.0,
        progress: Callable[[int], None] | None = None,
    ) -> ProposalResult:
        """Maps and proposals.

        A proposal's confidence is, as the weights' metadata says (``confidence``), the
        classifier's probability for the tile that holds the proposal's strongest pixel
        (``tile``), that pixel's value on the normalised map (``peak``), or the map's
        maximum within the refinement's dilation of the proposal (``near-peak``).

        Args:
            image: (H, W, 3) uint8 RGB, or its :class:`ImageScales`.
            iterations: AdvCAM steps T (``None``: each classifier's own, ``iterations`` in
                its sidecar; 0: plain Grad-CAM).
            cam_threshold: binarisation of the normalised map (``None``: each classifier's
                own, ``cam_threshold`` in its sidecar).
            labels: the defects to run (``None``: every loaded one).
            screen: skip the climb on tiles the classifier calls negative (``None``: as each
                classifier's ``screen_threshold`` says; True: below that, else p < 0.5;
                False: climb every tile; or a probability threshold):
                :func:`screen_threshold`.
            min_confidence: drop proposals below this confidence (CVAT's ``threshold``).
            progress: called with the number of tiles done after each tile batch.

        Returns:
            The proposals, each defect's map and each defect's seconds.
        """
        # The request contract's bounds (core/options.py; OptionError is a ValueError).
        ProposeOptions(iterations=iterations, cam_threshold=cam_threshold)
        result = ProposalResult(proposals=[])
        scales = as_scales(image)  # one shrunk copy per working size, for every defect
        for label in self.check_labels(labels):
            predictor = self.predictors[label]
            start = time.perf_counter()
            defect_map = predictor.predict(scales, iterations,
                                           screen_threshold(screen, predictor.metadata),
                                           progress=progress)
            proposals = self.map_to_proposals(defect_map, cam_threshold, scales)
            result.proposals.extend(p for p in proposals if p.confidence >= min_confidence)
            result.maps[label] = defect_map
            result.seconds[label] = time.perf_counter() - start
        return result

    def map_to_proposals(
        self, defect_map: DefectMap, cam_threshold: float | None = None,
        image: np.ndarray | ImageScales | None = None,
    ) -> list[Proposal]:
        """Threshold, fit to image evidence (when the weights ask for it), close, split into
        components, drop small ones (method.md section 5; ``defectcam.core.refine``).

        ``image`` is the RGB image the map was made of (or the request's
        :class:`ImageScales`, whose shrunk copy the classifier already used); weights with a
        refinement need it. Weights with a working longer side post-process a frame beyond it
        at that size, where their pixel settings (dilation, kernels, areas) were chosen, and
        the proposals are enlarged back to the frame's pixels.
        """
        m = self.predictors[defect_map.label].metadata
        scales = None if image is None else as_scales(image)
        height, width = defect_map.cam_map.shape
        factor = working_factor(width, height, 1.0, m.working_max_side)
        if factor >= 1.0:
            return self._fit(defect_map, m, cam_threshold,
                             None if scales is None else scales.image)
        small_w, small_h = scaled_size(width, height, factor)
        # working_size keeps tile-confidence lookups on the classifier's own grid
        small = replace(defect_map, cam_map=cv2.resize(defect_map.cam_map, (small_w, small_h),
                                                       interpolation=cv2.INTER_AREA),
                        working_size=defect_map.working_size or (height, width))
        proposals = self._fit(small, m, cam_threshold,
                              None if scales is None else scales.at((small_h, small_w)))
        return enlarge_proposals(proposals, (small_h, small_w), height, width)

    @staticmethod
    def _fit(defect_map: DefectMap, m: WeightsMetadata, cam_threshold: float | None,
             image: np.ndarray | None) -> list[Proposal]:
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
        )
