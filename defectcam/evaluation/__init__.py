"""Measurement layer of ``defectcam evaluate``: pixel/instance metrics and time saved."""

from defectcam.evaluation.metrics import (
    DEFAULT_SWEEP_THRESHOLDS,
    DefectSummary,
    EvaluationSummary,
    ImageMatch,
    InstanceMatch,
    MatchRule,
    PixelCounts,
    SweepPoint,
    best_threshold,
    match_instances,
    perimeter_px,
    pixel_counts,
    proposals_union,
    summarize,
    threshold_sweep,
    truth_instances,
)
from defectcam.evaluation.timesave import (
    AnnotatorModel,
    EditCost,
    Eq3Groups,
    GroupThresholds,
    InstanceTime,
    TimeSavingEstimate,
    eq3_saving,
    estimate_time_saving,
    groups_from_ious,
)

__all__ = [
    "DEFAULT_SWEEP_THRESHOLDS", "AnnotatorModel", "DefectSummary", "EditCost", "Eq3Groups",
    "EvaluationSummary", "GroupThresholds", "ImageMatch", "InstanceMatch", "InstanceTime",
    "MatchRule", "PixelCounts", "SweepPoint", "TimeSavingEstimate", "best_threshold",
    "eq3_saving", "estimate_time_saving", "groups_from_ious", "match_instances",
    "perimeter_px", "pixel_counts", "proposals_union", "summarize", "threshold_sweep",
    "truth_instances",
]
