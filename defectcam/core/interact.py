"""One click, one mask: what the interactor answers (CVAT's AI Tools > Interactors).

The annotator clicks on a defect (positive points, optionally negative points and a box).
The label's classifier runs on a *window* around the clicks only; its binarised map, grown
by a dilation, says where the defect is and the image evidence says which pixels: by default
the strict form of the weights' evidence (:data:`defectcam.core.refine.STRICT_EVIDENCE`, the
learning-free baselines' rules: the click already says where, so the evidence need not be as
sensitive as the detector's). How the two combine is :attr:`InteractSettings.region`:
``cut`` keeps the evidence inside the region; ``component`` also makes the evidence pieces
that lie in one piece of the region one object (a patch the evidence breaks into pieces
comes back whole); ``union`` keeps the binarised map itself as well as the evidence inside
the region (a pixel head's outline, widened where the evidence goes on). The answer keeps
the object the positive clicks point at, optionally closed and filled (``fill``), cut away
from the negative clicks (pixels nearer, along the object, to a negative click than to every
positive one). An object that reaches the window's border where the frame goes on (a crack
running out of the window) makes the window grow by a window's side on that side and the
mask is made again, up to ``max_grows`` times and ``max_side`` pixels.

The interactor's settings are per defect: the weights' sidecar holds them (``interact``,
chosen on training photos by ``scripts/interact_grid.py``); the detector's sidecar settings
(threshold, refinement dilation) are only their defaults.

Where the classifier does not fire at a click, the annotator still knows better: the click
takes the evidence there, then the binarised map, and at last a disc of ``snap_px`` around
the click, so that every click gets an answer. The result says which of these gave the
pixels (``source``).

Pixels: the window is cut from the frame and shrunk to the size where the weights'
post-processing settings were chosen (their working longer side, else the frame's own
pixels), as :meth:`DefectProposer.map_to_proposals` does for a whole frame, so that the
classifier sees the defect at the scale it learnt; the mask comes back in frame pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from defectcam.core.image_io import working_factor
from defectcam.core.postprocess import binarize_map, close_mask, mask_to_polygon
from defectcam.core.predictor import DefectMapPredictor
from defectcam.core.refine import EVIDENCE_KINDS, STRICT_EVIDENCE, Refinement, filled, grow

Point = tuple[float, float]
#: Where the answered pixels came from, most to least informed.
SOURCES = ("model", "evidence", "map", "disc")
#: How the classifier's region and the evidence make the model's candidate (``InteractSettings``).
REGION_RULES = ("cut", "component", "union")
#: One candidate: its source, its mask (``None``: nothing of that kind) and the mask whose
#: connected pieces join the candidate's pieces into one object (``None``: ``group_px`` only).
Candidate = tuple[str, np.ndarray | None, np.ndarray | None]
#: A function from the window (RGB, at the post-processing size) and the positive clicks in
#: its pixels ((x, y)) to candidates, tried in order.
Candidates = Callable[[np.ndarray, Sequence[tuple[int, int]]], Sequence[Candidate]]


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

    Shared with the learning-free click baseline: ``window``: side of the first window in
    post-processing pixels (0: the weights' tile size); ``snap_px``: a click takes an object
    within this distance (post-processing pixels), and the fallback disc has this radius;
    ``group_px``: evidence pieces this close are one object (a crack's dark line breaks into
    pieces); ``erase_px``: how far along the object a negative click erases; ``max_grows``:
    how often the window may grow after the object; ``max_side``: the grown window's sides
    at most this (post-processing pixels, 0: the frame); ``margin``: share of the window
    kept around the clicks; ``fill``: close the answer with a disc of this radius and fill
    its holes (blobs are drawn as one outline around patchy evidence; 0: off).

    The classifier's part: ``cam_threshold`` and ``dilation`` of its region (``None``: the
    weights' detector settings); ``region``: one of :data:`REGION_RULES` (module docstring);
    ``evidence``: ``None``: the strict form of the weights' refinement evidence; a kind of
    :data:`~defectcam.core.refine.EVIDENCE_KINDS`: that kind's strict form (weights without
    a refinement, such as a pixel head's); ``"weights"``: the weights' refinement as the
    detector uses it (its own sensitivity); ``"none"``: the region alone, closed.
    ``iterations``: AdvCAM steps at a click (``None``: the weights' recommendation for the
    detector; a click is answered at once, so it may take fewer). ``click_share``: the
    region's threshold falls to this share of the map's value at the clicks where that is
    lower, never below this share of itself (the click says the defect is there, so a map
    the model is unsure of still outlines it, while a map near zero at the click does not
    make the whole window the region; the least confident click counts; ``None``: the
    threshold alone).
    """

    window: int = 0
    snap_px: int = 12
    group_px: int = 6
    erase_px: int = 36
    max_grows: int = 6
    max_side: int = 0
    margin: float = 0.25
    fill: int = 0
    cam_threshold: float | None = None
    dilation: int | None = None
    region: str = "cut"
    evidence: str | None = None
    iterations: int | None = None
    click_share: float | None = None

    def __post_init__(self) -> None:
        if min(self.window, self.group_px, self.max_grows, self.max_side, self.fill) < 0 or min(
                self.snap_px, self.erase_px) < 1:
            raise ValueError("window, group_px, max_grows, max_side and fill must be >= 0, "
                             "snap_px and erase_px >= 1")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")
        if self.cam_threshold is not None and not 0.0 <= self.cam_threshold <= 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1], got {self.cam_threshold}")
        if self.dilation is not None and self.dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {self.dilation}")
        if self.iterations is not None and self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.click_share is not None and not 0.0 < self.click_share <= 1.0:
            raise ValueError(f"click_share must be in (0, 1], got {self.click_share}")
        if self.region not in REGION_RULES:
            raise ValueError(f"unknown region {self.region!r}; known: {', '.join(REGION_RULES)}")
        if self.evidence not in (None, "none", "weights", *EVIDENCE_KINDS):
            raise ValueError(f"unknown evidence {self.evidence!r}; known: none, weights, "
                             f"{', '.join(EVIDENCE_KINDS)}")

    @classmethod
    def from_dict(cls, data: dict | None) -> InteractSettings:
        """Settings from a sidecar's ``interact`` dict (missing keys: the defaults).

        Args:
            data: key -> value, or ``None``.

        Returns:
            The settings; ``ValueError`` naming an unknown key or a bad value.
        """
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown interact settings {unknown}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def steps(self, detector_steps: int) -> int:
        """AdvCAM steps at a click: the settings' own, else the detector's (the weights')."""
        return detector_steps if self.iterations is None else self.iterations


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
        predictor: the label's classifier; its weights give the interactor's settings
            (sidecar ``interact``) and, for what those leave open, the CAM threshold, the
            refinement's evidence kind (used in its strict form) and dilation, and, for
            weights without evidence, the closing.
        image: the frame, upright RGB.
        clicks: points (and box) in frame pixels; they must lie inside the frame.
        iterations: AdvCAM steps (``None``: the settings', then the weights').
        cam_threshold: binarisation of the map (``None``: the settings', then the weights').
        settings: window, snapping, growth and region rule (``None``: the weights'
            :attr:`~defectcam.core.weights.WeightsMetadata.interact`).

    Returns:
        :class:`InteractResult` in frame pixels.
    """
    m = predictor.metadata
    settings = settings or InteractSettings.from_dict(m.interact)
    if iterations is None:
        iterations = settings.steps(m.iterations)
    candidates = model_candidates(predictor, settings, iterations, cam_threshold)
    height, width = image.shape[:2]
    factor = working_factor(width, height, 1.0, m.working_max_side)
    return click_mask(image, clicks, candidates, m.label, factor, settings,
                      default_window=m.tile_size)


def model_candidates(predictor: DefectMapPredictor, settings: InteractSettings,
                     iterations: int | None = None, cam_threshold: float | None = None
                     ) -> Candidates:
    """The classifier's candidates for :func:`click_mask`: its region combined with the
    evidence as ``settings`` say, then the evidence alone, then the region alone.

    Args:
        predictor: anything with ``metadata`` and ``predict(window, iterations).cam_map``
            (a cache of maps in the settings' search).
        settings: the region rule, threshold, dilation and evidence.
        iterations: AdvCAM steps (``None``: the weights').
        cam_threshold: overrides the settings' and the weights' threshold.

    Returns:
        The window -> candidates function.
    """
    m = predictor.metadata
    threshold = next(t for t in (cam_threshold, settings.cam_threshold, m.cam_threshold)
                     if t is not None)
    refinement = Refinement.from_dict(m.refinement)
    dilation = refinement.dilation if settings.dilation is None else settings.dilation
    if settings.evidence == "weights":
        strict = refinement if refinement.active else None
    elif settings.evidence != "none":
        strict = STRICT_EVIDENCE.get(settings.evidence or refinement.evidence)
    else:
        strict = None

    def candidates(window: np.ndarray, positive: Sequence[tuple[int, int]] = ()
                   ) -> list[Candidate]:
        cam = predictor.predict(window, iterations).cam_map
        region = binarize_map(cam, _click_threshold(cam, positive, threshold, settings))
        if strict is None:
            return [("model", close_mask(region, m.closing_size), None), ("map", region, None)]
        evidence = strict.evidence_map(window)
        near = grow(region, dilation)
        joins = near if settings.region == "component" else None
        model = evidence & near
        if settings.region == "union":
            model |= close_mask(region, m.closing_size)
        return [("model", model, joins), ("evidence", evidence, None), ("map", region, None)]

    return candidates


def _click_threshold(cam: np.ndarray, positive: Sequence[tuple[int, int]], threshold: float,
                     settings: InteractSettings) -> float:
    """The region's threshold: ``threshold``, or ``click_share`` of the map's value at the
    least confident positive click (its peak within ``snap_px``) where that is lower, at
    least ``click_share`` of ``threshold``."""
    if settings.click_share is None or not positive:
        return threshold
    height, width = cam.shape[:2]
    r = settings.snap_px
    at_clicks = [float(cam[max(0, y - r) : min(height, y + r + 1),
                           max(0, x - r) : min(width, x + r + 1)].max()) for x, y in positive]
    share = settings.click_share
    return max(share * threshold, min(threshold, share * min(at_clicks)))


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
    cap = max(side, round(settings.max_side / factor)) if settings.max_side else 0
    grows = settings.max_grows if clicks.box is None else 0
    windows = 0
    while True:
        windows += 1
        mask, source = _window_mask(image, window, clicks, candidates, factor, settings)
        touched = _open_sides(mask, window, width, height)
        if not touched or windows > grows:
            break
        grown = _grown(window, touched, side, width, height, cap)
        if grown == window:
            break
        window = grown
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
    sources = [(kind, mask, joins) for kind, mask, joins in candidates(small, positive)
               if mask is not None and mask.any()]
    sources.append((SOURCES[-1], fallback.astype(bool), None))
    chosen, taken = np.zeros((small_h, small_w), bool), []
    joined = np.zeros((small_h, small_w), bool)
    for point in positive:  # each click takes the most informed source with an object near it
        for kind, mask, joins in sources:
            obj = select_object(mask, [point], (), settings, joins=joins)
            if obj is not None:
                chosen |= obj
                taken.append(kind)
                if joins is not None:
                    joined |= joins
                break
    if settings.fill:
        chosen = filled(chosen, settings.fill)
    chosen = erase_negatives(chosen, positive, negative, settings,
                             joins=joined if joined.any() else None)
    source = min(taken, key=SOURCES.index)
    if chosen.shape != crop.shape[:2]:
        chosen = cv2.resize(chosen.astype(np.uint8), (x2 - x1, y2 - y1),
                            interpolation=cv2.INTER_NEAREST).astype(bool)
    return chosen, source


def select_object(candidates: np.ndarray, positive: Sequence[tuple[int, int]],
                  negative: Sequence[tuple[int, int]] = (),
                  settings: InteractSettings | None = None,
                  joins: np.ndarray | None = None) -> np.ndarray | None:
    """The pixels of ``candidates`` (boolean) that form the object the positive clicks point
    at: per click the nearest object within ``snap_px`` (pieces within ``group_px`` of each
    other, or in one piece of ``joins``, are one object), less what the negative clicks
    erase (:func:`erase_negatives`).

    Args:
        candidates: boolean mask to choose from.
        positive: (x, y) pixel positions of the positive clicks.
        negative: (x, y) pixel positions of the negative clicks.
        settings: snapping, grouping and erasing (:class:`InteractSettings`).
        joins: boolean mask (same size) whose connected pieces each make one object of
            the candidates' pieces inside them (the classifier's region); ``None``: none.

    Returns:
        A boolean mask of the object, or ``None`` when no positive click reaches one.
    """
    settings = settings or InteractSettings()
    candidates = np.asarray(candidates, dtype=bool)
    grouped = grow(candidates, settings.group_px) if settings.group_px else candidates
    if joins is not None:
        grouped = grouped | np.asarray(joins, dtype=bool)
    _, labels = cv2.connectedComponents(grouped.astype(np.uint8), connectivity=8)
    reach = settings.snap_px + settings.group_px
    chosen = {label for x, y in positive if (label := _nearest_label(labels, x, y, reach))}
    if not chosen:
        return None
    obj = erase_negatives(np.isin(labels, sorted(chosen)) & candidates, positive, negative,
                          settings)
    return obj if obj.any() else None


def erase_negatives(obj: np.ndarray, positive: Sequence[tuple[int, int]],
                    negative: Sequence[tuple[int, int]], settings: InteractSettings,
                    joins: np.ndarray | None = None) -> np.ndarray:
    """``obj`` without what the negative clicks erase, then only the pieces the positive
    clicks still reach (pieces within ``group_px``, or in one piece of ``joins``, are one).

    A negative click on a piece that holds no positive click takes that whole piece away (it
    says "not this one"); on the clicked piece itself it erases locally: the pixels that,
    along ``obj``, lie nearer to it than to every positive click and within
    ``settings.erase_px`` of it (a negative click on a branch does not cut a long crack in
    half)."""
    if not negative or not obj.any():
        return obj
    reach = settings.snap_px + settings.group_px
    grouped = grow(obj, settings.group_px) if settings.group_px else obj
    _, pieces = cv2.connectedComponents(grouped.astype(np.uint8), connectivity=8)
    clicked = {label for x, y in positive if (label := _nearest_label(pieces, x, y, reach))}
    local = []
    for x, y in negative:
        label = _nearest_label(pieces, x, y, reach)
        if label and label not in clicked:
            obj = obj & (pieces != label)
        else:
            local.append((x, y))
    if local and obj.any():
        obj = obj & (_territory(obj, positive, local, settings.erase_px) != 2)
    grouped = grow(obj, settings.group_px) if settings.group_px else obj
    if joins is not None:
        grouped = grouped | joins
    _, pieces = cv2.connectedComponents(grouped.astype(np.uint8), connectivity=8)
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
           height: int, cap: int = 0) -> tuple[int, int, int, int]:
    """``window`` grown by ``step`` on ``sides``, each axis to at most ``cap`` px (0: the
    frame); an axis already longer than ``cap`` keeps its length."""
    x1, x2 = _grown_axis(window[0], window[2], "left" in sides, "right" in sides, step,
                         width, cap)
    y1, y2 = _grown_axis(window[1], window[3], "top" in sides, "bottom" in sides, step,
                         height, cap)
    return x1, y1, x2, y2


def _grown_axis(low: int, high: int, to_low: bool, to_high: bool, step: int, limit: int,
                cap: int) -> tuple[int, int]:
    by_low = min(low, step) if to_low else 0
    by_high = min(limit - high, step) if to_high else 0
    if cap:
        room = max(0, cap - (high - low))
        if by_low + by_high > room:  # share what is left between the two sides
            by_low = min(by_low, room - min(by_high, room // 2))
            by_high = min(by_high, room - by_low)
    return low - by_low, high + by_high


__all__ = ["REGION_RULES", "SOURCES", "Candidate", "Candidates", "Clicks", "InteractResult",
           "InteractSettings", "click_mask", "erase_negatives", "interact", "model_candidates",
           "select_object"]
