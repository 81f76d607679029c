"""``defectcam evaluate --interactive``: simulated clicks against ground-truth instances.

Per truth instance (an 8-connected component of the defect's mask) the simulated annotator
clicks once at its most interior point (the maximum of the distance transform), as
interactive-segmentation benchmarks do; then, with ``clicks`` >= 2, once more where the
answer was most wrong: the most interior point of the larger error (missed pixels: a
positive click; pixels answered outside the instance: a negative click). Every method gets
the same clicks for its first round and its own second click.

Figures per round: instance IoU (plain and boundary-tolerant, as ``metrics`` defines them),
the paper's Eq. 3 saving from those IoUs (every instance gets a click, so recall is the
annotator's and N counts every instance), and seconds per click.

Methods: ``interactor`` (:func:`defectcam.core.interact.interact`, the function's own code,
with the weights' interactor settings) and ``click-baseline``: the learning-free evidence rule
of ``evaluation.baselines`` chosen from the very same click with the very same window,
snapping, growth and fill (:func:`shared_settings`), no model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from defectcam.core.image_io import working_factor
from defectcam.core.interact import Clicks, InteractResult, InteractSettings, click_mask, interact
from defectcam.core.proposer import DefectProposer
from defectcam.evaluation.baselines import BASELINE_RULES, baseline_map
from defectcam.evaluation.metrics import instance_ious, truth_instances
from defectcam.evaluation.run import EvalItem, load_item
from defectcam.evaluation.timesave import Eq3Groups, GroupThresholds

#: (image, clicks) -> the answer of one method.
Method = Callable[[np.ndarray, Clicks], InteractResult]
INTERACTOR = "interactor"
CLICK_BASELINE = "click-baseline"


@dataclass
class ClickOutcome:
    """One method's answer to one instance after ``round`` clicks."""

    label: str
    image_id: str
    instance: int
    area: int
    round: int
    iou: float
    iou_tolerant: float
    seconds: float
    source: str
    windows: int


@dataclass
class InteractiveRun:
    """Every outcome of every method, and images that could not be evaluated."""

    outcomes: dict[str, list[ClickOutcome]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    def summary(self, thresholds: GroupThresholds) -> dict:
        """Per method, defect and round: instances, mean IoUs, Eq. 3 and seconds per click."""
        out: dict = {}
        for method, outcomes in self.outcomes.items():
            for label in sorted({o.label for o in outcomes}):
                for rnd in sorted({o.round for o in outcomes}):
                    rows = [o for o in outcomes if o.label == label and o.round == rnd]
                    groups = Eq3Groups()
                    for o in rows:
                        groups.add(thresholds.group(o.iou_tolerant if thresholds.tolerant
                                                    else o.iou))
                    out.setdefault(method, {}).setdefault(label, {})[f"clicks_{rnd}"] = {
                        "instances": len(rows),
                        "images": len({o.image_id for o in rows}),
                        "mean_iou": float(np.mean([o.iou for o in rows])) if rows else 0.0,
                        "mean_iou_tolerant": float(np.mean([o.iou_tolerant for o in rows]))
                        if rows else 0.0,
                        "eq3": groups.to_dict(),
                        "seconds_per_click": float(np.mean([o.seconds for o in rows]))
                        if rows else 0.0,
                        "sources": {s: sum(o.source == s for o in rows)
                                    for s in sorted({o.source for o in rows})},
                    }
        return out


def interior_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of ``mask``'s most interior pixel (farthest from its outline), ``None`` when
    empty."""
    if not mask.any():
        return None
    padded = np.pad(mask, 1).astype(np.uint8)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def corrective_click(answer: np.ndarray, instance: np.ndarray
                     ) -> tuple[tuple[int, int], bool] | None:
    """Where a second click goes: the most interior point of the larger error and whether
    it is positive (missed pixels) or negative (pixels outside the instance); ``None`` when
    the answer is exact."""
    missed, extra = instance & ~answer, answer & ~instance

    def depth(mask: np.ndarray) -> float:
        if not mask.any():
            return -1.0
        padded = np.pad(mask, 1).astype(np.uint8)
        return float(cv2.distanceTransform(padded, cv2.DIST_L2, 3).max())

    if depth(missed) < 0 and depth(extra) < 0:
        return None
    positive = depth(missed) >= depth(extra)
    point = interior_point(missed if positive else extra)
    return (point, positive) if point is not None else None


def model_method(proposer: DefectProposer, label: str, iterations: int | None = None,
                 settings: InteractSettings | None = None) -> Method:
    """The interactor of ``label`` as the function runs it."""
    predictor = proposer.predictors[label]
    return lambda image, clicks: interact(predictor, image, clicks, iterations=iterations,
                                          settings=settings)


def shared_settings(settings: InteractSettings) -> InteractSettings:
    """``settings`` less the classifier's part: what the click baseline runs with (window,
    snapping, grouping, erasing, growth and fill)."""
    defaults = InteractSettings()
    return replace(settings, cam_threshold=defaults.cam_threshold, dilation=defaults.dilation,
                   region=defaults.region, evidence=defaults.evidence,
                   click_share=defaults.click_share)


def baseline_method(label: str, window: int, working_max_side: int = 0,
                    settings: InteractSettings | None = None) -> Method:
    """The click baseline: the defect's learning-free evidence rule on the same window, at
    the same size (``working_max_side``) and with the same shared settings
    (:func:`shared_settings`) as the interactor of that label.

    Args:
        label: the defect (its rule: ``evaluation.baselines``).
        window: the first window's side when the settings give none (the weights' tile).
        working_max_side: the weights' working longer side (0: the frame's pixels).
        settings: the interactor's settings (their classifier part is ignored).

    Returns:
        The method.
    """
    shared = shared_settings(settings or InteractSettings())

    def run(image: np.ndarray, clicks: Clicks) -> InteractResult:
        height, width = image.shape[:2]
        factor = working_factor(width, height, 1.0, working_max_side)
        return click_mask(image, clicks,
                          lambda small, _: [("evidence", baseline_map(small, label), None)],
                          label, factor, shared, default_window=window)

    return run


def evaluate_interactive(items: Sequence[EvalItem], methods: dict[str, dict[str, Method]],
                         max_side: int | None = None, clicks: int = 2,
                         max_instances: int | None = None, min_instance_area: int = 1,
                         tolerance_px: int = 2, seed: int = 0,
                         progress: Callable[[str], None] | None = None) -> InteractiveRun:
    """Simulated clicks on every instance of ``items`` (see the module docstring).

    Args:
        items: images with truth, each for one defect.
        methods: method name -> {defect: method}.
        max_side: downscale images and truth to this longer side first (``None``: no).
        clicks: rounds of clicks per instance (1 or 2).
        max_instances: at most this many instances per image, a seeded choice (``None``:
            all).
        min_instance_area: smaller truth components are not clicked.
        tolerance_px: boundary tolerance of the tolerant IoU.
        seed: seed of the instance choice.
        progress: called with the image id after each image.

    Returns:
        :class:`InteractiveRun`.
    """
    run = InteractiveRun({name: [] for name in methods})
    rng = np.random.default_rng(seed)
    for item in items:
        try:
            loaded = load_item(item, max_side)
        except (OSError, ValueError) as exc:
            run.failures.append({"image": item.image_id, "error": str(exc)})
            continue
        labels, kept, _ = truth_instances(loaded.truth, min_instance_area)
        if max_instances is not None and len(kept) > max_instances:
            kept = sorted(rng.choice(kept, max_instances, replace=False).tolist())
        for component in kept:
            instance = labels == component
            first = interior_point(instance)
            for name, by_label in methods.items():
                method = by_label[item.label]
                points: Clicks = Clicks((first,))
                for rnd in range(1, clicks + 1):
                    answer = method(loaded.image, points)
                    full = answer.full_mask(*instance.shape)
                    iou, tolerant = instance_ious(instance, full, tolerance_px)
                    run.outcomes[name].append(ClickOutcome(
                        item.label, item.image_id, int(component), int(instance.sum()), rnd,
                        iou, tolerant, answer.seconds, answer.source, answer.windows))
                    if rnd == clicks:
                        break
                    correction = corrective_click(full, instance)
                    if correction is None:  # exact: the next round answers the same
                        continue
                    point, positive = correction
                    points = (Clicks((*points.positive, point), points.negative)
                              if positive else Clicks(points.positive,
                                                      (*points.negative, point)))
        if progress is not None:
            progress(item.image_id)
    return run


def render_markdown(summary: dict, config: dict) -> str:
    """The interactive evaluation as a Markdown report."""
    lines = ["# Interactive evaluation (simulated clicks)", "",
             f"Data: {config['data']}. {config['protocol']}", "",
             f"Click baseline rules: {config['baseline_rules']}", "",
             *(["Interactor settings (weights' sidecars): "
                + "; ".join(f"{label}: {json.dumps(values, sort_keys=True)}"
                            for label, values in config["interact_settings"].items()), ""]
               if config.get("interact_settings") else []),
             "| defect | method | clicks | instances | mean IoU | mean tolerant IoU | "
             "Eq. 3 saving | s / click | answers from |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, by_label in summary.items():
        for label, rounds in by_label.items():
            for rnd, row in rounds.items():
                sources = ", ".join(f"{k} {v}" for k, v in row["sources"].items())
                lines.append(
                    f"| {label} | {method} | {rnd.split('_')[1]} | {row['instances']} | "
                    f"{row['mean_iou']:.3f} | {row['mean_iou_tolerant']:.3f} | "
                    f"{row['eq3']['saving']:.1%} | {row['seconds_per_click']:.2f} | "
                    f"{sources} |")
    return "\n".join(lines) + "\n"


def baseline_rules(labels: Sequence[str]) -> str:
    return "; ".join(f"{label}: {BASELINE_RULES[label]}" for label in labels)


__all__ = ["CLICK_BASELINE", "INTERACTOR", "ClickOutcome", "InteractiveRun",
           "baseline_method", "corrective_click", "evaluate_interactive", "interior_point",
           "model_method", "render_markdown", "shared_settings"]
