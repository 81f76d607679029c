"""One click, one mask: what the interactor answers (CVAT's AI Tools > Interactors).

The annotator clicks on a defect (positive points, optionally negative points and a box).
The label's classifier runs on a *window* around the clicks only; its binarised map, grown by
the weights' refinement dilation, keeps the strict form of the weights' image evidence
(:data:`defectcam.core.refine.STRICT_EVIDENCE`, the learning-free baselines' rules: the click
already says where, so the evidence need not be as sensitive as the detector's), and the
answer keeps the object the positive clicks point at, cut away from the negative clicks
(pixels nearer, along the object, to a negative click than to every positive one). An object
that reaches the window's border where the frame goes on (a crack running out of the window)
makes the window grow by a window's side on that side and the mask is made again, up to
``max_grows`` times.

Where the classifier does not fire at a click, the annotator still knows better: the click
takes the evidence there (the weights' own evidence rule), then the binarised map, and at
last a disc of ``snap_px`` around the click, so that every click gets an answer. The result
says which of these gave the pixels (``source``).

Pixels: the window is cut from the frame and shrunk to the size where the weights'
post-processing settings were chosen (their working longer side, else the frame's own
pixels), as :meth:`DefectProposer.map_to_proposals` does for a whole frame, so that the
classifier sees the defect at the scale it learnt; the mask comes back in frame pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from defectcam.core.image_io import working_factor
from defectcam.core.postprocess import binarize_map, close_mask, mask_to_polygon
from defectcam.core.predictor import DefectMapPredictor
from defectcam.core.refine import STRICT_EVIDENCE, Refinement, grow

Point = tuple[float, float]
#: Where the answered pixels came from, most to least informed.
SOURCES = ("model", "evidence", "map", "disc")
#: A function from the window (RGB, at the post-processing size) to candidate masks, each
#: named by its source, tried in order (``None``: nothing of that kind).
Candidates = Callable[[np.ndarray], Sequence[tuple[str, np.ndarray | None]]]


@dataclass(frozen=True)
class Clicks:
    """An interaction's points in frame pixels (x, y) and its optional box (x1, y1, x2, y2)."""

    positive: tuple[Point, ...]
    negative: tuple[Point, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if not self.positive:
            raise ValueError("an interaction needs at least one positive click")


@dataclass(frozen=True)
class InteractSettings:
    """How a click becomes a mask.

    ``window``: side of the first window in post-processing pixels (0: the weights' tile
    size); ``snap_px``: a click takes an object within this distance (post-processing
    pixels), and the fallback disc has this radius; ``group_px``: evidence pieces this close
    are one object (a crack's dark line breaks into pieces); ``erase_px``: how far along the
    object a negative click erases; ``max_grows``: how often the window may grow after the
    object; ``margin``: share of the window kept around the clicks.
    """

    window: int = 0
    snap_px: int = 12
    group_px: int = 6
    erase_px: int = 36
    max_grows: int = 6
    margin: float = 0.25

    def __post_init__(self) -> None:
        if min(self.window, self.group_px, self.max_grows) < 0 or min(
                self.snap_px, self.erase_px) < 1:
            raise ValueError("window, group_px and max_grows must be >= 0, snap_px and "
                             "erase_px >= 1")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")


@dataclass
class InteractResult:
    """The mask answered for one interaction.

    ``mask``: the object cropped to ``box`` (inclusive ``x1, y1, x2, y2`` frame pixels;
    ``None`` and an empty mask when nothing was found, which only a degenerate frame gives);
    ``window``: the last window (``x1, y1, x2, y2``, end-exclusive) and ``windows`` how many
    were computed; ``source``: one of :data:`SOURCES`; ``seconds``: the time it took.
    """

    label: str
    mask: np.ndarray
    box: tuple[int, int, int, int] | None
    window: tuple[int, int, int, int]
    windows: int
    source: str
    seconds: float

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The object as a boolean mask of the whole frame."""
        out = np.zeros((height, width), dtype=bool)
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            out[y1 : y2 + 1, x1 : x2 + 1] = self.mask
        return out

    def polygon(self) -> np.ndarray:
        """Outer contour (N, 2 float x, y) of the largest piece, in frame pixels (empty for
        an empty answer)."""
        if self.box is None:
            return np.zeros((0, 2))
        return mask_to_polygon(self.mask, offset=(self.box[0], self.box[1]))


# --------------------------------------------------------------------------- the model's mask


def interact(predictor: DefectMapPredictor, image: np.ndarray, clicks: Clicks, *,
             iterations: int | None = None, cam_threshold: float | None = None,
             settings: InteractSettings | None = None) -> InteractResult:
    """The mask of the defect the ``clicks`` point at on ``image`` ((H, W, 3) uint8 RGB).

    Args:
        predictor: the label's classifier; its weights give the CAM threshold, the
            refinement's evidence kind (used in its strict form) and dilation, and, for
            weights without evidence, the closing.
        image: the frame, upright RGB.
        clicks: points (and box) in frame pixels; they must lie inside the frame.
        iterations: AdvCAM steps (``None``: the weights').
        cam_threshold: binarisation of the map (``None``: the weights').
        settings: window, snapping and growth (:class:`InteractSettings`).

    Returns:
        :class:`InteractResult` in frame pixels.
    """
    m = predictor.metadata
    threshold = m.cam_threshold if cam_threshold is None else cam_threshold
    refinement = Refinement.from_dict(m.refinement)
    strict = STRICT_EVIDENCE.get(refinement.evidence)

    def candidates(window: np.ndarray) -> list[tuple[str, np.ndarray | None]]:
        region = binarize_map(predictor.predict(window, iterations).cam_map, threshold)
        if strict is None:
            return [("model", close_mask(region, m.closing_size)), ("map", region)]
        evidence = strict.evidence_map(window)
        return [("model", evidence & grow(region, refinement.dilation)),
                ("evidence", evidence), ("map", region)]

    height, width = image.shape[:2]
    factor = working_factor(width, height, 1.0, m.working_max_side)
    return click_mask(image, clicks, candidates, m.label, factor,
                      settings or InteractSettings(), default_window=m.tile_size)


# --------------------------------------------------------------------------- any candidates


def click_mask(image: np.ndarray, clicks: Clicks, candidates: Candidates, label: str,
               factor: float = 1.0, settings: InteractSettings | None = None, *,
               default_window: int = 512) -> InteractResult:
    """The object ``clicks`` point at among ``candidates``' masks, on a growing window.

    Args:
        image: the frame, (H, W, 3) uint8 RGB.
        clicks: in frame pixels, inside the frame.
        candidates: the window (shrunk by ``factor``) -> candidate masks, tried in order;
            the learning-free click baseline passes its evidence rule here.
        label: the answer's label.
        factor: frame pixels -> the candidates' pixels (at most 1).
        settings: :class:`InteractSettings`.
        default_window: the window side when ``settings.window`` is 0 (candidates' pixels).

    Returns:
        :class:`InteractResult` in frame pixels.
    """
    start = time.perf_counter()
    settings = settings or InteractSettings()
    height, width = image.shape[:2]
    side = max(8, round((settings.window or default_window) / factor))
    window = _first_window(clicks, side, settings.margin, width, height)
    grows = settings.max_grows if clicks.box is None else 0
    windows = 0
    while True:
        windows += 1
        mask, source = _window_mask(image, window, clicks, candidates, factor, settings)
        touched = _open_sides(mask, window, width, height)
        if not touched or windows > grows:
            break
        window = _grown(window, touched, side, width, height)
    x1, y1 = window[0], window[1]
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return InteractResult(label, np.zeros((0, 0), bool), None, window, windows, source,
                              time.perf_counter() - start)
    box = (x1 + int(xs.min()), y1 + int(ys.min()), x1 + int(xs.max()), y1 + int(ys.max()))
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return InteractResult(label, crop, box, window, windows, source,
                          time.perf_counter() - start)


def _first_window(clicks: Clicks, side: int, margin: float, width: int, height: int
                  ) -> tuple[int, int, int, int]:
    """The clicks' extent (or the box) padded by ``margin`` of the window, at least ``side``
    on each axis, shifted inside the frame."""
    if clicks.box is not None:
        bx1, by1, bx2, by2 = clicks.box
        xs, ys = [bx1, bx2], [by1, by2]
        pad = 8
    else:
        points = [*clicks.positive, *clicks.negative]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        pad = round(side * margin)
    x1, x2 = _span(min(xs) - pad, max(xs) + pad + 1, side, width)
    y1, y2 = _span(min(ys) - pad, max(ys) + pad + 1, side, height)
    return x1, y1, x2, y2


def _span(low: float, high: float, side: int, limit: int) -> tuple[int, int]:
    """[low, high) widened to ``side`` around its centre, shifted and clipped into
    [0, limit)."""
    low, high = int(np.floor(low)), int(np.ceil(high))
    if high - low < side:
        centre = (low + high) // 2
        low, high = centre - side // 2, centre - side // 2 + side
    if low < 0:
        low, high = 0, high - low
    if high > limit:
        low, high = max(0, low - (high - limit)), limit
    return max(0, low), min(limit, high)


def _window_mask(image: np.ndarray, window: tuple[int, int, int, int], clicks: Clicks,
                 candidates: Candidates, factor: float, settings: InteractSettings
                 ) -> tuple[np.ndarray, str]:
    """The object inside ``window`` (a boolean mask of the window, frame pixels) and its
    source."""
    x1, y1, x2, y2 = window
    crop = np.ascontiguousarray(image[y1:y2, x1:x2])
    small_w, small_h = max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor))
    small = crop if (small_w, small_h) == (x2 - x1, y2 - y1) else cv2.resize(
        crop, (small_w, small_h), interpolation=cv2.INTER_AREA)
    sx, sy = small_w / (x2 - x1), small_h / (y2 - y1)

    def local(points: Sequence[Point]) -> list[tuple[int, int]]:
        return [(min(small_w - 1, max(0, int((x - x1 + 0.5) * sx))),
                 min(small_h - 1, max(0, int((y - y1 + 0.5) * sy)))) for x, y in points]

    positive, negative = local(clicks.positive), local(clicks.negative)
    fallback = np.zeros((small_h, small_w), np.uint8)
    for x, y in positive:
        cv2.circle(fallback, (x, y), settings.snap_px, 1, thickness=-1)
    sources = [(kind, mask) for kind, mask in candidates(small)
               if mask is not None and mask.any()] + [(SOURCES[-1], fallback.astype(bool))]
    chosen, taken = np.zeros((small_h, small_w), bool), []
    for point in positive:  # each click takes the most informed source with an object near it
        for kind, mask in sources:
            obj = select_object(mask, [point], (), settings)
            if obj is not None:
                chosen |= obj
                taken.append(kind)
                break
    chosen = erase_negatives(chosen, positive, negative, settings)
    source = min(taken, key=SOURCES.index)
    if chosen.shape != crop.shape[:2]:
        chosen = cv2.resize(chosen.astype(np.uint8), (x2 - x1, y2 - y1),
                            interpolation=cv2.INTER_NEAREST).astype(bool)
    return chosen, source


def select_object(candidates: np.ndarray, positive: Sequence[tuple[int, int]],
                  negative: Sequence[tuple[int, int]] = (),
                  settings: InteractSettings | None = None) -> np.ndarray | None:
    """The pixels of ``candidates`` (boolean) that form the object the positive clicks point
    at: per click the nearest object within ``snap_px`` (pieces within ``group_px`` of each
    other are one object), less what the negative clicks erase (:func:`erase_negatives`).

    Args:
        candidates: boolean mask to choose from.
        positive: (x, y) pixel positions of the positive clicks.
        negative: (x, y) pixel positions of the negative clicks.
        settings: snapping, grouping and erasing (:class:`InteractSettings`).

    Returns:
        A boolean mask of the object, or ``None`` when no positive click reaches one.
    """
    settings = settings or InteractSettings()
    candidates = np.asarray(candidates, dtype=bool)
    grouped = grow(candidates, settings.group_px) if settings.group_px else candidates
    _, labels = cv2.connectedComponents(grouped.astype(np.uint8), connectivity=8)
    reach = settings.snap_px + settings.group_px
    chosen = {label for x, y in positive if (label := _nearest_label(labels, x, y, reach))}
    if not chosen:
        return None
    obj = erase_negatives(np.isin(labels, sorted(chosen)) & candidates, positive, negative,
                          settings)
    return obj if obj.any() else None


def erase_negatives(obj: np.ndarray, positive: Sequence[tuple[int, int]],
                    negative: Sequence[tuple[int, int]], settings: InteractSettings
                    ) -> np.ndarray:
    """``obj`` without what the negative clicks erase: the pixels that, along ``obj``, lie
    nearer to a negative click than to every positive one and within ``settings.erase_px``
    of it (a local eraser: a negative click on a branch does not cut a long crack in half),
    then only the pieces the positive clicks still reach."""
    if not negative or not obj.any():
        return obj
    obj = obj & (_territory(obj, positive, negative, settings.erase_px) != 2)
    grouped = grow(obj, settings.group_px) if settings.group_px else obj
    _, pieces = cv2.connectedComponents(grouped.astype(np.uint8), connectivity=8)
    reach = settings.snap_px + settings.group_px
    keep = {label for x, y in positive if (label := _nearest_label(pieces, x, y, reach))}
    return obj & np.isin(pieces, sorted(keep))


def _nearest_label(labels: np.ndarray, x: int, y: int, radius: int) -> int:
    """The non-zero label nearest to (x, y) within ``radius`` px (0: none)."""
    height, width = labels.shape
    y0, y1 = max(0, y - radius), min(height, y + radius + 1)
    x0, x1 = max(0, x - radius), min(width, x + radius + 1)
    patch = labels[y0:y1, x0:x1]
    ys, xs = np.nonzero(patch)
    if len(xs) == 0:
        return 0
    distance = (ys + y0 - y) ** 2 + (xs + x0 - x) ** 2
    best = int(np.argmin(distance))
    return int(patch[ys[best], xs[best]]) if distance[best] <= radius * radius else 0


def _territory(obj: np.ndarray, positive: Sequence[tuple[int, int]],
               negative: Sequence[tuple[int, int]], erase_px: int) -> np.ndarray:
    """Which click each pixel of ``obj`` is nearest to along ``obj`` (8-connected steps):
    1 positive, 2 negative (at most ``erase_px`` steps from it), 0 neither. A click off the
    object starts from the object's pixel nearest to it; a tie goes to the positive."""
    owner = np.zeros(obj.shape, np.uint8)
    for value, points in ((2, negative), (1, positive)):
        for x, y in points:
            owner[_nearest_pixel(obj, x, y)] = value
    kernel = np.ones((3, 3), np.uint8)
    free = obj & (owner == 0)
    steps = 0
    while free.any():
        steps += 1
        values = (1, 2) if steps <= erase_px else (1,)
        grown = {value: cv2.dilate((owner == value).astype(np.uint8), kernel).astype(bool)
                 & free for value in values}
        if not any(mask.any() for mask in grown.values()):
            break
        for value in reversed(values):  # positive last: it wins a tie
            owner[grown[value]] = value
        free &= owner == 0
    return owner


def _nearest_pixel(obj: np.ndarray, x: int, y: int) -> tuple[int, int]:
    """(y, x) of the pixel of ``obj`` nearest to (x, y)."""
    if obj[y, x]:
        return y, x
    ys, xs = np.nonzero(obj)
    best = int(np.argmin((ys - y) ** 2 + (xs - x) ** 2))
    return int(ys[best]), int(xs[best])


def _open_sides(mask: np.ndarray, window: tuple[int, int, int, int], width: int,
                height: int) -> tuple[str, ...]:
    """Sides of ``window`` the object reaches where the frame goes on beyond them."""
    if not mask.any():
        return ()
    x1, y1, x2, y2 = window
    sides = []
    if x1 > 0 and mask[:, 0].any():
        sides.append("left")
    if x2 < width and mask[:, -1].any():
        sides.append("right")
    if y1 > 0 and mask[0, :].any():
        sides.append("top")
    if y2 < height and mask[-1, :].any():
        sides.append("bottom")
    return tuple(sides)


def _grown(window: tuple[int, int, int, int], sides: Sequence[str], step: int, width: int,
           height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = window
    return (max(0, x1 - step) if "left" in sides else x1,
            max(0, y1 - step) if "top" in sides else y1,
            min(width, x2 + step) if "right" in sides else x2,
            min(height, y2 + step) if "bottom" in sides else y2)


__all__ = ["SOURCES", "Clicks", "InteractResult", "InteractSettings", "click_mask", "interact",
           "select_object"]
