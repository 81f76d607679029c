"""The interactor service: what CVAT's AI Tools > Interactors calls get, whatever the face.

One click (or a few) on a defect -> that defect's mask at once (:mod:`defectcam.core.interact`),
and the click into the interaction log as the next round's weak label (``defectcam feedback``
turns it into a training click). The service owns what the interactor faces share: the
classifiers, the label an interaction is answered with, the request limits, the checks that
need the decoded frame (points inside it) and the log.

Which label: CVAT's interactor request carries none, and CVAT gives the answer the label the
annotator picked in its panel. So each defect is deployed as its own interactor
(``interactors/*.yaml``, weights of that defect only): the annotator picks "defectcam crack
(click)" with the crack label, and the crack classifier answers. A request may name its
``label`` (other clients); without one, a function with one classifier uses it, and
``DEFECTCAM_LABELS`` naming exactly one label chooses among several.

One service per worker; not thread-safe (as :class:`defectcam.serving.service.ProposalService`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from defectcam.config import Settings
from defectcam.core.interact import Clicks, InteractResult, InteractSettings, interact
from defectcam.core.options import InteractOptions, Limits, OptionError
from defectcam.core.postprocess import Proposal
from defectcam.core.proposer import DefectProposer
from defectcam.serving.interaction_log import (
    INTERACTION_KIND,
    ProposalLog,
    log_proposals,
    model_version_of,
)
from defectcam.serving.service import check_spec_labels, info_line


@dataclass
class InteractAnswer:
    """One interaction's answer: the mask (:class:`InteractResult`), the options it answered,
    the frame's size, the time from the request's start and the log's request id."""

    result: InteractResult
    options: InteractOptions
    width: int
    height: int
    seconds: float
    request_id: int | None = None

    def to_cvat(self) -> dict[str, Any]:
        """The answer CVAT's interactor UI takes: ``mask`` (rows of 0/1 over ``bounds``, the
        inclusive box ``[x1, y1, x2, y2]`` in frame pixels) and ``points``, the outline CVAT
        approximates when the annotator converts masks to polygons."""
        result = self.result
        if result.box is None:  # nothing found: an empty answer draws nothing in CVAT
            return {"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []}
        return {"mask": result.mask.astype(np.uint8).tolist(), "bounds": list(result.box),
                "points": [[round(float(x), 2), round(float(y), 2)]
                           for x, y in result.polygon()]}


class InteractorService:
    """The classifiers of one worker and what the interactor faces share (module docstring)."""

    def __init__(self, proposer: DefectProposer, settings: Settings | None = None,
                 log: ProposalLog | None = None, logger: Any = None,
                 interact_settings: InteractSettings | None = None) -> None:
        self.proposer = proposer
        self.settings = settings or Settings()
        check_spec_labels(proposer.labels, self.settings.weights)
        self.labels: tuple[str, ...] = tuple(proposer.labels)
        self.limits: Limits = self.settings.limits(self.labels)
        self.model_version = model_version_of(proposer)
        self.log = log
        self.logger = logger
        #: ``None``: each label's weights' own settings (their sidecar's ``interact``).
        self.interact_settings = interact_settings

    @classmethod
    def from_settings(cls, settings: Settings, logger: Any = None) -> InteractorService:
        """Load the weights ``settings`` name; the log is ``settings.log_db`` (None: off)."""
        proposer = DefectProposer.from_weights(settings.weights, device=settings.device,
                                               precision=settings.precision)
        log = ProposalLog(settings.log_db, logger) if settings.log_db is not None else None
        return cls(proposer, settings, log, logger)

    def label_for(self, options: InteractOptions) -> str:
        """The label that answers ``options`` (see the module docstring); :class:`OptionError`
        naming ``label`` when that is ambiguous."""
        if options.label is not None:
            if options.label not in self.labels:
                raise OptionError(f"label {options.label!r} has no weights in this function; "
                                  f"it answers {list(self.labels)}", "label")
            return options.label
        if len(self.labels) == 1:
            return self.labels[0]
        if self.settings.labels is not None and len(self.settings.labels) == 1:
            return self.settings.labels[0]
        raise OptionError(f"missing 'label': this function has classifiers for "
                          f"{list(self.labels)}; name one", "label")

    def interact(self, image: np.ndarray, options: InteractOptions, *,
                 image_sha256: str | None = None, face: str = "library",
                 started: float | None = None) -> InteractAnswer:
        """The mask for ``options``' clicks on ``image`` ((H, W, 3) uint8 RGB, upright),
        logged. ``image_sha256``: of the image *file* (default: of the pixels); ``face``:
        which way the request came (logged); ``started``: when it arrived
        (``time.perf_counter()``)."""
        start = time.perf_counter() if started is None else started
        height, width = image.shape[:2]
        options.check_frame(width, height)
        label = self.label_for(options)
        iterations = options.iterations
        if iterations is None:
            metadata = self.proposer.predictors[label].metadata
            settings = self.interact_settings or InteractSettings.from_dict(metadata.interact)
            iterations = min(settings.steps(metadata.iterations), self.limits.max_iterations)
        elif iterations > self.limits.max_iterations:
            raise OptionError(f"'iterations' must be between 0 and "
                              f"{self.limits.max_iterations}, got {iterations}", "iterations")
        clicks = Clicks(options.pos_points, options.neg_points, options.obj_bbox)
        result = interact(self.proposer.predictors[label], image, clicks,
                          iterations=iterations, cam_threshold=options.cam_threshold,
                          settings=self.interact_settings)
        seconds = time.perf_counter() - start
        sha = image_sha256 or hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()
        params = {"kind": INTERACTION_KIND, "face": face, "output": "mask", **options.to_log(),
                  "label": label, "iterations": iterations, "source": result.source,
                  "windows": result.windows, "window": list(result.window)}
        logged = [] if result.box is None else [Proposal(
            label, 1.0, result.polygon(), result.mask, result.box, result.area)]
        request_id = log_proposals(self.log, sha, (width, height), options.name, params,
                                   self.model_version, logged, seconds)
        info_line(self.logger, "interaction answered", label=label, width=width, height=height,
              positive=len(options.pos_points), negative=len(options.neg_points),
              area=result.area, source=result.source, windows=result.windows,
              seconds=round(seconds, 3))
        return InteractAnswer(result, options, width, height, seconds, request_id)


__all__ = ["InteractAnswer", "InteractorService"]
