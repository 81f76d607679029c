"""After training: the CAM scale that the predictor's normaliser uses (see WeightsMetadata)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from defectcam.core.model import DefectClassifier
from defectcam.core.weights import WeightsMetadata
from defectcam.training.loop import predict_probabilities


def calibrate_cam_scale(model: DefectClassifier, positives: Dataset, metadata: WeightsMetadata,
                        device: str | torch.device = "cpu") -> float:
    """Median CAM peak over held-apart positive crops that the classifier gets right.

    A map is divided by ``max(image peak, cam_scale * (T + 1))``: on an image with a real
    defect the image's own peak wins; on a clean image the noise stays far below 1.
    """
    probs, labels, peaks = predict_probabilities(model, positives, torch.device(device), metadata)
    keep = (labels >= 0.5) & (probs >= 0.5)
    if not keep.any():
        return 0.0
    return float(np.median(peaks[keep]))
