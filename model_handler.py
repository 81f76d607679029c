"""The model side of the Nuclio function: owns the proposer, turns proposals into CVAT shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectcam.core.cvat import proposal_to_cvat_shape
from defectcam.core.labels import LABEL_NAMES
from defectcam.core.proposer import DefectProposer
from defectcam.feedback import model_version_of


class ModelHandler:
    """One proposer (all defect classifiers) loaded once per Nuclio worker.

    Not thread-safe by design: Nuclio gives each worker its own ``init_context`` and sends it
    one event at a time; ``defectcam serve`` does the same with one instance per worker.
    """

    def __init__(
        self, weights: str | Path, device: str | None = None, precision: str = "fp32"
    ) -> None:
        self.proposer = DefectProposer.from_weights(weights, device=device, precision=precision)
        self.labels: tuple[str, ...] = tuple(self.proposer.labels)
        self.model_version = model_version_of(self.proposer)
        self.last_proposals: list = []
        foreign = [name for name in self.labels if name not in LABEL_NAMES]
        if foreign:
            # CVAT silently drops shapes whose label is not in the function spec.
            raise ValueError(
                f"weights in {weights} have labels {foreign} that the function spec "
                f"(defectcam/core/labels.py: {list(LABEL_NAMES)}) does not list"
            )

    def infer(
        self,
        image: np.ndarray,
        *,
        threshold: float,
        output: str = "polygon",
        labels: list[str] | None = None,
        iterations: int | None = None,
        cam_threshold: float | None = None,
        screen: bool | None = None,
    ) -> list[dict]:
        """CVAT shapes for the proposals whose confidence reaches ``threshold``."""
        self.last_proposals = self.proposer.propose(
            image, iterations=iterations, cam_threshold=cam_threshold, labels=labels,
            screen=bool(screen), min_confidence=threshold,
        )
        return [proposal_to_cvat_shape(p, output) for p in self.last_proposals]
