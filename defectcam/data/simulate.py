"""Simulate the annotator on images with ground-truth masks (method.md section 1).

One positive click per connected component of the defect's mask (a random pixel of it),
and negative clicks on pixels at least ``min_distance`` px from any defect pixel. The result
is a :class:`CvatAnnotations` (``points`` shapes, ``source="manual"``), so simulated and
real annotations go through the same reader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from defectcam.core.image_io import shrink_to
from defectcam.data import NEGATIVE_LABEL
from defectcam.data.crops import read_rgb
from defectcam.data.cvat_xml import (
    NEGATIVE_FOR,
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    write_cvat_xml,
)
from defectcam.data.sources import ImagePair, known_defect_masks, load_defect_mask


def _block_any(mask: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by ``factor`` keeping a block True if any of its pixels is."""
    h, w = mask.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.zeros((hp, wp), dtype=bool)
    padded[:h, :w] = mask
    return padded.reshape(hp // factor, factor, wp // factor, factor).any(axis=(1, 3))


def positive_clicks(
    mask: np.ndarray,
    rng: np.random.Generator,
    min_area: int = 16,
    max_clicks: int | None = None,
) -> np.ndarray:
    """One random pixel per 8-connected component of ``mask`` with ``min_area``+ pixels.

    With ``max_clicks`` the largest components are kept. Rows come in component order
    (top-to-bottom scan), as ``(N, 2)`` int x,y.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(min_area, 1)) + 1
    if max_clicks is not None and keep.size > max_clicks:
        largest = np.argsort(-areas[keep - 1], kind="stable")[:max_clicks]
        keep = np.sort(keep[largest])
    if keep.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    order = np.argsort(flat[fg], kind="stable")
    fg = fg[order]
    # fg is grouped by component label; starts[k] is where label k begins
    starts = np.searchsorted(flat[fg], np.arange(1, count + 1))
    w = mask.shape[1]
    clicks = []
    for k in keep:
        begin, end = starts[k - 1], starts[k]
        index = fg[begin + int(rng.integers(end - begin))]
        clicks.append((index % w, index // w))
    return np.asarray(clicks, dtype=np.int64)


def _crops_clear(small: np.ndarray, factor: int, height: int, width: int, size: int,
                 jitter: int) -> np.ndarray:
    """Per block: True when no negative crop that ``crops.negative_windows`` may cut around
    any pixel of the block (centred, +-jitter, clamped; whole axis when padded) holds a
    defect block. Conservative: a block counts as defect if any of its pixels is."""
    jitter = int(min(jitter, size // 2 - 1))
    integral = cv2.integral(small.astype(np.uint8))

    def block_span(blocks: int, extent: int) -> tuple[np.ndarray, np.ndarray]:
        start = np.arange(blocks) * factor
        end = np.minimum(start + factor - 1, extent - 1)
        if extent <= size:  # crops.pad_to pads this axis: a crop spans all of it
            lo, hi = np.zeros(blocks, np.int64), np.full(blocks, extent - 1)
        else:
            lo = np.clip(start - size // 2 - jitter, 0, extent - size)
            hi = np.clip(end - size // 2 + jitter, 0, extent - size) + size - 1
        return lo // factor, hi // factor + 1

    x0, x1 = block_span(small.shape[1], width)
    y0, y1 = block_span(small.shape[0], height)
    inside = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0]
              + integral[y0][:, x0])
    return inside == 0


def negative_clicks(
    mask: np.ndarray,
    rng: np.random.Generator,
    count: int = 5,
    min_distance: float = 64.0,
    max_side: int = 1024,
    crop_size: int | None = None,
    crop_jitter: int | None = None,
) -> np.ndarray:
    """Up to ``count`` random pixels at least ``min_distance`` px from every defect pixel.

    With ``crop_size`` also only where every negative crop that ``build_crop_set`` may cut
    around the click (``crop_jitter``, default crop_size // 8, as there) is defect-free:
    a bare distance leaves defects inside most crops of crack photos. The distance
    transform runs on a copy downsampled to ``max_side`` (any-pooling, so no defect pixel
    is lost) with a margin that keeps the guarantee exact at full size.
    """
    h, w = mask.shape
    if count <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    factor = max(1, math.ceil(max(h, w) / max_side))
    small = _block_any(mask, factor) if factor > 1 else mask.astype(bool)
    if small.any():
        dist = cv2.distanceTransform(
            (~small).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        # pixels of two blocks whose centres are d blocks apart are >= (d - sqrt2) * factor
        # apart at full size: subtract that slack so the full-size guarantee holds
        slack = math.sqrt(2) if factor > 1 else 0.0
        free = (dist - slack) * factor >= min_distance
    else:
        free = np.ones_like(small, dtype=bool)
    if crop_size is not None:
        jitter = crop_size // 8 if crop_jitter is None else crop_jitter
        free &= _crops_clear(small, factor, h, w, crop_size, jitter)
    cells = np.flatnonzero(free)
    if cells.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    chosen = rng.choice(cells, size=min(count, cells.size), replace=False)
    sw = small.shape[1]
    xs = (chosen % sw) * factor + rng.integers(0, factor, chosen.size)
    ys = (chosen // sw) * factor + rng.integers(0, factor, chosen.size)
    # blocks on the right/bottom edge may extend past the image
    xs, ys = np.minimum(xs, w - 1), np.minimum(ys, h - 1)
    return np.stack([xs, ys], axis=1).astype(np.int64)


def _image_size(path: Path) -> tuple[int, int]:
    """Upright (width, height), as CVAT shows the frame (it applies EXIF orientation, and so
    does ``cv2.imread`` in ``crops.read_rgb``); reads the header only."""
    with Image.open(path) as im:
        width, height = im.size
        # orientations 5-8 turn the picture by 90 degrees
        return (height, width) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (width, height)


def simulate_clicks(
    pairs: Sequence[ImagePair],
    defect: str,
    seed: int = 0,
    *,
    min_area: int = 16,
    max_positives: int | None = None,
    negatives_per_image: int = 5,
    min_distance: float = 64.0,
    max_side: int = 1024,
    crop_size: int | None = None,
    crop_jitter: int | None = None,
    negative_label: str = NEGATIVE_LABEL,
    path: str | Path | None = None,
    other_defects: bool = False,
) -> CvatAnnotations:
    """Simulated click annotations for ``defect`` on ``pairs`` (one CVAT image each).

    Pass the training ``crop_size`` (and ``crop_jitter`` if not the default) to keep
    defects out of every negative crop (see :func:`negative_clicks`).

    ``other_defects``: the annotator also clicks every other defect the photo's masks hold
    (one click per component, labelled with that defect; training reads them as negatives
    for ``defect`` where no ``defect`` is near), and keeps the negative-label clicks clear
    of every defect, as an annotator labelling all defects of a task does.

    Each image gets its own generator seeded by (seed, index), so one image's clicks do
    not depend on the others'. With ``path`` the result is also written as CVAT XML.
    """
    images = []
    for index, pair in enumerate(pairs):
        known = known_defect_masks(pair) if other_defects else {}
        mask = known.get(defect) if other_defects else load_defect_mask(pair, defect)
        if mask is None:
            mask = np.zeros(next(iter(known.values())).shape, dtype=bool)
        width, height = _image_size(pair.image)
        if (height, width) != mask.shape:
            raise ValueError(f"{pair.image}: image {width}x{height} but mask "
                             f"{mask.shape[1]}x{mask.shape[0]}")
        rng = np.random.default_rng([seed, index])
        positives = positive_clicks(mask, rng, min_area, max_positives)
        negatives = negative_clicks(np.any([mask, *known.values()], axis=0), rng,
                                    negatives_per_image, min_distance, max_side, crop_size,
                                    crop_jitter)
        groups = [(defect, positives), (negative_label, negatives)]
        others = np.random.default_rng([seed, index, 1])  # the defect's own clicks unchanged
        groups += [(label, positive_clicks(known[label], others, min_area, max_positives))
                   for label in sorted(known) if label != defect]
        shapes = [
            CvatShape("points", label, np.asarray([xy], dtype=np.float64), source="manual")
            for label, pts in groups for xy in pts
        ]
        images.append(CvatImage(index, pair.name, width, height, shapes))
    annotations = CvatAnnotations(defect_labels(negative_label), images,
                                  {"name": f"simulated {defect} clicks (seed {seed})"})
    if path is not None:
        write_cvat_xml(annotations, path)
    return annotations


# --------------------------------------------------------------------------- clicks at regions


def deepest_point(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the pixel farthest from the mask's outline (ties: first in row order)."""
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(col - 1), float(row - 1)


def negative_click(proposal_region: np.ndarray, kept: np.ndarray, min_distance: float,
                   crop_size: int | None = None) -> tuple[float, float] | None:
    """The deepest point of the rejected region at least ``min_distance`` px (Euclidean,
    pixel centres) from every kept defect pixel, or ``None`` when there is no such point.

    ``crop_size``: also keep every negative training crop that ``build_crop_set`` may cut
    around the click (half the size plus its jitter, crop_size // 8) free of kept defects.
    """
    return deepest_point(proposal_region & _clear_of(kept, kept.shape, min_distance,
                                                     crop_size))


def _clear_of(mask: np.ndarray | None, shape: tuple[int, int], min_distance: float,
              crop_size: int | None) -> np.ndarray:
    """Pixels at least ``min_distance`` px from every ``mask`` pixel and, with ``crop_size``,
    whose negative training crops (half the size plus its jitter) hold none of it."""
    if mask is None or not mask.any():
        return np.ones(shape, dtype=bool)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    clear = dist >= min_distance
    if crop_size:
        reach = crop_size // 2 + crop_size // 8
        kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
        clear &= cv2.dilate(mask.astype(np.uint8), kernel) == 0
    return clear


@dataclass(frozen=True)
class LabelledClick:
    """One click a decision gave: ``label`` is what the place shows (the negative label, or
    another defect); ``x``, ``y`` in image pixels. ``only``: a negative-label click that is
    a negative for this one defect only (written as the point's ``for`` attribute)."""

    label: str
    x: float
    y: float
    only: str | None = None


def rejection_clicks(region: np.ndarray, label: str, kept: dict[str, np.ndarray],
                     min_distance: float, crop_size: int | None = None,
                     negative_label: str = NEGATIVE_LABEL) -> list[LabelledClick]:
    """What rejecting a ``label`` proposal over ``region`` teaches, given the defects the
    image keeps (``kept``: label -> pixels).

    - Where the region lies on no kept defect: a ``negative_label`` click at its deepest
      point at least ``min_distance`` px from every kept defect (:func:`negative_click`).
    - Where it lies on another kept defect: a click of that defect at the deepest point of
      the overlap at least ``min_distance`` px from kept ``label`` (and, with ``crop_size``,
      clear of it for any negative crop): "this is rust, not spalling". Training reads
      other defects' clicks as negatives (``clicks_from_annotations(other_labels=...)``).

    - Where it gives neither because it lies near other kept defects but not on them: a
      ``negative_label`` click for ``label`` only (``only``; training reads it as a
      negative for that defect alone), at the deepest point of the region at least
      ``min_distance`` px from kept ``label``.

    A region too close to a kept defect of its own label gives nothing; a region on both
    clean surface and another defect gives both of the first two.
    """
    shape = region.shape
    own = kept.get(label)
    others = {k: m for k, m in kept.items() if k != label and m is not None and m.any()}
    every = np.zeros(shape, dtype=bool)
    for mask in kept.values():
        if mask is not None:
            every |= mask
    out = []
    xy = negative_click(region, every, min_distance, crop_size)
    if xy is not None:
        out.append(LabelledClick(negative_label, *xy))
    if others:
        on_other = region & np.any(list(others.values()), axis=0)
        on_other &= _clear_of(own, shape, min_distance, crop_size)
        xy = deepest_point(on_other)
        if xy is not None:
            x, y = int(xy[0]), int(xy[1])
            other = next(k for k, m in others.items() if m[y, x])
            out.append(LabelledClick(other, *xy))
    if not out:
        xy = negative_click(region, own if own is not None else np.zeros(shape, dtype=bool),
                            min_distance, crop_size)
        if xy is not None:
            out.append(LabelledClick(negative_label, *xy, only=label))
    return out


# --------------------------------------------------------------------------- hard negatives


@dataclass
class HardNegatives:
    """What proposing on annotated photos found: per image name, the clicks the rejections
    gave (:func:`rejection_clicks`: negatives, or another defect the proposal lay on), in
    image pixels; and the counts."""

    clicks: dict[str, list[LabelledClick]]
    images: int = 0
    proposals: int = 0
    false_positives: int = 0


def hard_negative_clicks(
    propose,
    pairs: Sequence[ImagePair],
    defect: str,
    *,
    min_distance: float = 64.0,
    crop_size: int | None = None,
    max_side: int = 1024,
    read_image=None,
    report=None,
    negative_label: str = NEGATIVE_LABEL,
) -> HardNegatives:
    """The product's own loop on training photos: propose, let the simulated annotator
    reject every proposal that touches no ``defect`` pixel, and click what the rejection
    teaches, by the rule ``defectcam feedback`` applies to a real annotator's rejections
    (:func:`rejection_clicks`, with every defect the photo's masks hold as kept): a negative
    inside the proposal clear of every defect, and where it lies on another defect (rust
    under a spalling proposal) a click of that defect.

    ``propose(image) -> list[Proposal]`` answers as the product does (the weights' own
    settings, CVAT's confidence threshold); it sees the photo shrunk to ``max_side`` on its
    longer side (speed; proposals are brought back to full size). ``read_image(path)``
    reads RGB (default: ``defectcam.data.crops.read_rgb``).
    """
    read_image = read_image or read_rgb
    found = HardNegatives({})
    for n, pair in enumerate(pairs, 1):
        image = read_image(pair.image)
        kept = known_defect_masks(pair)
        height, width = next(iter(kept.values())).shape
        truth = kept.setdefault(defect, np.zeros((height, width), dtype=bool))
        if image.shape[:2] != truth.shape:
            raise ValueError(f"{pair.image}: image {image.shape[1]}x{image.shape[0]} but mask "
                             f"{width}x{height}")
        small, scale = shrink_to(image, max_side)
        proposals = propose(np.ascontiguousarray(small))
        found.images += 1
        found.proposals += len(proposals)
        clicks: list[LabelledClick] = []
        for proposal in proposals:
            region = proposal.full_mask(small.shape[0], small.shape[1])
            if scale != 1.0:
                region = cv2.resize(region.astype(np.uint8), (width, height),
                                    interpolation=cv2.INTER_NEAREST).astype(bool)
            if (region & truth).any():
                continue
            found.false_positives += 1
            clicks += rejection_clicks(region, defect, kept, min_distance, crop_size,
                                       negative_label)
        if clicks:
            found.clicks[pair.name] = clicks
        if report is not None:
            report(f"hard negatives {n}/{len(pairs)} {pair.name}: {len(proposals)} proposals, "
                   f"{len(clicks)} clicks from rejections")
    return found


def labelled_point(click: LabelledClick) -> CvatShape:
    """``click`` as a CVAT ``points`` shape (a ``for`` attribute when it is one defect's)."""
    return CvatShape("points", click.label, np.asarray([[click.x, click.y]], dtype=np.float64),
                     source="manual", attributes={NEGATIVE_FOR: click.only} if click.only else {})


def add_negative_clicks(annotations: CvatAnnotations,
                        clicks: dict[str, list[LabelledClick | tuple[float, float]]],
                        negative_label: str = NEGATIVE_LABEL) -> int:
    """Append ``clicks`` (per image name; a bare (x, y) is a ``negative_label`` click) to the
    matching images of ``annotations`` as ``points``; returns how many were added (images
    not in the export are skipped)."""
    added = 0
    for image in annotations.images:
        for click in clicks.get(image.name, []):
            if not isinstance(click, LabelledClick):
                click = LabelledClick(negative_label, *click)
            image.shapes.append(labelled_point(click))
            added += 1
    return added


# --------------------------------------------------------------------------- a finished batch


def finished_frames(pairs: Sequence[ImagePair], defect: str,
                    proposed: dict[str, list[np.ndarray]] | None = None,
                    min_area: int = 16, negative_label: str = NEGATIVE_LABEL
                    ) -> CvatAnnotations:
    """A batch as the simulated team leaves it in CVAT: every true instance of ``defect``
    (a connected component of its mask) as a ``mask`` shape, the proposals that lay on no
    instance deleted.

    Args:
        pairs: the batch's images with their masks.
        defect: the label annotated.
        proposed: per image name, the regions (bool, frame size) the model proposed there; an
            instance one of them overlaps was corrected from it (``source`` semi-auto), the
            others were drawn from scratch (``manual``).
        min_area: smaller components are not drawn (as :func:`positive_clicks`).
        negative_label: listed among the export's labels.

    Returns:
        The export, ready for :func:`defectcam.data.cvat_xml.write_cvat_xml`.
    """
    proposed = proposed or {}
    images = []
    for index, pair in enumerate(pairs):
        mask = load_defect_mask(pair, defect)
        height, width = mask.shape
        regions = proposed.get(pair.name, [])
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                                   connectivity=8)
        shapes = []
        for idx in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[idx])
            if area < min_area:
                continue
            crop = labels[y : y + h, x : x + w] == idx
            touched = any(region[y : y + h, x : x + w][crop].any() for region in regions)
            shapes.append(CvatShape("mask", defect, source="semi-auto" if touched else "manual",
                                    mask=crop, box=(x, y, x + w - 1, y + h - 1)))
        images.append(CvatImage(index, pair.name, width, height, shapes))
    return CvatAnnotations(defect_labels(negative_label), images,
                           {"name": f"finished {defect} frames"})
