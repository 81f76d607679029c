"""CVAT's formats for proposals, with every mask codec in one place.

Two encodings: the Nuclio detector answer's 0/1 crop plus inclusive box
(:func:`encode_cvat_mask`), and row-major run lengths starting with background
(:func:`mask_to_cvat_rle`), which the XML export's ``rle``, cvat-sdk's mask ``points``
(:func:`encode_sdk_mask`) and the interaction log (:func:`mask_runs`) share.
"""

from __future__ import annotations

import numpy as np

from defectcam.core.options import OUTPUT_TYPES
from defectcam.core.postprocess import Proposal

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------- 0/1 crop + box


def encode_cvat_mask(mask: np.ndarray, box: Box) -> list[int]:
    """CVAT's detector mask: the crop row-major as 0/1, then the inclusive box
    ``[x1, y1, x2, y2]`` (shared/docs/cvat-contract.md, "The answer")."""
    x1, y1, x2, y2 = box
    if mask.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(f"mask shape {mask.shape} does not match inclusive box {box}")
    return [int(v) for v in mask.astype(np.uint8).ravel()] + [int(x1), int(y1), int(x2), int(y2)]


def decode_cvat_mask_crop(values: list[int]) -> tuple[np.ndarray, Box]:
    """The bool crop and inclusive box of a detector mask (0/1 or 0/255 values)."""
    x1, y1, x2, y2 = (int(v) for v in values[-4:])
    crop = np.fromiter(values[:-4], dtype=np.uint8, count=len(values) - 4)
    return crop.reshape(y2 - y1 + 1, x2 - x1 + 1) > 0, (x1, y1, x2, y2)


def decode_cvat_mask(values: list[int], height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_cvat_mask`, into a full-image boolean mask."""
    crop, (x1, y1, x2, y2) = decode_cvat_mask_crop(values)
    out = np.zeros((height, width), dtype=bool)
    out[y1 : y2 + 1, x1 : x2 + 1] = crop
    return out


# --------------------------------------------------------------------------- run lengths


def mask_to_cvat_rle(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a bool crop, starting with background (0 when the first
    pixel is set): the ``rle`` of a "CVAT for images 1.1" export."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        raise ValueError("cannot encode an empty mask")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def cvat_rle_to_mask(rle: list[int] | np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`mask_to_cvat_rle`: a ``(height, width)`` bool array."""
    counts = np.asarray(rle, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("RLE counts must be non-negative integers")
    if int(counts.sum()) != width * height:
        raise ValueError(f"RLE covers {int(counts.sum())} pixels, box {width}x{height} has "
                         f"{width * height}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(height, width)


def encode_sdk_mask(mask: np.ndarray, box: Box) -> list[int]:
    """A cvat-sdk mask shape's ``points``: run lengths of the crop, then the inclusive box
    (what ``cvat_sdk.masks.encode_mask(full_mask, bbox=[x1, y1, x2 + 1, y2 + 1])`` gives)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if mask.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(f"mask shape {mask.shape} does not match inclusive box {box}")
    return mask_to_cvat_rle(mask) + [x1, y1, x2, y2]


def mask_runs(mask: np.ndarray) -> bytes:
    """:func:`mask_to_cvat_rle` as uint32 little-endian bytes (the interaction log's BLOB)."""
    return np.asarray(mask_to_cvat_rle(mask), dtype="<u4").tobytes()


def runs_to_mask(blob: bytes, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`mask_runs` for a ``width`` x ``height`` box."""
    return cvat_rle_to_mask(np.frombuffer(blob, dtype="<u4").astype(np.int64), width, height)


# --------------------------------------------------------------------------- shapes


def flat_points(polygon: np.ndarray) -> list[float]:
    """``(N, 2)`` polygon -> CVAT's flat ``[x1, y1, x2, y2, ...]`` list, 2 decimals."""
    return [round(float(v), 2) for v in np.asarray(polygon).reshape(-1)]


def proposal_to_cvat_shape(proposal: Proposal, output: str = "polygon") -> dict:
    """One proposal as the shape dict a CVAT detector function returns.

    Args:
        proposal: the proposal, in the frame's pixels.
        output: ``polygon`` (its outer contour) or ``mask`` (CVAT's detector mask: the crop
            row-major as 0/1, then the inclusive box).

    Returns:
        ``{"label", "type", "points", "confidence"[, "mask"]}`` as CVAT reads it.
    """
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
    """Every proposal as :func:`proposal_to_cvat_shape` gives it (the detector's answer)."""
    return [proposal_to_cvat_shape(p, output) for p in proposals]
