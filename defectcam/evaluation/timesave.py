"""Annotation time saved: the paper's Eq. 3 from IoU groups, and a simple edit-cost model.

Both estimates take per-instance geometry measured by :mod:`defectcam.evaluation.metrics`
(any object with the attributes of :class:`InstanceGeometry`) plus the number of false-positive
proposals, and never look at pixels themselves.

Eq. 3 (paper, section 4.3): ``saving = (0.95|G95| + 0.75|G75| + 0.50|G50|) / N``. The paper's
annotators put each instance in a group by eye; here the group is a proxy from the IoU of the
proposals touching the instance (>= 0.8 -> G95, >= 0.65 -> G75, >= 0.5 -> G50, else none).
N counts every instance, missed ones included (they save nothing), so unlike the paper recall
is not assumed. False positives do not enter Eq. 3; the edit-cost model charges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

GROUP_SAVINGS: dict[str, float] = {"G95": 0.95, "G75": 0.75, "G50": 0.50}
NO_GROUP = "none"


class InstanceGeometry(Protocol):
    """What the estimators read from one truth instance (see ``metrics.InstanceMatch``)."""

    proposals: tuple[int, ...]
    iou: float
    iou_tolerant: float
    perimeter_px: float
    boundary_mismatch_px: float


@dataclass(frozen=True)
class GroupThresholds:
    """IoU lower bounds of the Eq. 3 groups (a proxy for the paper's visual estimate).

    ``tolerant`` selects ``iou_tolerant`` (boundary-tolerant IoU; equal to the plain IoU when
    the match tolerance is 0) instead of the plain IoU: crack labels are 1-3 px wide, so a
    proposal one pixel off has plain IoU near 0 although the annotator has nothing to fix.
    """

    g95: float = 0.80
    g75: float = 0.65
    g50: float = 0.50
    tolerant: bool = True

    def group(self, iou: float) -> str:
        """``"G95"``, ``"G75"``, ``"G50"`` or ``"none"`` for one instance's IoU."""
        if iou >= self.g95:
            return "G95"
        if iou >= self.g75:
            return "G75"
        if iou >= self.g50:
            return "G50"
        return NO_GROUP

    def instance_iou(self, inst: InstanceGeometry) -> float:
        return inst.iou_tolerant if self.tolerant else inst.iou

    def describe(self) -> str:
        kind = "boundary-tolerant IoU" if self.tolerant else "IoU"
        return (f"groups by {kind} of the proposals touching each instance: "
                f">= {self.g95:g} -> G95, >= {self.g75:g} -> G75, >= {self.g50:g} -> G50")


def eq3_saving(g95: int, g75: int, g50: int, n: int) -> float:
    """Paper Eq. 3; 0.0 when there are no instances (nothing to annotate, nothing saved)."""
    if n <= 0:
        return 0.0
    return (0.95 * g95 + 0.75 * g75 + 0.50 * g50) / n


class _FieldwiseSum:
    """``a + b`` adds two dataclass instances field by field (per-image counts -> totals)."""

    def __add__(self, other):
        return type(self)(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(self)))


@dataclass
class Eq3Groups(_FieldwiseSum):
    """Instance counts per group; ``n`` is all instances (``none`` = the rest)."""

    g95: int = 0
    g75: int = 0
    g50: int = 0
    n: int = 0

    @property
    def none(self) -> int:
        return self.n - self.g95 - self.g75 - self.g50

    @property
    def saving(self) -> float:
        return eq3_saving(self.g95, self.g75, self.g50, self.n)

    def add(self, group: str) -> None:
        """Count one instance in ``group``."""
        self.n += 1
        if group == "G95":
            self.g95 += 1
        elif group == "G75":
            self.g75 += 1
        elif group == "G50":
            self.g50 += 1

    def to_dict(self) -> dict:
        return {"G95": self.g95, "G75": self.g75, "G50": self.g50, "none": self.none,
                "n": self.n, "saving": self.saving}


@dataclass(frozen=True)
class AnnotatorModel:
    """A deliberately simple model of a CVAT annotator's time (seconds).

    - Draw from scratch: ``draw_base_s + per_vertex_s * vertices`` with
      ``vertices = max(min_vertices, perimeter / segment_px)``.
    - Refine a proposal: ``review_s + per_vertex_s * mismatch / segment_px``, where
      ``mismatch`` is the length of true outline the proposal does not already trace (outline
      pixels farther than the tolerance from the proposal's outline, scaled to the perimeter):
      every untraced stretch is redrawn at the drawing rate. Capped at deleting the proposal
      and drawing from scratch, which an annotator would do instead.
    - Missed instance: drawn from scratch. False-positive proposal: ``delete_s`` (one click).

    Defaults are calibrated to the paper's spalling example (Fig. 6: 31 s refine against 180 s
    from scratch) on an assumed reference outline of 850 px with 130 px (15 %) to redraw:
    ``10 + 2 * 850/10 = 180`` and ``5 + 2 * 130/10 = 31``. See :meth:`calibrated`.
    """

    draw_base_s: float = 10.0
    per_vertex_s: float = 2.0
    segment_px: float = 10.0
    min_vertices: int = 4
    review_s: float = 5.0
    delete_s: float = 2.0

    @classmethod
    def calibrated(cls, scratch_s: float = 180.0, refine_s: float = 31.0,
                   reference_perimeter_px: float = 850.0,
                   reference_mismatch_px: float = 130.0, **fixed: float) -> AnnotatorModel:
        """Solve ``per_vertex_s`` and ``review_s`` from one measured scratch/refine pair."""
        base = cls(**fixed)
        vertices = max(base.min_vertices, reference_perimeter_px / base.segment_px)
        per_vertex = (scratch_s - base.draw_base_s) / vertices
        review = refine_s - per_vertex * reference_mismatch_px / base.segment_px
        return replace(base, per_vertex_s=per_vertex, review_s=review)

    def scratch_seconds(self, perimeter_px: float) -> float:
        vertices = max(float(self.min_vertices), perimeter_px / self.segment_px)
        return self.draw_base_s + self.per_vertex_s * vertices

    def refine_seconds(self, perimeter_px: float, mismatch_px: float) -> float:
        refine = self.review_s + self.per_vertex_s * mismatch_px / self.segment_px
        return min(refine, self.delete_s + self.scratch_seconds(perimeter_px))

    def describe(self) -> str:
        return (f"annotator model: scratch = {self.draw_base_s:g} s + {self.per_vertex_s:g} s x "
                f"max({self.min_vertices}, perimeter / {self.segment_px:g} px); refine = "
                f"{self.review_s:g} s + {self.per_vertex_s:g} s x untraced outline / "
                f"{self.segment_px:g} px (capped at delete + scratch); false positive = "
                f"{self.delete_s:g} s; missed instance = scratch")


@dataclass
class EditCost(_FieldwiseSum):
    """Seconds from the annotator model; ``saving`` is 0.0 when nothing needed drawing."""

    n_instances: int = 0
    n_refined: int = 0
    n_missed: int = 0
    n_false_positives: int = 0
    scratch_s: float = 0.0
    assisted_s: float = 0.0

    @property
    def saved_s(self) -> float:
        """Negative when false positives cost more than the proposals saved."""
        return self.scratch_s - self.assisted_s

    @property
    def saving(self) -> float:
        return self.saved_s / self.scratch_s if self.scratch_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"n_instances": self.n_instances, "n_refined": self.n_refined,
                "n_missed": self.n_missed, "n_false_positives": self.n_false_positives,
                "scratch_s": self.scratch_s, "assisted_s": self.assisted_s,
                "saved_s": self.saved_s, "saving": self.saving}


@dataclass
class InstanceTime:
    """One instance's Eq. 3 group and modelled seconds (``action``: refine | draw)."""

    group: str
    iou: float
    scratch_s: float
    assisted_s: float
    action: str

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TimeSavingEstimate:
    """Both estimates plus the assumptions behind them, as text for reports."""

    eq3: Eq3Groups
    edit_cost: EditCost
    assumptions: str
    per_instance: list[InstanceTime] = field(default_factory=list)

    def __add__(self, other: TimeSavingEstimate) -> TimeSavingEstimate:
        return TimeSavingEstimate(self.eq3 + other.eq3, self.edit_cost + other.edit_cost,
                                  self.assumptions or other.assumptions,
                                  self.per_instance + other.per_instance)

    def to_dict(self, per_instance: bool = False) -> dict:
        out = {"eq3": self.eq3.to_dict(), "edit_cost": self.edit_cost.to_dict(),
               "assumptions": self.assumptions}
        if per_instance:
            out["per_instance"] = [t.to_dict() for t in self.per_instance]
        return out


def describe_assumptions(thresholds: GroupThresholds, annotator: AnnotatorModel) -> str:
    return "\n".join([
        "Eq. 3 (paper): saving = (0.95|G95| + 0.75|G75| + 0.50|G50|) / N; N = all truth "
        "instances, missed ones included (the paper assumed recall).",
        "Eq. 3 groups are an IoU proxy for the paper's visual estimate: "
        + thresholds.describe() + ".",
        annotator.describe() + ".",
        "Annotator constants calibrated to the paper's spalling example (180 s scratch, "
        "31 s refine) on an assumed 850 px outline with 130 px to redraw.",
    ])


def estimate_time_saving(
    instances: Sequence[InstanceGeometry],
    n_false_positives: int = 0,
    thresholds: GroupThresholds | None = None,
    annotator: AnnotatorModel | None = None,
) -> TimeSavingEstimate:
    """Both estimates for the instances of one image (or any pool of instances)."""
    thresholds = thresholds or GroupThresholds()
    annotator = annotator or AnnotatorModel()
    groups = Eq3Groups()
    cost = EditCost(n_false_positives=n_false_positives,
                    assisted_s=n_false_positives * annotator.delete_s)
    per_instance: list[InstanceTime] = []
    for inst in instances:
        iou = thresholds.instance_iou(inst)
        group = thresholds.group(iou)
        groups.add(group)
        scratch = annotator.scratch_seconds(inst.perimeter_px)
        if inst.proposals:
            assisted = annotator.refine_seconds(inst.perimeter_px, inst.boundary_mismatch_px)
            action = "refine"
            cost.n_refined += 1
        else:
            assisted, action = scratch, "draw"
            cost.n_missed += 1
        cost.n_instances += 1
        cost.scratch_s += scratch
        cost.assisted_s += assisted
        per_instance.append(InstanceTime(group, iou, scratch, assisted, action))
    return TimeSavingEstimate(groups, cost, describe_assumptions(thresholds, annotator),
                              per_instance)


def groups_from_ious(ious: Iterable[float],
                     thresholds: GroupThresholds | None = None) -> Eq3Groups:
    """Eq. 3 group counts straight from a list of per-instance IoUs."""
    thresholds = thresholds or GroupThresholds()
    groups = Eq3Groups()
    for iou in ious:
        groups.add(thresholds.group(iou))
    return groups
