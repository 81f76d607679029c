"""Proposals -> CVAT shape dicts (see shared/docs/cvat-contract.md, "The answer")."""

from __future__ import annotations

import numpy as np

from defectcam.core.postprocess import Proposal

OUTPUT_TYPES = ("polygon", "mask")


def encode_cvat_mask(mask: np.ndarray, box: tuple[int, int, int, int]) -> list[int]:
    """CVAT's detector mask: the crop row-major as 0/1, then the inclusive box."""
    x1, y1, x2, y2 = box
    if mask.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(f"mask shape {mask.shape} does not match inclusive box {box}")
    return [int(v) for v in mask.astype(np.uint8).ravel()] + [int(x1), int(y1), int(x2), int(y2)]


def decode_cvat_mask(values: list[int], height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_cvat_mask`, into a full-image boolean mask."""
    x1, y1, x2, y2 = (int(v) for v in values[-4:])
    crop = np.asarray(values[:-4], dtype=np.uint8).reshape(y2 - y1 + 1, x2 - x1 + 1)
    out = np.zeros((height, width), dtype=bool)
    out[y1 : y2 + 1, x1 : x2 + 1] = crop > 0
    return out


def flat_points(polygon: np.ndarray) -> list[float]:
    """``(N, 2)`` polygon -> CVAT's flat ``[x1, y1, x2, y2, ...]`` list, 2 decimals."""
    return [round(float(v), 2) for v in np.asarray(polygon).reshape(-1)]


def proposal_to_cvat_shape(proposal: Proposal, output: str = "polygon") -> dict:
    """One proposal as the shape dict a CVAT detector function returns."""
    if output not in OUTPUT_TYPES:
        raise ValueError(f"output must be one of {OUTPUT_TYPES}, got {output!r}")
    shape = {
        "label": proposal.label,
        "type": output,
        "points": flat_points(proposal.polygon),
        "confidence": f"{proposal.confidence:.4f}",
    }
    if output == "mask":
        shape["mask"] = encode_cvat_mask(proposal.mask, proposal.box)
    return shape


def proposals_to_cvat_shapes(proposals: list[Proposal], output: str = "polygon") -> list[dict]:
    return [proposal_to_cvat_shape(p, output) for p in proposals]
