"""Answer within a deadline: as much of the requested work as fits, never later.

CVAT gives up on a frame after its timeout (120 s by default) and then fails the whole
automatic-annotation job; ``DEFECTCAM_DEADLINE`` bounds one request below that. The service
(:mod:`defectcam.service`) runs a request's defects through :func:`propose_within` when a
deadline is set; every face gets the same behaviour.

How the time is spent, from the tile count, the defects asked and the per-tile cost this
worker measured (:class:`TileCosts`, a running estimate kept by the service, updated after
every tile batch):

1. The best *level* that fits the time left, in this order: the requested AdvCAM steps T
   without screening (when not requested, nor the classifier's default), with screening,
   T - 1 without and with screening, ..., plain Grad-CAM (T = 0). A level caps each defect's
   steps; screening climbs only the tiles the classifier calls defective (p at least the
   weights' ``screen_threshold``, else 0.5), whose share of tiles is estimated per defect
   from what this worker has seen.
2. When even plain Grad-CAM over every tile does not fit, each defect gets the same share
   of its tiles, the most promising first: a survey of every other tile in both directions
   (coarse to fine, so any prefix is spread over the frame), then the tiles next to the
   surveyed tiles with the highest probability. Tiles left out keep a zero map and
   propose nothing.
3. Before each tile batch a guard checks the estimate against the time left; when a defect
   runs late it stops, and the rest of the request is planned again at a lower level. Maps
   of parts run with fewer steps are scaled to the defect's most steps (as screening does
   for tiles it does not climb), so one normaliser serves the whole map.

The answer comes at the latest by the deadline plus about one tile batch and the encoding of
the answer (``RESERVE`` is kept free for the proposals and the answer). With the time to run
everything as asked, every defect runs exactly as without a deadline (same calls, same maps).
What was reduced is a :class:`DeadlineReport`: the service logs it and writes it into the
interaction log record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from defectcam.core.predictor import DefectMap, as_scales
from defectcam.core.proposer import SCREEN_THRESHOLD, DefectProposer, ProposalResult
from defectcam.core.proposer import screen_threshold as screen_threshold_of
from defectcam.core.tiling import TileGrid

Tile = tuple[int, int]

#: Share of the time left that a plan may fill: the rest absorbs estimation noise.
PLAN_SHARE = 0.9
#: Seconds kept free at the end for the answer (shapes, interaction log, JSON): a share of the
#: deadline within these bounds.
RESERVE_SHARE, RESERVE_MIN, RESERVE_MAX = 0.05, 0.3, 5.0


def reserve_for(deadline: float) -> float:
    """Seconds of a ``deadline`` kept free for the answer after the proposals."""
    return min(max(RESERVE_SHARE * deadline, RESERVE_MIN), RESERVE_MAX)


# --------------------------------------------------------------------------- costs


@dataclass
class TileCosts:
    """What work costs on this worker, learned as it runs (exponential moving averages).

    ``forward``: seconds per tile pixel of one plain forward pass (T = 0); ``step``: seconds
    per tile pixel of one climbing step (a forward and a backward pass to the input), so a
    tile climbed T steps costs ``forward + T * step`` per pixel; ``post``: seconds per image
    pixel to turn one defect's map into proposals. Until both tile costs are measured, their
    ratio is ``step_ratio`` (2.2 on 2 CPU cores: BENCHMARKS.md, 46 s at T = 2 vs 8.4 s at
    T = 0). ``climb_share``: per defect, the share of tiles screening climbs.
    """

    forward: float | None = None
    step: float | None = None
    post: float = 1e-7
    step_ratio: float = 2.2
    smoothing: float = 0.3
    climb_share: dict[str, float] = field(default_factory=dict)
    forward_measured: bool = False
    step_measured: bool = False

    @property
    def known(self) -> bool:
        return self.forward is not None

    def _average(self, old: float | None, new: float, measured: bool) -> float:
        return new if old is None or not measured else old + self.smoothing * (new - old)

    def observe(self, tile_pixels: int, forwards: float, steps: float, seconds: float) -> None:
        """One tile batch took ``seconds``: ``forwards`` plain passes and ``steps`` climbing
        steps, counted in tiles of ``tile_pixels`` pixels."""
        if seconds <= 0 or tile_pixels <= 0 or forwards <= 0:
            return
        per_pixel = seconds / tile_pixels
        if steps == 0:
            self.forward = self._average(self.forward, per_pixel / forwards,
                                         self.forward_measured)
            self.forward_measured = True
            if not self.step_measured:
                self.step = self.forward * self.step_ratio
            return
        if self.forward_measured:
            step = max((per_pixel - forwards * self.forward) / steps, 0.5 * self.forward)
        else:  # both unknown: split by the prior ratio
            step = per_pixel / (forwards / self.step_ratio + steps)
        self.step = self._average(self.step, step, self.step_measured)
        self.step_measured = True
        if not self.forward_measured:
            self.forward = self.step / self.step_ratio

    def observe_post(self, image_pixels: int, seconds: float) -> None:
        if image_pixels > 0 and seconds > 0:
            self.post += self.smoothing * (seconds / image_pixels - self.post)

    def observe_climbs(self, label: str, tiles: int, climbed: int) -> None:
        if tiles > 0:
            old = self.climb_share.get(label)
            share = climbed / tiles
            self.climb_share[label] = share if old is None else old + self.smoothing * (
                share - old)

    def tile_seconds(self, tile_pixels: int, iterations: int, screen: bool = False,
                     label: str | None = None) -> float:
        """Estimated seconds for one tile (0 when nothing is measured yet)."""
        if self.forward is None or self.step is None:
            return 0.0
        climb = self.forward + iterations * self.step
        if iterations == 0:
            return tile_pixels * self.forward
        if not screen:
            return tile_pixels * climb
        share = self.climb_share.get(label, SCREEN_THRESHOLD) if label else SCREEN_THRESHOLD
        return tile_pixels * (self.forward + share * climb)

    def post_seconds(self, image_pixels: int) -> float:
        return image_pixels * self.post

    def warm_up(self, proposer: DefectProposer) -> None:
        """Measure on this worker before the first request, with the first classifier: one
        tile batch at T = 0 (twice: the first pass also pays for allocations) and at T = 1,
        and turning a map into proposals."""
        predictor = next(iter(proposer.predictors.values()))
        m = predictor.metadata
        batch = predictor.tile_batch
        width = m.tile_size + (m.tile_size - m.tile_overlap) * (batch - 1)
        rng = np.random.default_rng(0)
        image = rng.integers(90, 170, (m.tile_size, width, 3), dtype=np.uint8)
        pixels = m.tile_size * m.tile_size
        for iterations in (0, 0, 1):
            start = time.perf_counter()
            defect_map = predictor.predict(image, iterations)
            self.observe(pixels, batch, batch * iterations, time.perf_counter() - start)
        # Proposals from a 2 MP map of that tile's map, twice: the first call in a process
        # also pays one-time costs. Its few contours cost less than a real frame's (measured:
        # 15 vs 35-50 ns per pixel on 2 CPU cores): 3x, until real requests are measured.
        big = (1024, 2048)
        image = cv2.resize(image, big[::-1], interpolation=cv2.INTER_LINEAR)
        defect_map.cam_map = cv2.resize(defect_map.cam_map, big[::-1],
                                        interpolation=cv2.INTER_LINEAR)
        defect_map.grid = predictor.tile_grid(*big)
        work = predictor.working_size(*big)
        defect_map.working_size = work if work != big else None
        defect_map.tile_probability = np.full((len(defect_map.grid.ys),
                                               len(defect_map.grid.xs)), 0.5, np.float32)
        for _ in range(2):
            start = time.perf_counter()
            proposer.map_to_proposals(defect_map, None, image)
            seconds = time.perf_counter() - start
        self.post = 3 * seconds / (big[0] * big[1])


# --------------------------------------------------------------------------- report


@dataclass
class LabelRun:
    """What one defect got: its tiles, the steps asked, and how many tiles ran at how many
    steps (``steps``: steps -> tiles); ``screened``: screening ran without being asked."""

    label: str
    tiles: int
    requested_iterations: int
    requested_screen: bool
    steps: dict[int, int] = field(default_factory=dict)
    screened: bool = False

    @property
    def tiles_run(self) -> int:
        return sum(self.steps.values())

    @property
    def left_out(self) -> int:
        return self.tiles - self.tiles_run

    @property
    def reduced(self) -> bool:
        return (self.left_out > 0 or self.screened
                or any(t < self.requested_iterations for t in self.steps))

    def to_log(self) -> dict[str, Any]:
        return {"tiles": self.tiles, "tiles_left_out": self.left_out,
                "requested_iterations": self.requested_iterations,
                "steps": {str(t): n for t, n in sorted(self.steps.items(), reverse=True)},
                "screened": self.screened or self.requested_screen}

    def describe(self) -> str:
        ran = ", ".join(f"{n} at T={t}" for t, n in sorted(self.steps.items(), reverse=True))
        screened = " screened" if self.screened else ""
        return (f"{self.label}: {self.tiles_run}/{self.tiles} tiles ({ran or 'none'}{screened}; "
                f"asked T={self.requested_iterations})")


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


# --------------------------------------------------------------------------- one defect


class _LabelWork:
    """One defect's share of a request: its grid, the tiles still to run, and the map parts
    run so far. Parts fold into one raw sum per number of steps as they come, so memory
    holds at most one full-size map per step count besides the running call's."""

    def __init__(self, label: str, predictor: Any, image_shape: tuple[int, int],
                 iterations: int, screen: bool | None) -> None:
        self.label = label
        self.predictor = predictor
        self.image_shape = image_shape
        self.grid: TileGrid = predictor.tile_grid(*image_shape)
        #: The probability below which screening leaves a tile unclimbed (when it screens).
        self.threshold = screen_threshold_of(True, predictor.metadata)
        # Requested: the request's screen, or (None) the classifier's screen_threshold.
        screen = screen_threshold_of(screen, predictor.metadata) is not None
        self.tile_pixels = self.grid.tile_h * self.grid.tile_w
        self.remaining: list[Tile] = self.grid.tiles()
        shape = (len(self.grid.ys), len(self.grid.xs))
        self.done = np.zeros(shape, bool)
        self.probability = np.zeros(shape, np.float32)
        self.climbed = np.zeros(shape, bool)
        self.run = LabelRun(label, len(self.grid), iterations, screen)
        #: Tiles this defect may run once even plain Grad-CAM does not fit everything.
        self.quota: int | None = None
        self.run_in_share = 0
        self._only: DefectMap | None = None  # the first part, untouched while it is alone
        self._sums: dict[int, np.ndarray] = {}  # steps -> raw (unnormalised) map sum
        self._seconds = 0.0

    def seconds(self, costs: TileCosts, iterations: int, screen: bool, tiles: int | None = None
                ) -> float:
        count = len(self.remaining) if tiles is None else tiles
        return count * costs.tile_seconds(self.tile_pixels, iterations, screen, self.label)

    def record(self, defect_map: DefectMap, iterations: int, screened: bool,
               tiles: list[Tile], in_share: bool = False) -> None:
        if not tiles:
            return
        if in_share:
            self.run_in_share += len(tiles)
        ran = set(tiles)
        self.remaining = [t for t in self.remaining if t not in ran]
        rows, cols = np.array(tiles).T
        self.done[rows, cols] = True
        self.probability[rows, cols] = defect_map.tile_probability[rows, cols]
        self.climbed[rows, cols] = defect_map.climbed[rows, cols]
        self.run.steps[iterations] = self.run.steps.get(iterations, 0) + len(tiles)
        self.run.screened |= screened and not self.run.requested_screen
        self._seconds += defect_map.seconds
        if self._only is None and not self._sums:
            self._only = defect_map
            return
        if self._only is not None:
            self._fold(self._only)
            self._only = None
        self._fold(defect_map)

    def _fold(self, part: DefectMap) -> None:
        raw = part.cam_map  # the part's own buffer, no longer needed as a map
        raw *= np.float32(part.normaliser)
        if part.iterations in self._sums:
            self._sums[part.iterations] += raw
        else:
            self._sums[part.iterations] = raw

    def defect_map(self) -> DefectMap | None:
        """The map of every part: a lone part is returned as the predictor made it."""
        if self._only is not None:
            return self._only
        if not self._sums:
            return None
        top = max(self._sums)
        raw = self._sums.pop(top)
        for iterations, part in self._sums.items():
            # Fewer steps sum fewer CAMs: scaled to the most steps, as screening scales
            # the tiles it does not climb.
            part *= np.float32((top + 1) / (iterations + 1))
            raw += part
        self._sums = {top: raw}
        m = self.predictor.metadata
        normaliser = max(float(raw.max()), m.cam_scale * (top + 1), 1e-12)
        work = (self.grid.height, self.grid.width)
        return DefectMap(label=self.label, cam_map=raw / np.float32(normaliser),
                         grid=self.grid, tile_probability=self.probability.copy(),
                         climbed=self.climbed.copy(), normaliser=normaliser, iterations=top,
                         seconds=self._seconds,
                         working_size=work if work != self.image_shape else None)


class _Guard:
    """``stop`` for one predict call: measures each batch, stops the call when the next batch
    would overrun the call's allowance or the deadline."""

    def __init__(self, work: _LabelWork, tiles: list[Tile], iterations: int, screen: bool,
                 costs: TileCosts, allowance: float, hard_end: float,
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
            self.costs.observe(self.work.tile_pixels, size, size * self.iterations,
                               now - self.last)
        self.last = now
        size = min(self.batch, len(self.tiles) - self.batches * self.batch)
        next_batch = self.work.seconds(self.costs, self.iterations, self.screen, size)
        if self.batches and (now - self.start + next_batch > self.allowance
                             or now + next_batch > self.hard_end):
            self.stopped = True
            return True
        if not self.batches and now + next_batch > self.hard_end:
            self.stopped = True
            return True
        self.batches += 1
        return False

    @property
    def tiles_run(self) -> list[Tile]:
        return self.tiles[: min(len(self.tiles), self.batches * self.batch)]


# --------------------------------------------------------------------------- the request


def levels(top: int, screen: bool) -> list[tuple[int, bool]]:
    """(step cap, screening) from the best to plain Grad-CAM."""
    out: list[tuple[int, bool]] = []
    for cap in range(top, 0, -1):
        if not screen:
            out.append((cap, False))
        out.append((cap, True))
    out.append((0, False))
    return out


def _setting(work: _LabelWork, level: tuple[int, bool]) -> tuple[int, bool]:
    """(steps, screening) of one defect at a level: a defect that asked for screening (or
    whose classifier screens by default) screens at every level."""
    iterations = min(work.run.requested_iterations, level[0])
    return iterations, (level[1] or work.run.requested_screen) and iterations > 0


def plan(works: Sequence[_LabelWork], costs: TileCosts, budget: float,
         ladder: Sequence[tuple[int, bool]], first: int = 0) -> int | None:
    """The index in ``ladder`` (from ``first`` on) of the best level whose estimated cost for
    the remaining tiles of ``works`` fits ``budget``; ``None`` when none does."""
    for index in range(first, len(ladder)):
        cost = sum(w.seconds(costs, *_setting(w, ladder[index])) for w in works)
        if cost <= budget:
            return index
    return None


def propose_within(
    proposer: DefectProposer,
    image: np.ndarray,
    labels: Sequence[str],
    iterations: dict[str, int],
    *,
    deadline: float,
    started: float,
    costs: TileCosts,
    cam_threshold: float | None = None,
    screen: bool | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ProposalResult, DeadlineReport]:
    """Proposals of ``labels`` (each with its requested AdvCAM steps ``iterations[label]``)
    answered by ``started + deadline`` (``clock`` seconds); see the module docstring.
    ``screen``: the request's (``None``: each classifier's ``screen_threshold``)."""
    end = started + deadline - reserve_for(deadline)
    scales = as_scales(image)  # one shrunk copy per working size, for every call
    height, width = image.shape[:2]
    works = [_LabelWork(label, proposer.predictors[label], (height, width), iterations[label],
                        screen) for label in labels]
    top = max((w.run.requested_iterations for w in works), default=0)
    ladder = levels(top, bool(works) and all(w.run.requested_screen for w in works))
    level = 0
    result = ProposalResult(proposals=[])
    for index, work in enumerate(works):
        start = clock()
        later = works[index:]
        while work.remaining:
            now = clock()
            post = sum(costs.post_seconds(height * width) for _ in later)
            budget = end - now - post
            chosen = (plan(later, costs, budget * PLAN_SHARE, ladder, level) if costs.known
                      else level)
            if chosen is not None and work.quota is None:
                level = chosen
                steps, screened = _setting(work, ladder[level])
                tiles = list(work.remaining)
                planned = sum(w.seconds(costs, *_setting(w, ladder[level])) for w in later)
            else:  # even plain Grad-CAM does not fit: a fair share of each defect's tiles
                level = len(ladder) - 1
                steps, screened = 0, False
                if work.quota is None:  # fixed once, so that later defects keep their share
                    total = sum(w.seconds(costs, 0, False) for w in later)
                    share = max(budget * PLAN_SHARE, 0.0) / total if total > 0 else 0.0
                    work.quota = math.floor(min(share, 1.0) * len(work.remaining))
                quota = work.quota - work.run_in_share
                if quota <= 0:
                    break
                unsurveyed = [t for t in survey_order(work.grid) if not work.done[t]]
                order = unsurveyed or follow_order(work.grid, work.remaining,
                                                   work.probability, work.done)
                tiles = order[:quota]
                planned = max(budget * PLAN_SHARE, 0.0)
            mine = work.seconds(costs, steps, screened, len(tiles))
            allowance = mine * budget / planned if planned > 0 and budget > 0 else budget
            guard = _Guard(work, tiles, steps, screened, costs, allowance, end - post, clock)
            defect_map = work.predictor.predict(
                scales, steps, work.threshold if screened else None, progress=progress,
                tiles=tiles, stop=guard)
            ran = guard.tiles_run
            if screened and ran:
                climbed = int(sum(defect_map.climbed[i, j] for i, j in ran))
                costs.observe_climbs(work.label, len(ran), climbed)
                costs.observe(work.tile_pixels, len(ran) + climbed, climbed * steps,
                              clock() - guard.start)
            work.record(defect_map, steps, screened, ran, in_share=work.quota is not None)
            if not ran:
                if level == len(ladder) - 1:
                    break  # not even one batch of plain Grad-CAM fits: the rest is left out
                level += 1
        post_start = clock()
        merged = work.defect_map()
        if merged is not None:
            proposals = proposer.map_to_proposals(merged, cam_threshold, scales)
            result.proposals.extend(proposals)
            result.maps[work.label] = merged
            costs.observe_post(height * width, clock() - post_start)
        result.seconds[work.label] = clock() - start
    report = DeadlineReport(deadline, clock() - started, [w.run for w in works])
    return result, report

