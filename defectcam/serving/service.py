"""The proposal service: what every face calls.

Each face turns its request into :class:`~defectcam.core.options.ProposeOptions` and an RGB
image and calls :meth:`ProposalService.propose`; the service owns what they share (the label
guard, limits, default steps, thin frames, the deadline, the confidence filter, the
interaction log). One service per worker: it is not thread-safe.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from defectcam.config import LABELS_ENV, ConfigError, Settings
from defectcam.core.cvat import proposals_to_cvat_shapes
from defectcam.core.image_io import MIN_SIDE
from defectcam.core.labels import LABEL_NAMES
from defectcam.core.options import INTERNAL, Limits, OptionError, ProposeOptions, Spelling
from defectcam.core.options import check_limits as _check_limits
from defectcam.core.postprocess import Proposal
from defectcam.core.proposer import DefectProposer, ProposalResult
from defectcam.serving.deadline import DeadlinePlanner, DeadlineReport, WorkCosts
from defectcam.serving.interaction_log import ProposalLog, log_proposals, model_version_of


def check_spec_labels(labels: tuple[str, ...], weights: object) -> None:
    """The label guard: weights whose labels the function spec does not declare are refused
    (CVAT silently drops shapes of labels it does not know)."""
    foreign = [name for name in labels if name not in LABEL_NAMES]
    if foreign:
        raise ConfigError(
            f"weights in {weights} have labels {foreign} that the function spec "
            f"(defectcam/core/labels.py: {list(LABEL_NAMES)}) does not list")


@dataclass
class Answer:
    """The proposals of one request (those reaching ``options.min_confidence``), how many
    fell below it, the maps they came from, the time (from the request's start), the
    interaction log's request id (``None``: logging off or not written), the AdvCAM steps
    asked of each defect, and with a deadline what it got (``deadline``)."""

    proposals: list[Proposal]
    options: ProposeOptions
    width: int
    height: int
    left_out: int = 0
    maps: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    request_id: int | None = None
    steps: dict[str, int] = field(default_factory=dict)
    deadline: DeadlineReport | None = None

    def shapes(self) -> list[dict]:
        """The CVAT shape dicts the Nuclio function answers (``options.output`` type)."""
        return proposals_to_cvat_shapes(self.proposals, self.options.output)


class ProposalService:
    """The proposer of one worker plus everything the faces share (see the module docstring)."""

    def __init__(self, proposer: DefectProposer, settings: Settings | None = None,
                 log: ProposalLog | None = None, logger: Any = None) -> None:
        """``log``: the interaction log every answer is written into (``None``: off)."""
        self.proposer = proposer
        self.settings = settings or Settings()
        check_spec_labels(proposer.labels, self.settings.weights)
        self.labels: tuple[str, ...] = tuple(proposer.labels)
        missing = [name for name in self.settings.labels or () if name not in self.labels]
        if missing:
            raise ConfigError(f"{LABELS_ENV} names {missing}, but the weights in "
                              f"{self.settings.weights} only have {list(self.labels)}")
        self.limits: Limits = self.settings.limits(self.labels)
        self.model_version = model_version_of(proposer)
        self.log = log
        self.logger = logger
        #: What work costs on this worker (measured; the deadline's planner reads it).
        self.costs: WorkCosts | None = None
        if self.settings.deadline is not None and proposer.predictors:
            self.costs = WorkCosts.measure(proposer)
            info_line(logger, "measured work costs for the deadline",
                      deadline=self.settings.deadline, **self.costs.log_fields())

    @classmethod
    def from_settings(cls, settings: Settings, logger: Any = None,
                      tile_batch: int | None = None) -> ProposalService:
        """Load the weights ``settings`` name; the log is ``settings.log_db`` (None: off)."""
        proposer = DefectProposer.from_weights(settings.weights, device=settings.device,
                                               tile_batch=tile_batch,
                                               precision=settings.precision,
                                               malloc_tuning=settings.malloc_tuning)
        log = ProposalLog(settings.log_db, logger) if settings.log_db is not None else None
        return cls(proposer, settings, log, logger)

    def check(self, options: ProposeOptions, spelling: Spelling = INTERNAL) -> None:
        """Raise :class:`OptionError` when ``options`` ask for more than this worker allows
        or knows (labels the weights lack)."""
        _check_limits(options, self.limits, spelling)

    def propose(self, image: np.ndarray, options: ProposeOptions, *,
                image_sha256: str | None = None, face: str = "library",
                progress: Callable[[int], None] | None = None,
                started: float | None = None) -> Answer:
        """Proposals for ``image`` ((H, W, 3) uint8 RGB, upright), logged.

        ``image_sha256``: of the image *file* the request carried (the feedback loop finds
        the frame in a CVAT export by it); a face that only has pixels (cvat-sdk) leaves it
        out and the pixels' hash is logged, the frame then being found by ``options.name``.
        ``face`` goes into the log's parameters (which way the request came). ``started``:
        when the request arrived (``time.perf_counter()``; default now): the deadline counts
        from there, so a face passes it when decoding came first.
        """
        start = time.perf_counter() if started is None else started
        self.check(options)
        height, width = image.shape[:2]
        labels = list(options.labels or self.labels)
        steps = self.steps(options, labels)
        report = None
        if min(height, width) < MIN_SIDE:
            result = ProposalResult(proposals=[])
            warn_line(self.logger, "frame thinner than the model's smallest side: no proposals",
                  width=width, height=height, min_side=MIN_SIDE)
        elif self.settings.deadline is not None and self.costs is not None:
            planner = DeadlinePlanner(self.proposer, (height, width), labels, steps,
                                      options.screen, deadline=self.settings.deadline,
                                      started=start, costs=self.costs)
            result = self.proposer.propose_detailed(
                image, iterations=steps, cam_threshold=options.cam_threshold, labels=labels,
                screen=options.screen, progress=progress, planner=planner)
            report = planner.report()
        else:
            result = self.proposer.propose_detailed(
                image, **{**options.propose_kwargs(), "iterations": self._iterations(
                    options, steps)}, progress=progress)
        kept = [p for p in result.proposals if p.confidence >= options.min_confidence]
        seconds = time.perf_counter() - start
        sha = image_sha256 or hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()
        params = {**options.to_log(), "face": face, "steps": steps}
        if report is not None:
            params["deadline"] = report.to_log()
        # Never raises: a log that cannot be written is reported, the answer goes out.
        request_id = log_proposals(self.log, sha, (width, height), options.name, params,
                                   self.model_version, kept, seconds)
        answer = Answer(kept, options, width, height, len(result.proposals) - len(kept),
                        result.maps, seconds, request_id, steps, report)
        if report is not None and report.reduced:
            warn_line(self.logger, "deadline: reduced the request", width=width, height=height,
                  deadline=report.deadline, seconds=round(seconds, 3),
                  tiles_left_out=report.tiles_left_out, labels=report.summary())
        info_line(self.logger, "proposed", width=width, height=height, shapes=len(kept),
              left_out=answer.left_out, seconds=round(seconds, 3))
        return answer

    def steps(self, options: ProposeOptions, labels: list[str]) -> dict[str, int]:
        """The AdvCAM steps asked of each defect: the request's (or ``DEFECTCAM_ITERATIONS``,
        already capped), else the classifier's own capped by ``DEFECTCAM_MAX_ITERATIONS``
        (labels without a known classifier are left out)."""
        if options.iterations is not None:
            return dict.fromkeys(labels, options.iterations)
        return {label: min(self.proposer.predictors[label].metadata.iterations,
                           self.limits.max_iterations)
                for label in labels if label in self.proposer.predictors}

    def tile_count(self, height: int, width: int, options: ProposeOptions) -> int:
        """How many tiles a ``height`` x ``width`` frame asks of the defects ``options``
        name (progress bars count them)."""
        return sum(len(self.proposer.predictors[label].tile_grid(height, width))
                   for label in options.labels or self.labels)

    def _iterations(self, options: ProposeOptions, steps: dict[str, int]
                    ) -> int | dict[str, int] | None:
        """The proposer's ``iterations``: the request's, else ``None`` (each classifier's
        own) unless ``DEFECTCAM_MAX_ITERATIONS`` caps some, then the steps per defect."""
        if options.iterations is not None:
            return options.iterations
        own = {label: self.proposer.predictors[label].metadata.iterations for label in steps}
        return None if all(steps[label] == own[label] for label in own) else steps


def info_line(logger: Any, message: str, **fields: Any) -> None:
    """One info line through a Nuclio logger (``info_with``) or a :mod:`logging` logger."""
    _line(logger, "info", message, fields)


def warn_line(logger: Any, message: str, **fields: Any) -> None:
    """One warning line (Nuclio's ``warn_with`` or :mod:`logging`'s ``warning``)."""
    _line(logger, "warn", message, fields)


def _line(logger: Any, level: str, message: str, fields: dict[str, Any]) -> None:
    if logger is None:
        return
    if hasattr(logger, f"{level}_with"):
        getattr(logger, f"{level}_with")(message, **fields)
    else:
        method = logger.warning if level == "warn" else logger.info
        method("%s %s", message, " ".join(f"{k}={v}" for k, v in fields.items()))


__all__ = ["Answer", "OptionError", "ProposalService", "check_spec_labels", "info_line",
           "warn_line"]
