"""Training per-defect classifiers from clicks (method.md sections 1-2)."""
