"""Answer within a deadline: the planner that decides what of a request fits the time.

The proposer's one pipeline asks a :class:`DeadlinePlanner`, per defect, which tiles to run at
how many AdvCAM steps and at what size to make proposals, from what work costs on this worker
(:class:`WorkCosts`, bounded so that no frame can poison it); what was cut is a
:class:`DeadlineReport`. The plan's order and rules: docs/architecture.md, "One proposal path".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from defectcam.core.predictor import DefectMap, DefectMapPredictor
from defectcam.core.proposer import SCREEN_THRESHOLD, PostRun, TileRun, screen_threshold
from defectcam.core.tiling import TileGrid

Tile = tuple[int, int]

#: Share of the time left that a plan may fill: the rest absorbs estimation noise.
PLAN_SHARE = 0.9
#: Share of the time a request's post-processing is planned to take at most.
POST_SHARE = 0.3
#: Longer sides the proposals may be made at, after the frame's own (the last: last resort).
POST_SIDES = (4096, 2048, 1024)
#: Seconds kept free at the end for the answer (shapes, interaction log, JSON): a share of the
#: deadline within these bounds.
RESERVE_SHARE, RESERVE_MIN, RESERVE_MAX = 0.05, 0.3, 5.0


def reserve_for(deadline: float) -> float:
    """Seconds of a ``deadline`` kept free for the answer after the proposals."""
    return min(max(RESERVE_SHARE * deadline, RESERVE_MIN), RESERVE_MAX)


# --------------------------------------------------------------------------- costs

#: Observations of fewer pixels teach nothing about a per-pixel cost (fixed costs dominate).
MIN_LEARN_PIXELS = 2 * 128 * 128
#: One observation moves an estimate by at most this factor, and by this share of the way.
STEP_BOUND, SMOOTHING = 2.0, 0.3
#: Estimates stay within this factor of the measured prior.
DRIFT_BOUND = 6.0
#: Share of the way back to the prior an estimate goes at every request.
DECAY = 0.15


@dataclass
class LinearCost:
    """Seconds of ``count`` calls over ``pixels`` pixels: ``count * fixed + pixels *
    per_pixel``. ``per_pixel`` is learned from what runs: bounded per observation, kept
    within :data:`DRIFT_BOUND` of ``prior`` and pulled back towards it at every request
    (:meth:`decay`), so no frame, however tiny or odd, and no busy spell poisons it."""

    per_pixel: float
    fixed: float = 0.0
    prior: float = 0.0

    def __post_init__(self) -> None:
        if self.prior <= 0:
            self.prior = self.per_pixel

    def seconds(self, pixels: float, count: float = 1.0, prior: bool = False) -> float:
        """Estimated seconds (``prior``: as measured at start-up, whatever came since)."""
        return count * self.fixed + pixels * (self.prior if prior else self.per_pixel)

    def observe(self, pixels: float, seconds: float, count: float = 1.0) -> None:
        """``count`` calls over ``pixels`` took ``seconds``."""
        if pixels < MIN_LEARN_PIXELS or seconds <= 0 or self.per_pixel <= 0:
            return
        seen = max(seconds - count * self.fixed, 0.0) / pixels
        seen = min(max(seen, self.per_pixel / STEP_BOUND), self.per_pixel * STEP_BOUND)
        self._set(self.per_pixel + SMOOTHING * (seen - self.per_pixel))

    def decay(self) -> None:
        self._set(self.per_pixel + DECAY * (self.prior - self.per_pixel))

    def _set(self, value: float) -> None:
        self.per_pixel = min(max(value, self.prior / DRIFT_BOUND), self.prior * DRIFT_BOUND)


@dataclass
class WorkCosts:
    """What work costs on this worker: ``forward`` (one plain pass, per tile pixel; fixed:
    per batch), ``step`` (one climbing step, per tile pixel; fixed: per batch and step),
    ``post`` (per defect: turning its map into proposals, per pixel of the size it runs at;
    fixed: per call); ``climb_share``: per defect, the share of tiles screening climbs."""

    forward: LinearCost
    step: LinearCost
    post: dict[str, LinearCost]
    #: One predictor call's own work on the whole map (allocating, enlarging, normalising),
    #: per frame pixel.
    frame: LinearCost = field(default_factory=lambda: LinearCost(1e-9))
    #: Shrinking the map and the image for proposals at a smaller size, per frame pixel.
    resize: LinearCost = field(default_factory=lambda: LinearCost(1e-9))
    climb_share: dict[str, float] = field(default_factory=dict)

    @classmethod
    def measure(cls, proposer: Any) -> WorkCosts:
        """Measured on this worker with its first classifier: a tile batch at T = 0 and
        T = 1, one of tiny tiles (the fixed cost), a call that runs no tile of a 2 MP frame
        (the call's work on the whole map); with each classifier, proposals from a tiny map
        and a busy one of :data:`POST_PROBE` (:func:`probe_map`)."""
        predictor: DefectMapPredictor = next(iter(proposer.predictors.values()))
        m = predictor.metadata
        batch = predictor.tile_batch
        rng = np.random.default_rng(0)

        def timed(height: int, width: int, iterations: int) -> tuple[float, DefectMap, int]:
            """The second of two calls: a new input shape's first call pays its set-up."""
            image = _surface(rng, height, width)
            for _ in range(2):
                start = time.perf_counter()
                defect_map = predictor.predict(image, iterations)
                seconds = time.perf_counter() - start
            grid = defect_map.grid
            return seconds, defect_map, grid.tile_h * grid.tile_w

        width = m.tile_size + (m.tile_size - m.tile_overlap) * (batch - 1)
        forward_s, defect_map, tile_pixels = timed(m.tile_size, width, 0)
        tiny_s, _, _ = timed(16, 16 * batch, 0)
        climb_s, _, _ = timed(m.tile_size, width, 1)
        image = _surface(rng, 1024, 2048)
        for _ in range(2):  # a call that runs no tile: its work on the whole map alone
            start = time.perf_counter()
            predictor.predict(image, 0, tiles=[])
            frame_s = max(time.perf_counter() - start, 1e-6)
        pixels = batch * tile_pixels
        fixed = min(tiny_s, forward_s / 2)
        forward = LinearCost(max(forward_s - fixed, 1e-3 * forward_s) / pixels, fixed)
        step = LinearCost(max(climb_s - forward_s, 0.5 * forward_s) / pixels, fixed)
        post = {}
        for label in proposer.predictors:
            tiny, large, post_pixels = _post_seconds(proposer, label)
            post[label] = LinearCost(max(large - tiny, 1e-9) / post_pixels, tiny)
        return cls(forward, step, post, LinearCost(frame_s / (1024 * 2048)),
                   LinearCost(_resize_seconds() / (POST_PROBE[0] * POST_PROBE[1])))

    def decay(self) -> None:
        """At a request's start: every estimate a step back towards what start-up measured."""
        for cost in (self.forward, self.step, self.frame, self.resize, *self.post.values()):
            cost.decay()

    def tile_seconds(self, tile_pixels: int, iterations: int, screen: bool = False,
                     label: str | None = None, tiles: float = 1.0, batch: int = 1) -> float:
        """Estimated seconds for ``tiles`` tiles run in batches of ``batch``: a climb is a
        forward and ``iterations`` steps; screening first runs a forward over every tile
        and climbs only the share it passes."""
        batches = tiles / max(batch, 1)
        plain = self.forward.seconds(tiles * tile_pixels, batches)
        if iterations == 0:
            return plain
        climb = plain + iterations * self.step.seconds(tiles * tile_pixels, batches)
        if not screen:
            return climb
        share = self.climb_share.get(label, SCREEN_THRESHOLD) if label else SCREEN_THRESHOLD
        return plain + share * climb

    def observe_tiles(self, tile_pixels: int, tiles: int, iterations: int, climbed: int,
                      seconds: float, batch: int, screened: bool = False) -> None:
        """``tiles`` tiles (``climbed`` of them climbed ``iterations`` steps, after a
        screening forward over all when ``screened``) took ``seconds``: plain batches teach
        the forward cost, the others the step cost."""
        batches = math.ceil(tiles / max(batch, 1))
        if iterations == 0 or climbed == 0:
            self.forward.observe(tiles * tile_pixels, seconds, batches)
            return
        forwards = climbed + (tiles if screened else 0)
        plain = self.forward.seconds(forwards * tile_pixels, batches)
        self.step.observe(climbed * iterations * tile_pixels, max(seconds - plain, 0.0),
                          batches * iterations)

    def observe_climbs(self, label: str, tiles: int, climbed: int) -> None:
        if tiles > 0:
            old = self.climb_share.get(label)
            share = climbed / tiles
            self.climb_share[label] = share if old is None else old + SMOOTHING * (share - old)

    def log_fields(self) -> dict[str, float]:
        """The estimates as the function log shows them (ms per megapixel)."""
        return {"forward_ms_per_megapixel": round(self.forward.per_pixel * 1e9, 1),
                "step_ms_per_megapixel": round(self.step.per_pixel * 1e9, 1),
                "proposals_ms_per_megapixel": {label: round(cost.per_pixel * 1e9, 1)
                                               for label, cost in self.post.items()}}


def _surface(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain grey surface with some texture: pixel noise would light up every evidence
    rule and make proposals far dearer than a photo's."""
    import cv2

    noise = rng.normal(128, 40, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3)
    return np.clip((smooth - 128) * 4 + 128, 0, 255).astype(np.uint8)


#: The frame proposals are measured on at start-up (height, width): large enough that the
#: per-pixel work dominates, as on the frames a deadline matters for.
POST_PROBE = (2048, 2048)
#: Share of the probe's map above the defect's threshold: a map at least as busy as a
#: photo's, so that every step of the post-processing (evidence, dilations, components) runs.
POST_PROBE_REGION = 0.3
#: Proposals per pixel a start-up estimate counts on (made largest first, the smaller ones
#: are what a deadline's last resort leaves out): about twice a busy photo's.
PROBE_DENSITY = 1e-4


def probe_map(height: int, width: int, threshold: float, seed: int = 1) -> np.ndarray:
    """A smooth map in [0, 1] with blobs: :data:`POST_PROBE_REGION` of it above
    ``threshold``."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, (max(height // 64, 2), max(width // 64, 2))).astype(
        np.float32)
    field_ = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    cut = float(np.quantile(field_, 1.0 - POST_PROBE_REGION))
    top = max(float(field_.max()) - cut, 1e-6)
    return np.clip(threshold + (field_ - cut) / top * (1.0 - threshold), 0.0, 1.0).astype(
        np.float32)


def _resize_seconds() -> float:
    """Seconds to shrink a :data:`POST_PROBE` image and map to half their sides, as
    proposals at a smaller size do (the second of two)."""
    import cv2

    height, width = POST_PROBE
    image = _surface(np.random.default_rng(2), height, width)
    cam = probe_map(height, width, 0.5)
    for _ in range(2):
        start = time.perf_counter()
        for array in (image, cam):
            cv2.resize(array, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        seconds = time.perf_counter() - start
    return seconds


def _post_seconds(proposer: Any, label: str) -> tuple[float, float, int]:
    """Seconds to turn a tiny and a :data:`POST_PROBE` map of ``label`` into proposals
    (:func:`probe_map` on a textured surface; the tiny one the second of two calls, the
    first in a process paying one-time costs), and the pixels the large one ran at.

    The large one's seconds are its work on the whole map (evidence, dilations,
    components: timed with every proposal after the largest left out) plus
    :data:`PROBE_DENSITY` proposals per pixel at the cost each of its own took: the probe's
    count says more about its texture than about a photo's.
    """
    predictor = proposer.predictors[label]
    threshold = predictor.metadata.cam_threshold
    out = []
    for height, width in ((16, 16), (16, 16), POST_PROBE):
        image = _surface(np.random.default_rng(1), height, width)
        grid = predictor.tile_grid(height, width)
        work = predictor.working_size(height, width)
        sized = DefectMap(label, probe_map(height, width, threshold), grid,
                          np.full((len(grid.ys), len(grid.xs)), 0.5, np.float32),
                          np.zeros((len(grid.ys), len(grid.xs)), bool), 1.0, 0, 0.0,
                          working_size=work if work != (height, width) else None)
        start = time.perf_counter()
        proposer.map_to_proposals(sized, None, image, stop=lambda: True)
        whole_map = time.perf_counter() - start
        start = time.perf_counter()
        count = len(proposer.map_to_proposals(sized, None, image))
        each = max(time.perf_counter() - start - whole_map, 0.0) / max(count - 1, 1)
        out.append(whole_map)
    post_h, post_w = proposer.post_size(label, *POST_PROBE)
    return out[1], out[2] + PROBE_DENSITY * post_h * post_w * each, post_h * post_w


# --------------------------------------------------------------------------- report


@dataclass
class LabelRun:
    """What one defect got: its tiles, the steps asked, how many tiles ran at how many steps
    (``steps``: steps -> tiles), whether screening ran without being asked, and its
    proposals: the longer side they were made at (``post_side``; ``None``: as without a
    deadline) and whether smaller components were left out (``post_cut``)."""

    label: str
    tiles: int
    requested_iterations: int
    requested_screen: bool
    steps: dict[int, int] = field(default_factory=dict)
    screened: bool = False
    post_side: int | None = None
    post_cut: bool = False

    @property
    def tiles_run(self) -> int:
        return sum(self.steps.values())

    @property
    def left_out(self) -> int:
        return self.tiles - self.tiles_run

    @property
    def reduced(self) -> bool:
        return (self.left_out > 0 or self.screened or self.post_side is not None
                or self.post_cut or any(t < self.requested_iterations for t in self.steps))

    def to_log(self) -> dict[str, Any]:
        return {"tiles": self.tiles, "tiles_run": self.tiles_run,
                "tiles_left_out": self.left_out,
                "requested_iterations": self.requested_iterations,
                "steps": {str(t): n for t, n in sorted(self.steps.items(), reverse=True)},
                "screened": self.screened or self.requested_screen,
                "proposals_max_side": self.post_side, "proposals_cut": self.post_cut}

    def describe(self) -> str:
        ran = ", ".join(f"{n} at T={t}" for t, n in sorted(self.steps.items(), reverse=True))
        screened = " screened" if self.screened else ""
        post = f"; proposals at {self.post_side} px" if self.post_side else ""
        cut = "; smaller proposals left out" if self.post_cut else ""
        return (f"{self.label}: {self.tiles_run}/{self.tiles} tiles ({ran or 'none'}{screened};"
                f" asked T={self.requested_iterations}){post}{cut}")


@dataclass
class DeadlineReport:
    """How a request with a deadline was answered: the deadline, the seconds used up to the
    proposals (from the request's start) and what each defect got."""

    deadline: float
    seconds: float = 0.0
    labels: list[LabelRun] = field(default_factory=list)

    @property
    def reduced(self) -> bool:
        return any(run.reduced for run in self.labels)

    @property
    def tiles_left_out(self) -> int:
        return sum(run.left_out for run in self.labels)

    def to_log(self) -> dict[str, Any]:
        return {"seconds": self.deadline, "used": round(self.seconds, 3),
                "reduced": self.reduced, "labels": {r.label: r.to_log() for r in self.labels}}

    def summary(self) -> str:
        return "; ".join(run.describe() for run in self.labels)


# --------------------------------------------------------------------------- tile orders


def _level(i: int, j: int, cap: int = 30) -> int:
    """How coarse a lattice (i, j) lies on: the largest k with 2**k dividing both."""
    k = 0
    while k < cap and i % (2 << k) == 0 and j % (2 << k) == 0:
        k += 1
    return k


def survey_order(grid: TileGrid) -> list[Tile]:
    """Every other tile in both directions, coarse lattices first (any prefix is spread)."""
    tiles = [(i, j) for i, j in grid.tiles() if i % 2 == 0 and j % 2 == 0]
    return sorted(tiles, key=lambda t: (-_level(*t), t))


def follow_order(grid: TileGrid, remaining: Sequence[Tile], probability: np.ndarray,
                 done: np.ndarray) -> list[Tile]:
    """``remaining`` tiles, those next to a run tile with a high probability first."""
    rows, cols = probability.shape

    def promise(tile: Tile) -> float:
        i, j = tile
        best = -1.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di or dj) and 0 <= a < rows and 0 <= b < cols and done[a, b]:
                    best = max(best, float(probability[a, b]))
        return best

    return sorted(remaining, key=lambda t: (-promise(t), -_level(*t), t))


# --------------------------------------------------------------------------- levels


def levels(top: int, screen: bool) -> list[tuple[int, bool]]:
    """(step cap, screening) from the best to plain Grad-CAM."""
    out: list[tuple[int, bool]] = []
    for cap in range(top, 0, -1):
        if not screen:
            out.append((cap, False))
        out.append((cap, True))
    out.append((0, False))
    return out


def fair_times(needs: Sequence[float], budget: float) -> list[float]:
    """Each defect's time when all of them do not fit: the same time for each, and a
    defect that needs less (few tiles, e.g. at a small working size) runs whole and leaves
    the rest to the others.

    Args:
        needs: per defect, the seconds all its tiles would take.
        budget: the seconds to share.

    Returns:
        Per defect, its seconds (never more than it needs; they sum to at most ``budget``).
    """
    times = [0.0] * len(needs)
    left, open_ = budget, sorted(range(len(needs)), key=lambda i: needs[i])
    while open_:
        level = left / len(open_)
        if needs[open_[0]] > level:  # no one left fits whole: the same time each
            for i in open_:
                times[i] = level
            break
        i = open_.pop(0)
        times[i] = needs[i]
        left -= needs[i]
    return times


def plan(works: Sequence[LabelWork], costs: WorkCosts, budget: float,
         ladder: Sequence[tuple[int, bool]], first: int = 0) -> int | None:
    """The index in ``ladder`` (from ``first`` on) of the best level whose estimated cost for
    the remaining tiles of ``works`` fits ``budget``; ``None`` when none does."""
    for index in range(first, len(ladder)):
        cost = sum(w.seconds(costs, *w.setting(ladder[index])) for w in works)
        if cost <= budget:
            return index
    return None


# --------------------------------------------------------------------------- one defect


class _Guard:
    """``stop`` for one predictor call: measures each batch, stops the call when the next
    batch would overrun the call's allowance or the hard end."""

    def __init__(self, work: LabelWork, tiles: list[Tile], iterations: int, screen: bool,
                 costs: WorkCosts, allowance: float, hard_end: float,
                 clock: Callable[[], float]) -> None:
        self.work, self.tiles, self.iterations, self.screen = work, tiles, iterations, screen
        self.costs, self.allowance, self.hard_end, self.clock = costs, allowance, hard_end, clock
        self.batch = work.predictor.tile_batch
        self.batches = 0
        self.stopped = False
        self.start = self.last = clock()

    def __call__(self) -> bool:
        now = self.clock()
        if self.batches and not self.screen:  # a screened batch's cost depends on its tiles
            size = min(self.batch, len(self.tiles) - (self.batches - 1) * self.batch)
            self.costs.observe_tiles(self.work.tile_pixels, size, self.iterations, size,
                                     now - self.last, self.batch)
        self.last = now
        size = min(self.batch, len(self.tiles) - self.batches * self.batch)
        next_batch = self.work.seconds(self.costs, self.iterations, self.screen, size)
        next_batch += self.work.call_seconds(self.costs)  # the call's map comes after it
        if not self.batches and self.work.first_batch(self.costs):
            next_batch = min(next_batch, self.work.first_batch(self.costs))
        if now + next_batch > self.hard_end or (
                self.batches and now - self.start + next_batch > self.allowance):
            self.stopped = True
            return True
        self.batches += 1
        return False

    @property
    def tiles_run(self) -> list[Tile]:
        return self.tiles[: min(len(self.tiles), self.batches * self.batch)]


class LabelWork:
    """One defect's share of a request: its tiles still to run and what it got (a
    :class:`~defectcam.core.proposer.Schedule` the pipeline runs)."""

    def __init__(self, planner: DeadlinePlanner, label: str, predictor: DefectMapPredictor,
                 iterations: int, screen_threshold: float | None) -> None:
        self.planner, self.label, self.predictor = planner, label, predictor
        self.grid: TileGrid = predictor.tile_grid(*planner.shape)
        #: The probability below which screening leaves a tile unclimbed (when it screens).
        self.threshold = screen_threshold or predictor.metadata.screen_threshold or (
            SCREEN_THRESHOLD)
        self.tile_pixels = self.grid.tile_h * self.grid.tile_w
        self.remaining: list[Tile] = self.grid.tiles()
        shape = (len(self.grid.ys), len(self.grid.xs))
        self.done = np.zeros(shape, bool)
        self.probability = np.zeros(shape, np.float32)
        self.run = LabelRun(label, len(self.grid), iterations, screen_threshold is not None)
        #: Tiles this defect may run in all once even plain Grad-CAM does not fit everything.
        self.quota: int | None = None
        self.run_in_share = 0
        #: Whether the last call ran no tile.
        self.stalled = False
        self._guard: _Guard | None = None
        self._screened = False

    # -- estimates

    def setting(self, level: tuple[int, bool]) -> tuple[int, bool]:
        """(steps, screening) at a level: a defect asked to screen screens at every level."""
        iterations = min(self.run.requested_iterations, level[0])
        return iterations, (level[1] or self.run.requested_screen) and iterations > 0

    def seconds(self, costs: WorkCosts, iterations: int, screen: bool,
                tiles: int | None = None) -> float:
        count = len(self.remaining) if tiles is None else tiles
        return costs.tile_seconds(self.tile_pixels, iterations, screen, self.label, count,
                                  self.predictor.tile_batch)

    def first_batch(self, costs: WorkCosts) -> float:
        """Seconds of one call of one batch of plain Grad-CAM while no tile ran yet (else
        0), as start-up measured them: what a frame is guaranteed does not depend on what
        earlier frames taught the estimates."""
        if self.run.steps or not self.remaining:
            return 0.0
        pixels = min(self.predictor.tile_batch, len(self.remaining)) * self.tile_pixels
        return costs.forward.seconds(pixels, prior=True) + self.call_seconds(costs, prior=True)

    def call_seconds(self, costs: WorkCosts, prior: bool = False) -> float:
        """Seconds of one predictor call's own work on the whole map."""
        return costs.frame.seconds(self.planner.shape[0] * self.planner.shape[1], prior=prior)

    def post_pixels(self, max_side: int | None) -> int:
        height, width = self.planner.proposer.post_size(self.label, *self.planner.shape,
                                                        max_side)
        return height * width

    # -- the schedule

    def runs(self) -> Iterator[TileRun]:
        while self.remaining:
            run = self.planner.next_run(self)
            if run is None:
                return
            yield run

    def ran(self, part: DefectMap) -> int:
        guard, self._guard = self._guard, None
        tiles = guard.tiles_run if guard is not None else []
        if guard is not None and guard.stopped:  # from the stop to here: the call's map
            self.planner.costs.frame.observe(self.planner.shape[0] * self.planner.shape[1],
                                             self.planner.clock() - guard.last)
        self.stalled = not tiles
        if not tiles:
            return 0
        if self.quota is not None:
            self.run_in_share += len(tiles)
        costs = self.planner.costs
        if self._screened:
            climbed = int(sum(part.climbed[i, j] for i, j in tiles))
            costs.observe_climbs(self.label, len(tiles), climbed)
            costs.observe_tiles(self.tile_pixels, len(tiles), guard.iterations, climbed,
                                self.planner.clock() - guard.start, guard.batch, True)
        ran = set(tiles)
        self.remaining = [t for t in self.remaining if t not in ran]
        rows, cols = np.array(tiles).T
        self.done[rows, cols] = True
        self.probability[rows, cols] = part.tile_probability[rows, cols]
        steps = guard.iterations
        self.run.steps[steps] = self.run.steps.get(steps, 0) + len(tiles)
        self.run.screened |= self._screened and not self.run.requested_screen
        return len(tiles)

    def post(self) -> PostRun:
        return self.planner.post_run(self)

    def posted(self, pixels: int, seconds: float, proposals: int) -> None:
        self.planner.costs.post[self.label].observe(pixels, seconds)

    def start(self, tiles: list[Tile], iterations: int, screen: bool, allowance: float,
              hard_end: float) -> TileRun:
        self._screened = screen
        self._guard = _Guard(self, tiles, iterations, screen, self.planner.costs, allowance,
                             hard_end, self.planner.clock)
        return TileRun(iterations, self.threshold if screen else None, tiles, self._guard)


# --------------------------------------------------------------------------- the request


class DeadlinePlanner:
    """The :class:`~defectcam.core.proposer.Planner` of one request answered by ``started +
    deadline`` (``clock`` seconds): see the module docstring."""

    def __init__(self, proposer: Any, shape: tuple[int, int], labels: Sequence[str],
                 iterations: Mapping[str, int], screen: bool | float | None, *,
                 deadline: float, started: float, costs: WorkCosts,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """``iterations``: the steps asked of each of ``labels``; ``screen``: the request's
        (``defectcam.core.proposer.screen_threshold``)."""
        self.proposer, self.shape, self.costs, self.clock = proposer, shape, costs, clock
        self.deadline, self.started = deadline, started
        self.end = started + deadline - reserve_for(deadline)
        costs.decay()
        self.works = [LabelWork(self, label, proposer.predictors[label], iterations[label],
                                screen_threshold(screen, proposer.predictors[label].metadata))
                      for label in labels]
        self.by_label = {w.label: w for w in self.works}
        top = max((w.run.requested_iterations for w in self.works), default=0)
        self.ladder = levels(top, bool(self.works)
                             and all(w.run.requested_screen for w in self.works))
        self.level = 0
        # The proposals' time, planned once from the whole budget: the tiles never run into
        # it, so a defect whose tiles ran always has the time to make its proposals.
        share = max(self.end - clock(), 0.0) * POST_SHARE
        self.post_reserve = min(self.post_seconds(self.works, self.post_side(self.works, share)),
                                share)

    def schedule(self, label: str, iterations: int, screen_threshold: float | None
                 ) -> LabelWork:
        return self.by_label[label]

    def report(self) -> DeadlineReport:
        return DeadlineReport(self.deadline, self.clock() - self.started,
                              [w.run for w in self.works])

    # -- post-processing

    def post_side(self, works: Sequence[LabelWork], budget: float) -> int | None:
        """The largest post-processing side (``None``: the frame's own) at which the
        proposals of ``works`` fit ``budget``; the smallest when none does."""
        for side in (None, *POST_SIDES):
            cost = self.post_seconds(works, side)
            if cost <= budget:
                return side
        return POST_SIDES[-1]

    def post_seconds(self, works: Sequence[LabelWork], side: int | None) -> float:
        """Estimated seconds of the proposals of ``works`` at ``side`` (shrinking the map
        and the image first where that is smaller than the frame)."""
        frame = self.shape[0] * self.shape[1]
        return sum(self.costs.post[w.label].seconds(pixels)
                   + (self.costs.resize.seconds(frame) if pixels < frame else 0.0)
                   for w in works for pixels in [w.post_pixels(side)])

    def post_run(self, work: LabelWork) -> PostRun:
        """From the time really left, shared with the defects not yet post-processed."""
        index = self.works.index(work)
        later = self.works[index:]
        left = self.end - self.clock()
        if left <= 0:  # into the answer's reserve: the proposals made so far are the answer
            work.run.post_cut = True
            return PostRun(POST_SIDES[-1], skip=True)
        side = self.post_side(later, max(left, 0.0) * PLAN_SHARE)
        mine = self.post_seconds([work], side)
        planned = self.post_seconds(later, side)
        # This defect's share of the time left; past it the smaller components are cut.
        allowance = left * mine / planned if planned > 0 else left
        if work.post_pixels(side) < work.post_pixels(None):
            work.run.post_side = side
        hard_end = self.clock() + max(allowance, 0.0)

        def stop() -> bool:
            if self.clock() > hard_end:
                work.run.post_cut = True
                return True
            return False

        return PostRun(side, stop)

    # -- tiles

    def next_run(self, work: LabelWork) -> TileRun | None:
        """The next predictor call of ``work`` (``None``: nothing more fits)."""
        if work.stalled:  # the last call ran no tile: one level lower, or nothing
            if work.quota is not None or self.level >= len(self.ladder) - 1:
                return None
            self.level += 1
        later = self.works[self.works.index(work):]
        left = self.end - self.clock()
        post = self.post_reserve  # beyond it, the proposals' own stop cuts them
        budget = left - post - sum(w.call_seconds(self.costs) for w in later)
        # Each later defect keeps the time of one batch, so none is left without a tile,
        # but never this defect's own first batch (with room for its estimate's error).
        room = max(budget - 2 * work.first_batch(self.costs), 0.0)
        keep = min(sum(w.first_batch(self.costs) for w in later[1:]), room)
        chosen = (plan(later, self.costs, budget * PLAN_SHARE, self.ladder, self.level)
                  if work.quota is None else None)
        if chosen is not None:
            self.level = chosen
            steps, screened = work.setting(self.ladder[chosen])
            tiles = list(work.remaining)
            planned = sum(w.seconds(self.costs, *w.setting(self.ladder[chosen]))
                          for w in later)
        else:  # even plain Grad-CAM does not fit: each defect a fair time (fair_times)
            self.level = len(self.ladder) - 1
            steps, screened = 0, False
            needs = [w.seconds(self.costs, 0, False) for w in later]
            times = fair_times(needs, max((budget - keep) * PLAN_SHARE, 0.0))
            # The later defects' fair times stay theirs even when this defect's tiles run
            # slower than estimated (a loaded machine): its calls stop before them.
            keep = max(keep, min(sum(times[1:]), room))
            if work.quota is None or len(later) == 1:  # the last defect takes what is left
                time = times[0]
                share = time / needs[0] if needs[0] > 0 else 0.0
                work.quota = work.run_in_share + math.floor(min(share, 1.0)
                                                            * len(work.remaining))
                batch = min(work.predictor.tile_batch, len(work.remaining))
                if (work.quota - work.run_in_share < batch and not work.run.steps
                        and budget >= work.first_batch(self.costs)):
                    work.quota = batch  # never no tile while a batch fits
            count = work.quota - work.run_in_share
            if count <= 0:
                return None
            unsurveyed = [t for t in survey_order(work.grid) if not work.done[t]]
            order = unsurveyed or follow_order(work.grid, work.remaining, work.probability,
                                               work.done)
            tiles = order[:count]
            planned = max(budget * PLAN_SHARE, 0.0)
        mine = work.seconds(self.costs, steps, screened, len(tiles))
        allowance = mine * budget / planned if planned > 0 and budget > 0 else budget
        # The tiles never run into the proposals' planned time nor into the later defects'
        # first batches (their fair times, when not all fits).
        floor = post + keep
        return work.start(tiles, steps, screened, allowance, self.end - floor)
