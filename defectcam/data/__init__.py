"""Weak-label data layer: CVAT XML, the real data sets, simulated clicks, click crops."""

from defectcam.core.labels import LABEL_NAMES as DEFECTS
from defectcam.core.labels import NEGATIVE_LABEL

__all__ = ["DEFECTS", "NEGATIVE_LABEL"]
