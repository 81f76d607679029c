"""Pixel and instance metrics of proposals against a truth mask (pure NumPy/OpenCV).

Pixels: the union of all proposals against the truth mask, summed over images (micro
average). Instances: matched by :class:`MatchRule`, whose docstring gives the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from defectcam.core.postprocess import Proposal
from defectcam.evaluation.timesave import (
    AnnotatorModel,
    GroupThresholds,
    TimeSavingEstimate,
    estimate_time_saving,
)

ProposalLike = Proposal | np.ndarray
DEFAULT_SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 11))


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / den if den > 0 else empty


@dataclass
class PixelCounts:
    """Pixel confusion counts; ``+`` sums images for a micro average."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    #: Boundary-tolerant overlap sums: ``near`` = |T & dil(P)| + |P & dil(T)| and
    #: ``total`` = |T| + |P| (dilation by the match tolerance), for :attr:`iou_tolerant`.
    near: int = 0
    total: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                           self.near + other.near, self.total + other.total)

    @property
    def iou_tolerant(self) -> float:
        """Pixel IoU with the boundary tolerance: D / (2 - D) with the tolerant Dice
        D = near / total, the same rule as an instance's ``iou_tolerant``. Crack labels are
        1-3 px wide and drawn a pixel or two off: plain IoU calls a proposal one pixel beside
        the label wrong everywhere. Equals :attr:`iou` at tolerance 0; 1.0 when both are
        empty."""
        if self.total == 0:
            return 1.0
        dice = self.near / self.total
        return dice / (2.0 - dice)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "iou": self.iou,
                "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "near": self.near, "total": self.total, "iou_tolerant": self.iou_tolerant}


def pixel_counts(pred: np.ndarray, truth: np.ndarray, tolerance_px: int = 0) -> PixelCounts:
    """Confusion counts of two boolean masks of the same shape, with the tolerant overlap
    sums for a boundary tolerance of ``tolerance_px`` (Chebyshev)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pixel_counts: shapes differ {pred.shape} vs {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    n_pred, n_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if tolerance_px > 0:
        near = int(np.count_nonzero(truth & _dilate(pred, tolerance_px))
                   + np.count_nonzero(pred & _dilate(truth, tolerance_px)))
    else:
        near = 2 * tp
    return PixelCounts(tp, n_pred - tp, n_truth - tp, near, n_pred + n_truth)


@dataclass(frozen=True)
class _Region:
    """A proposal as a crop: ``mask`` placed at row ``y0``, column ``x0``."""

    y0: int
    x0: int
    mask: np.ndarray

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]


def _to_region(p: ProposalLike, height: int, width: int) -> _Region:
    if isinstance(p, Proposal):
        x1, y1, _, _ = p.box
        crop = np.asarray(p.mask, bool)
        # Clip to the image: a box partly outside must not index negatively.
        ys, xs = max(0, -y1), max(0, -x1)
        crop = crop[ys : max(ys, height - y1), xs : max(xs, width - x1)]
        return _Region(y1 + ys, x1 + xs, crop)
    mask = np.asarray(p, bool)
    if mask.shape != (height, width):
        raise ValueError(f"proposal mask shape {mask.shape} != image {(height, width)}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return _Region(0, 0, np.zeros((0, 0), bool))
    return _Region(int(rows[0]), int(cols[0]),
                   mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def proposals_union(proposals: Iterable[ProposalLike], height: int, width: int) -> np.ndarray:
    """All proposal pixels of one image as a boolean mask."""
    out = np.zeros((height, width), bool)
    for p in proposals:
        r = _to_region(p, height, width)
        out[r.y0 : r.y1, r.x0 : r.x1] |= r.mask
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)


def _near_counts(a: np.ndarray, b: np.ndarray, radius: int) -> tuple[int, int]:
    """(pixels of ``a`` within ``radius`` of ``b``, pixels of ``b`` within ``radius`` of
    ``a``): the boundary-tolerant overlap both ways."""
    return (int(np.count_nonzero(a & _dilate(b, radius))),
            int(np.count_nonzero(b & _dilate(a, radius))))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Inner boundary: pixels with an 8-neighbour outside the mask (or the window)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~eroded.astype(bool)


def perimeter_px(mask: np.ndarray) -> float:
    """Contour length (outer contours and holes) through pixel centres, as a polygon traces it."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, np.uint8), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, closed=True) for c in contours))


def _components(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(truth, np.uint8), connectivity=8)
    return labels, stats


def truth_instances(truth: np.ndarray, min_area: int = 1) -> tuple[np.ndarray, list[int], int]:
    """8-connected components: (label image, kept component ids, number ignored as too small)."""
    labels, stats = _components(truth)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = [i + 1 for i, a in enumerate(areas) if a >= min_area]
    return labels, kept, int(len(areas) - len(kept))


def instance_ious(instance: np.ndarray, answer: np.ndarray, tolerance_px: int = 2
                  ) -> tuple[float, float]:
    """(IoU, boundary-tolerant IoU) of one ``answer`` mask against one truth ``instance``
    (both boolean, same size), as :func:`match_instances` measures an instance: the tolerant
    IoU counts pixels within ``tolerance_px`` of the other mask as matched."""
    area, n_answer = int(np.count_nonzero(instance)), int(np.count_nonzero(answer))
    if area + n_answer == 0:
        return 1.0, 1.0
    inter = int(np.count_nonzero(instance & answer))
    inst_near, answer_near = _near_counts(instance, answer, tolerance_px)
    dice_tol = (inst_near + answer_near) / (area + n_answer)
    return inter / (area + n_answer - inter), dice_tol / (2.0 - dice_tol)


@dataclass(frozen=True)
class MatchRule:
    """How proposals are matched to truth instances (printed with results by :meth:`describe`).

    - Pixels: the union of all proposals against the truth mask, no tolerance. Empty
      denominators give 1.0 (nothing predicted: precision 1; nothing to find: recall 1;
      both empty: IoU = F1 = 1).
    - Instances: each 8-connected component of the truth; components smaller than
      ``min_instance_area`` are ignored (no instance, but a proposal on them is no false
      positive).
    - Touch: a proposal touches an instance when it comes within ``tolerance_px`` pixels of
      it (Chebyshev distance). Crack labels are 1-3 px wide and drawn a pixel or two off, so
      plain overlap would call a good proposal a false positive.
    - Per instance, U = union of the proposals touching it: ``iou`` = |I & U| / |I | U|;
      ``coverage`` = |I & U| / |I|; ``coverage_tolerant`` = share of I within the tolerance
      of U; ``iou_tolerant`` = D / (2 - D) with the tolerant Dice
      D = (|I & dil(U)| + |U & dil(I)|) / (|I| + |U|) (equals ``iou`` at tolerance 0).
    - Found: ``coverage_tolerant >= found_coverage``: the proposals localise at least that
      share of the defect, so the annotator refines instead of searching and drawing (IoU
      alone would call over-wide but complete proposals missed, which cost an erase).
    - False positive: a proposal touching no truth pixel (tolerance included).
    - Outline mismatch (for the annotator model): true outline pixels farther than the
      tolerance from U's outline, as a share of the outline, times I's perimeter.
    """

    tolerance_px: int = 2
    found_coverage: float = 0.5
    min_instance_area: int = 1

    def describe(self) -> str:
        return (f"instances = 8-connected truth components >= {self.min_instance_area} px; "
                f"touch = within {self.tolerance_px} px (Chebyshev); found = "
                f"coverage_tolerant >= {self.found_coverage:g}; false positive = proposal "
                f"touching no truth pixel")


@dataclass
class InstanceMatch:
    """One truth instance and the proposals touching it (indices into the proposal list)."""

    component: int
    area: int
    perimeter_px: float
    proposals: tuple[int, ...]
    iou: float
    iou_tolerant: float
    coverage: float
    coverage_tolerant: float
    boundary_mismatch_px: float
    found: bool

    def to_dict(self) -> dict:
        return {**vars(self), "proposals": list(self.proposals)}


@dataclass
class ImageMatch:
    """Everything measured on one image for one defect label."""

    label: str
    image_id: str
    height: int
    width: int
    pixels: PixelCounts
    instances: list[InstanceMatch]
    n_proposals: int
    false_positives: tuple[int, ...]
    n_ignored_components: int
    rule: MatchRule = field(default_factory=MatchRule)

    @property
    def n_instances(self) -> int:
        return len(self.instances)

    @property
    def n_found(self) -> int:
        return sum(m.found for m in self.instances)

    @property
    def n_false_positives(self) -> int:
        return len(self.false_positives)

    def to_dict(self) -> dict:
        return {"label": self.label, "image_id": self.image_id, "height": self.height,
                "width": self.width, "pixels": self.pixels.to_dict(),
                "n_instances": self.n_instances, "n_found": self.n_found,
                "n_proposals": self.n_proposals, "false_positives": list(self.false_positives),
                "n_ignored_components": self.n_ignored_components,
                "rule": self.rule.describe(),
                "instances": [m.to_dict() for m in self.instances]}


def _match_one(component: int, labels: np.ndarray, stat: np.ndarray,
               regions: Sequence[_Region], touching: tuple[int, ...],
               rule: MatchRule) -> InstanceMatch:
    height, width = labels.shape
    x0, y0, w, h, area = (int(v) for v in stat)
    y1, x1 = y0 + h, x0 + w
    for j in touching:
        r = regions[j]
        y0, y1, x0, x1 = min(y0, r.y0), max(y1, r.y1), min(x0, r.x0), max(x1, r.x1)
    pad = rule.tolerance_px + 1
    y0, x0 = max(0, y0 - pad), max(0, x0 - pad)
    y1, x1 = min(height, y1 + pad), min(width, x1 + pad)
    inst = labels[y0:y1, x0:x1] == component
    union = np.zeros_like(inst)
    for j in touching:
        r = regions[j]
        union[r.y0 - y0 : r.y1 - y0, r.x0 - x0 : r.x1 - x0] |= r.mask
    t = rule.tolerance_px
    inter = int(np.count_nonzero(inst & union))
    n_union = int(np.count_nonzero(union))
    inst_near_u, u_near_inst = _near_counts(inst, union, t)
    dice_tol = (inst_near_u + u_near_inst) / (area + n_union)
    coverage_tol = inst_near_u / area
    inst_outline = _outline(inst)
    traced = inst_outline & _dilate(_outline(union), t)
    untraced_share = 1.0 - np.count_nonzero(traced) / max(1, int(np.count_nonzero(inst_outline)))
    perimeter = perimeter_px(inst)
    return InstanceMatch(
        component=int(component), area=area, perimeter_px=perimeter, proposals=touching,
        iou=inter / (area + n_union - inter), iou_tolerant=dice_tol / (2.0 - dice_tol),
        coverage=inter / area, coverage_tolerant=coverage_tol,
        boundary_mismatch_px=float(perimeter * untraced_share),
        found=coverage_tol >= rule.found_coverage)


def match_instances(proposals: Sequence[ProposalLike], truth: np.ndarray,
                    rule: MatchRule | None = None, label: str = "",
                    image_id: str = "") -> ImageMatch:
    """Pixel counts, instance matches and false positives of one image's proposals."""
    rule = rule or MatchRule()
    truth = np.asarray(truth, bool)
    height, width = truth.shape
    regions = [_to_region(p, height, width) for p in proposals]
    labels, stats = _components(truth)
    kept = [c for c in range(1, len(stats)) if stats[c, cv2.CC_STAT_AREA] >= rule.min_instance_area]
    n_ignored = len(stats) - 1 - len(kept)
    kept_set = set(kept)
    t = rule.tolerance_px
    touching: dict[int, list[int]] = {c: [] for c in kept}
    false_positives: list[int] = []
    for j, r in enumerate(regions):
        if r.mask.size == 0 or not r.mask.any():
            false_positives.append(j)  # an empty proposal touches nothing
            continue
        wy0, wx0 = max(0, r.y0 - t), max(0, r.x0 - t)
        wy1, wx1 = min(height, r.y1 + t), min(width, r.x1 + t)
        grown = np.zeros((wy1 - wy0, wx1 - wx0), bool)
        grown[r.y0 - wy0 : r.y1 - wy0, r.x0 - wx0 : r.x1 - wx0] = r.mask
        hit = np.unique(labels[wy0:wy1, wx0:wx1][_dilate(grown, t)])
        hit = hit[hit > 0]
        if hit.size == 0:
            false_positives.append(j)
        for c in hit:
            if int(c) in kept_set:
                touching[int(c)].append(j)
    instances = [_match_one(c, labels, stats[c], regions, tuple(touching[c]), rule)
                 for c in kept]
    union = proposals_union(proposals, height, width)
    return ImageMatch(label, image_id, height, width, pixel_counts(union, truth, t), instances,
                      len(regions), tuple(false_positives), n_ignored, rule)


@dataclass
class DefectSummary:
    """Micro-averaged results over images of one defect label (or ``"all"``)."""

    label: str
    n_images: int
    pixels: PixelCounts
    n_instances: int
    n_found: int
    n_ignored_components: int
    n_proposals: int
    n_false_positives: int
    time: TimeSavingEstimate

    @property
    def instance_recall(self) -> float:
        """Found / instances; 1.0 with no instances (nothing to find)."""
        return _ratio(self.n_found, self.n_instances)

    @property
    def proposal_precision(self) -> float:
        """Share of proposals touching some truth; 1.0 with no proposals."""
        return _ratio(self.n_proposals - self.n_false_positives, self.n_proposals)

    def __add__(self, other: DefectSummary) -> DefectSummary:
        label = self.label if self.label == other.label else "all"
        return DefectSummary(label, self.n_images + other.n_images, self.pixels + other.pixels,
                             self.n_instances + other.n_instances, self.n_found + other.n_found,
                             self.n_ignored_components + other.n_ignored_components,
                             self.n_proposals + other.n_proposals,
                             self.n_false_positives + other.n_false_positives,
                             self.time + other.time)

    def to_dict(self) -> dict:
        return {"label": self.label, "n_images": self.n_images, "pixels": self.pixels.to_dict(),
                "n_instances": self.n_instances, "n_found": self.n_found,
                "instance_recall": self.instance_recall,
                "n_ignored_components": self.n_ignored_components,
                "n_proposals": self.n_proposals, "n_false_positives": self.n_false_positives,
                "proposal_precision": self.proposal_precision, "time": self.time.to_dict()}


@dataclass
class EvaluationSummary:
    """Per-defect summaries, their pooled total, and the rules used."""

    per_defect: dict[str, DefectSummary]
    overall: DefectSummary
    rules: list[str]

    @property
    def macro_eq3_saving(self) -> float:
        """Mean of per-defect Eq. 3 savings: the paper's "52 % overall" is this mean
        (pooled over its 265 instances Table 2 gives 51 %). 0.0 with no defects."""
        values = [d.time.eq3.saving for d in self.per_defect.values()]
        return float(np.mean(values)) if values else 0.0

    @property
    def macro_pixel_iou(self) -> float:
        values = [d.pixels.iou for d in self.per_defect.values()]
        return float(np.mean(values)) if values else 1.0

    def to_dict(self) -> dict:
        return {"per_defect": {k: v.to_dict() for k, v in self.per_defect.items()},
                "overall": self.overall.to_dict(), "macro_eq3_saving": self.macro_eq3_saving,
                "macro_pixel_iou": self.macro_pixel_iou, "rules": self.rules}


def summarize(images: Iterable[ImageMatch], thresholds: GroupThresholds | None = None,
              annotator: AnnotatorModel | None = None) -> EvaluationSummary:
    """Aggregate image results per defect label (micro) and overall (pooled)."""
    thresholds = thresholds or GroupThresholds()
    annotator = annotator or AnnotatorModel()
    per_defect: dict[str, DefectSummary] = {}
    rules: list[str] = []
    for im in images:
        time = estimate_time_saving(im.instances, im.n_false_positives, thresholds, annotator)
        one = DefectSummary(im.label, 1, im.pixels, im.n_instances, im.n_found,
                            im.n_ignored_components, im.n_proposals, im.n_false_positives, time)
        per_defect[im.label] = per_defect[im.label] + one if im.label in per_defect else one
        if im.rule.describe() not in rules:
            rules.append(im.rule.describe())
    overall = DefectSummary("all", 0, PixelCounts(), 0, 0, 0, 0, 0,
                            estimate_time_saving([], 0, thresholds, annotator))
    for summary in per_defect.values():
        overall = overall + summary
    overall.label = "all"
    return EvaluationSummary(dict(sorted(per_defect.items())), overall, rules)


@dataclass
class SweepPoint:
    """Pixel counts of maps binarised at ``threshold`` (``map > threshold``), summed."""

    threshold: float
    pixels: PixelCounts

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, **self.pixels.to_dict()}


def threshold_sweep(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                    thresholds: Sequence[float] = DEFAULT_SWEEP_THRESHOLDS) -> list[SweepPoint]:
    """Micro-averaged pixel counts of ``map > t`` against the truth for every threshold.

    Works on saved normalised maps (no model); uses the same strict ``>`` as
    ``core.postprocess.binarize_map``. NaNs in a map count as 0. No closing or min-area step.
    """
    totals = [PixelCounts() for _ in thresholds]
    ts = np.asarray(thresholds, dtype=np.float64)
    for cam_map, truth in pairs:
        cam_map, truth = np.asarray(cam_map), np.asarray(truth, bool)
        if cam_map.shape != truth.shape:
            raise ValueError(f"threshold_sweep: map {cam_map.shape} vs truth {truth.shape}")
        values = np.nan_to_num(cam_map.astype(np.float64), nan=0.0)
        pos, neg = np.sort(values[truth]), np.sort(values[~truth])
        # Count of values > t = size - (index of the first value > t).
        tp = pos.size - np.searchsorted(pos, ts, side="right")
        fp = neg.size - np.searchsorted(neg, ts, side="right")
        for k in range(len(totals)):
            t_p, f_p, f_n = int(tp[k]), int(fp[k]), int(pos.size - tp[k])
            # no tolerance here: the tolerant sums are the plain ones (pixel_counts at 0)
            totals[k] = totals[k] + PixelCounts(t_p, f_p, f_n, 2 * t_p, 2 * t_p + f_p + f_n)
    return [SweepPoint(float(t), c) for t, c in zip(thresholds, totals, strict=True)]


def best_threshold(points: Sequence[SweepPoint], metric: str = "f1") -> SweepPoint:
    """The point with the highest ``metric`` (f1 | iou | precision | recall); lowest t on ties."""
    if not points:
        raise ValueError("best_threshold: empty sweep")
    return max(sorted(points, key=lambda p: p.threshold),
               key=lambda p: getattr(p.pixels, metric))
