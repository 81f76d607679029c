"""Weak-label data layer: CVAT XML, the real data sets, simulated clicks, click crops."""

DEFECTS = ("crack", "spalling", "rust")
NEGATIVE_LABEL = "no-defect"
