"""No frame fails a CVAT job (issues 16 and 24). Through the Nuclio handler: thin frames get an
empty answer, a 6000 x 4500 frame is answered within a small deadline with the cut logged per
defect, a tiny frame does not poison what the next large frame gets, a generous deadline
changes nothing. Then the deadline's parts against the real engine: the cost model, the
planner's levels and post-processing sizes, the tile orders, the merged map."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from defectcam.core.model import build_classifier
from defectcam.core.postprocess import mask_to_proposals
from defectcam.core.predictor import DefectMapPredictor, MapParts
from defectcam.core.proposer import DefectProposer
from defectcam.core.refine import COARSE_REACH, disc, grow, max_within
from defectcam.core.weights import WeightsMetadata
from defectcam.feedback import read_log
from defectcam.serving.deadline import (
    DRIFT_BOUND,
    MIN_LEARN_PIXELS,
    POST_SIDES,
    STEP_BOUND,
    DeadlinePlanner,
    LinearCost,
    WorkCosts,
    fair_times,
    follow_order,
    levels,
    plan,
    reserve_for,
    survey_order,
)
from tests.function_support import (
    call_function,
    captured_log,
    check_shapes,
    encode_image,
    start_function,
)
from tests.helpers import concrete_texture, draw_crack

#: The small deadline of the large-frame test, and how late an answer may come: about one
#: tile batch plus the answer's encoding (the machine running the tests is shared).
SMALL_DEADLINE = 6.0
MARGIN = 2.0


@pytest.fixture(scope="module")
def plain(untrained_weights, tmp_path_factory):
    """The function without a deadline (defaults otherwise)."""
    log_db = tmp_path_factory.mktemp("plain") / "log.sqlite"
    return start_function(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
                          DEFECTCAM_LOG_DB=str(log_db), DEFECTCAM_DEADLINE="",
                          DEFECTCAM_MAX_PIXELS="")


@pytest.fixture(scope="module")
def timed(untrained_weights, tmp_path_factory):
    """The function with a small deadline, proposing cracks only (as an operator would set
    for a slow worker: both by environment, since CVAT sends neither)."""
    log_db = tmp_path_factory.mktemp("timed") / "log.sqlite"
    return start_function(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
                          DEFECTCAM_LOG_DB=str(log_db), DEFECTCAM_DEADLINE=str(SMALL_DEADLINE),
                          DEFECTCAM_LABELS="crack", DEFECTCAM_MAX_PIXELS="")


def _log_db(function):
    main, platform = function
    return platform._get_handler_context(main.handler).user_data.model.settings.log_db


def _photo(height: int, width: int, seed: int = 3, cracks: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = concrete_texture(height, width, rng)
    for _ in range(cracks):
        draw_crack(image, rng, width=3)
    return image


# --------------------------------------------------------------------------- 16.1


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (7, 300)])
def test_thin_frames_get_an_empty_answer_and_one_warning(plain, size) -> None:
    frame = encode_image(Image.new("RGB", size, (120, 110, 100)))
    with captured_log(plain) as log:
        status, shapes = call_function(plain, {"image": frame})
    assert (status, shapes) == (200, [])
    lines = [line for line in log.getvalue().splitlines() if "[warn" in line]
    assert len(lines) == 1 and "smallest side" in lines[0], log.getvalue()
    assert f"'width': {size[0]}, 'height': {size[1]}" in lines[0]
    assert "rejected request" not in log.getvalue() and "Traceback" not in log.getvalue()
    record = read_log(_log_db(plain))[-1]  # answered, so in the interaction log too
    assert (record.width, record.height) == size and record.proposals == []


def test_what_is_no_image_keeps_its_4xx(plain) -> None:
    assert call_function(plain, {"image": "***"})[0] == 400
    not_an_image = {"image": "aGVsbG8sIG5vdCBhbiBpbWFnZQ=="}
    status, payload = call_function(plain, not_an_image)
    assert status == 400 and "not a readable image file" in payload["error"]


# --------------------------------------------------------------------------- 16.2 + 16.3


def _jpeg_body(image: np.ndarray) -> dict:
    """The body CVAT sends for ``image`` saved as a JPEG."""
    import base64

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=85)
    return {"image": base64.b64encode(buffer.getvalue()).decode()}


def _answered_in_time(function, image: np.ndarray) -> tuple[list, str]:
    """(shapes, function log) of one call, checked to come by the deadline (plus margin)."""
    with captured_log(function) as log:
        start = time.perf_counter()
        status, shapes = call_function(function, _jpeg_body(image))
        elapsed = time.perf_counter() - start
    assert status == 200, shapes
    assert elapsed <= SMALL_DEADLINE + MARGIN, f"answered after {elapsed:.1f} s"
    check_shapes(shapes, image.shape[1], image.shape[0])
    return shapes, log.getvalue()


def test_a_6000x4500_frame_is_answered_within_a_small_deadline(timed) -> None:
    shapes, log = _answered_in_time(timed, _photo(4500, 6000))
    assert {s["label"] for s in shapes} <= {"crack"}
    record = read_log(_log_db(timed))[-1]
    deadline = record.params["deadline"]
    crack = deadline["labels"]["crack"]
    assert deadline["reduced"] is True and deadline["seconds"] == SMALL_DEADLINE
    assert 0 < crack["tiles_left_out"] < crack["tiles"]
    assert crack["steps"] == {"0": crack["tiles"] - crack["tiles_left_out"]}  # plain Grad-CAM
    assert crack["requested_iterations"] == 0  # the fixture weights' own value
    lines = [line for line in log.splitlines() if "deadline: reduced" in line]
    assert len(lines) == 1 and "tiles_left_out" in lines[0], log


@pytest.fixture(scope="module")
def every_defect(untrained_weights, tmp_path_factory):
    """The function with a small deadline and every defect (CVAT sends no labels)."""
    log_db = tmp_path_factory.mktemp("every") / "log.sqlite"
    return start_function(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
                          DEFECTCAM_LOG_DB=str(log_db), DEFECTCAM_DEADLINE=str(SMALL_DEADLINE),
                          DEFECTCAM_MAX_PIXELS="")


def _service(function):
    main, platform = function
    return platform._get_handler_context(main.handler).user_data.model.service


def test_a_tiny_frame_does_not_empty_the_next_large_one(every_defect) -> None:
    """Issue 24's sequence: an 8 x 8 frame, then a large one, on one warm worker with a
    small deadline. The tiny frame leaves the cost estimates where they were (or nearer
    what start-up measured), and the large frame is answered in time with tiles for every
    defect, the cut reported per defect in the function log and the interaction log."""
    costs = _service(every_defect).costs
    rates = [costs.forward, costs.step, *costs.post.values()]
    before = [c.per_pixel for c in rates]
    tiny = {"image": encode_image(Image.new("RGB", (8, 8), (120, 110, 100)))}
    assert call_function(every_defect, tiny)[0] == 200
    for cost, old in zip(rates, before, strict=True):
        assert min(old, cost.prior) <= cost.per_pixel <= max(old, cost.prior)
    _, log = _answered_in_time(every_defect, _photo(2400, 3200, seed=5))
    deadline = read_log(_log_db(every_defect))[-1].params["deadline"]
    assert set(deadline["labels"]) == {"crack", "spalling", "rust"}
    for label, got in deadline["labels"].items():
        assert got["tiles_run"] > 0, (label, got)
        assert got["tiles_run"] + got["tiles_left_out"] == got["tiles"]
        assert {"proposals_max_side", "proposals_cut", "steps"} <= set(got)
    lines = [line for line in log.splitlines() if "deadline: reduced" in line]
    assert len(lines) == 1, log
    for label in ("crack", "spalling", "rust"):
        assert f"{label}: " in lines[0] and " tiles (" in lines[0]


def test_a_generous_deadline_answers_as_without_one(plain, untrained_weights,
                                                   tmp_path_factory) -> None:
    log_db = tmp_path_factory.mktemp("generous") / "log.sqlite"
    generous = start_function(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
                              DEFECTCAM_LOG_DB=str(log_db), DEFECTCAM_DEADLINE="1000")
    body = {"image": encode_image(Image.fromarray(_photo(256, 384))), "iterations": 1,
            "labels": ["crack", "rust"], "threshold": 0.0, "cam_threshold": 0.01}
    status, expected = call_function(plain, body)
    assert status == 200 and expected  # shapes to compare
    assert call_function(generous, body) == (200, expected)
    record = read_log(log_db)[-1]
    assert record.params["deadline"]["reduced"] is False
    assert record.params["deadline"]["labels"]["crack"]["steps"] == {"1": 12}


# --------------------------------------------------------------------------- the parts


def _costs(forward: float = 1e-6, step: float = 2e-6, post: float = 1e-8) -> WorkCosts:
    return WorkCosts(LinearCost(forward), LinearCost(step),
                     {label: LinearCost(post) for label in ("crack", "spalling", "rust")})


def test_costs_learn_from_real_work_within_bounds() -> None:
    cost = LinearCost(per_pixel=1e-7, fixed=0.01)
    pixels = 4 * MIN_LEARN_PIXELS
    for _ in range(40):  # a slower worker: learned, one bounded step at a time
        before = cost.per_pixel
        cost.observe(pixels, 0.01 + pixels * 3e-7)
        assert cost.per_pixel <= before * STEP_BOUND
    assert cost.per_pixel == pytest.approx(3e-7, rel=1e-3)
    assert cost.seconds(pixels, 2) == pytest.approx(0.02 + pixels * 3e-7, rel=1e-3)
    for _ in range(200):  # a pathological spell cannot push it beyond the drift bound
        cost.observe(pixels, 1e3)
    assert cost.per_pixel == pytest.approx(cost.prior * DRIFT_BOUND)
    for _ in range(30):  # nothing observed: requests alone bring it back towards the prior
        cost.decay()
    assert cost.per_pixel < 1.1 * cost.prior


def test_a_tiny_frame_teaches_nothing_per_pixel() -> None:
    """The poisoning of issue 24: an 8 x 8 frame's fixed costs over 64 pixels read as an
    enormous per-pixel cost; observations that small are not learned from."""
    costs = _costs()
    costs.forward.fixed = 0.05
    costs.observe_tiles(64, 1, 0, 1, 0.2, 2)
    costs.post["crack"].observe(64, 0.5)
    assert costs.forward.per_pixel == 1e-6 and costs.post["crack"].per_pixel == 1e-8
    costs.observe_tiles(128 * 128, 2, 0, 2, 0.05 + 2 * 128 * 128 * 2e-6, 2)
    assert costs.forward.per_pixel == pytest.approx(1e-6 + 0.3 * 1e-6)  # learned, bounded
    costs.observe_tiles(128 * 128, 2, 2, 1, 0.05 + 2 * 128 * 128 * 1.3e-6 + 2 * 128 * 128 * 3e-6,
                        2)
    assert 2e-6 < costs.step.per_pixel <= 4e-6
    costs.observe_climbs("crack", 10, 2)
    plain, step = costs.forward.seconds(1000), costs.step.seconds(1000)
    assert costs.tile_seconds(1000, 3, screen=True, label="crack") == pytest.approx(
        plain + 0.2 * (plain + 3 * step))


@pytest.fixture(scope="module")
def proposer(untrained_weights) -> DefectProposer:
    return DefectProposer.from_weights(untrained_weights, device="cpu")


def _planner(proposer, shape, labels, steps, costs, deadline=10.0, clock=time.perf_counter):
    return DeadlinePlanner(proposer, shape, labels, dict.fromkeys(labels, steps), False,
                           deadline=deadline, started=clock(), costs=costs, clock=clock)


def test_plan_takes_the_best_level_that_fits(proposer) -> None:
    costs = _costs()
    works = _planner(proposer, (800, 1000), ["crack", "rust"], 2, costs).works
    ladder = levels(2, False)
    assert ladder == [(2, False), (2, True), (1, False), (1, True), (0, False)]
    cost = [sum(w.seconds(costs, *w.setting(level)) for w in works) for level in ladder]
    assert cost == sorted(cost, reverse=True)  # each level is cheaper than the one before
    for index, seconds in enumerate(cost):
        assert plan(works, costs, seconds * 1.001, ladder) == index
    assert plan(works, costs, cost[0] * 10, ladder, 3) == 3  # never back up a level
    assert plan(works, costs, cost[-1] * 0.99, ladder) is None  # then: a share of the tiles
    assert levels(1, True) == [(1, True), (0, False)]
    assert reserve_for(100) == 5.0 and reserve_for(3) == 0.3


def test_a_defect_gets_a_batch_while_a_batch_fits(proposer) -> None:
    """Estimates that make every plan too dear still leave each defect a batch of tiles
    while the time allows one: no empty answer that had time."""
    costs = _costs(forward=5e-5)  # a whole grid of plain Grad-CAM costs far beyond 10 s
    planner = _planner(proposer, (2000, 3000), ["crack", "spalling", "rust"], 0, costs)
    batch = [w.first_batch(costs) for w in planner.works]
    assert 3 * sum(batch) > 10.0 > sum(batch) > 0
    for work in planner.works:
        run = planner.next_run(work)
        assert run is not None and len(run.tiles) >= work.predictor.tile_batch
        assert run.tiles[0] == (0, 0)  # the survey's coarsest lattice first
        # the run may not eat the later defects' first batches
        later = planner.works[planner.works.index(work) + 1:]
        assert run.stop.hard_end <= planner.end - sum(w.first_batch(costs) for w in later)


def test_proposals_are_sized_to_the_time_left(proposer) -> None:
    """Post-processing is planned like the tiles: the frame's own size while it fits, a
    smaller longer side when it does not, the smallest past the deadline with the smaller
    components cut."""
    now = [0.0]
    costs = _costs(post=1e-7)
    planner = _planner(proposer, (4000, 6000), ["crack", "rust"], 0, costs, deadline=100.0,
                       clock=lambda: now[0])
    crack = planner.works[0]
    assert planner.post_side(planner.works, 100.0) is None  # 2 x 24 MP x 1e-7 s fits
    assert planner.post_side(planner.works, 2.0) == 2048
    run = planner.post_run(crack)
    assert run.max_side is None and crack.run.post_side is None and not run.stop()
    now[0] = 94.0  # one second before the planned end (the answer's reserve is 5 s)
    assert planner.post_run(crack).max_side == 2048
    now[0] = 94.9  # almost no time: the smallest size, its smaller components cut
    run = planner.post_run(crack)
    assert run.max_side == POST_SIDES[-1] and crack.run.post_side == POST_SIDES[-1]
    assert not run.skip and not crack.run.post_cut
    now[0] = 96.0
    assert run.stop() and crack.run.post_cut and crack.run.reduced
    assert "proposals at 1024 px; smaller proposals left out" in crack.run.describe()
    rust = planner.works[1]
    assert planner.post_run(rust).skip and rust.run.post_cut  # its turn came too late


def test_a_stop_keeps_the_largest_components() -> None:
    mask = np.zeros((60, 80), bool)
    mask[2:10, 2:10] = True  # 64
    mask[20:40, 20:40] = True  # 400
    mask[50:55, 60:75] = True  # 75
    everything = mask_to_proposals(mask, "spalling", 1)
    asked = []
    cut = mask_to_proposals(mask, "spalling", 1, stop=lambda: asked.append(1) or len(asked) > 1)
    assert [p.area for p in everything] == [400, 75, 64]
    assert [p.area for p in cut] == [400, 75] and len(asked) == 2  # not asked before the first
    assert [p.area for p in mask_to_proposals(mask, "spalling", 1, stop=lambda: True)] == [400]


def test_proposals_at_a_smaller_side_are_in_frame_pixels(proposer) -> None:
    image = _photo(600, 900, seed=2)
    defect_map = proposer.predictors["crack"].predict(image, 0)
    full = proposer.map_to_proposals(defect_map, 0.05, image)
    small = proposer.map_to_proposals(defect_map, 0.05, image, max_side=300)
    assert full and small
    assert proposer.post_size("crack", 600, 900, 300) == (200, 300)
    for p in small:
        x1, y1, x2, y2 = p.box
        assert 0 <= x1 <= x2 < 900 and 0 <= y1 <= y2 < 600 and p.mask.shape == (
            y2 - y1 + 1, x2 - x1 + 1)


def test_tile_orders_spread_first_then_follow_the_defects(proposer) -> None:
    grid = proposer.predictors["crack"].tile_grid(1000, 1000)  # 9 x 9 tiles of 128 px
    rows, cols = len(grid.ys), len(grid.xs)
    assert (rows, cols) == (9, 9)
    survey = survey_order(grid)
    assert len(survey) == 25 and all(i % 2 == 0 and j % 2 == 0 for i, j in survey)
    assert survey[:4] == [(0, 0), (0, 8), (8, 0), (8, 8)]  # the coarsest lattice first
    assert set(survey[:9]) == {(i, j) for i in (0, 4, 8) for j in (0, 4, 8)}
    done = np.zeros((rows, cols), bool)
    probability = np.zeros((rows, cols), np.float32)
    for i, j in survey:
        done[i, j] = True
    probability[4, 6] = 0.9  # a defect around tile (4, 6)
    remaining = [t for t in grid.tiles() if not done[t]]
    follow = follow_order(grid, remaining, probability, done)
    neighbours = {(3, 5), (3, 6), (3, 7), (4, 5), (4, 7), (5, 5), (5, 6), (5, 7)}
    assert set(follow[:8]) == neighbours and sorted(follow) == sorted(remaining)


def test_parts_merge_into_the_map_of_one_screened_run() -> None:
    """A part climbed T steps and a part of plain Grad-CAM merge exactly as screening
    combines climbed and unclimbed tiles; ``stop`` leaves the remaining tiles out."""
    meta = WeightsMetadata(label="crack", tile_size=64, tile_overlap=16)
    predictor = DefectMapPredictor(build_classifier(seed=4), meta, "cpu")
    image = _photo(150, 200, seed=9)
    first = predictor.predict(image, iterations=0)
    threshold = float(np.median(first.tile_probability))
    screened = predictor.predict(image, iterations=1, screen_threshold=threshold)
    climbed = [t for t in screened.grid.tiles() if screened.climbed[t]]
    plain = [t for t in screened.grid.tiles() if not screened.climbed[t]]
    assert climbed and plain
    parts = MapParts(meta)
    lone = predictor.predict(image, 1, tiles=climbed)
    parts.add(lone)
    parts.add(predictor.predict(image, 0, tiles=[]), tiles_run=0)  # ran nothing: dropped
    assert parts.finish() is lone  # a lone part is the predictor's own map
    parts.add(predictor.predict(image, 0, tiles=plain))
    merged = parts.finish()
    assert merged.iterations == 1
    assert merged.normaliser == pytest.approx(screened.normaliser, rel=1e-5)
    np.testing.assert_allclose(merged.cam_map, screened.cam_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(merged.tile_probability, screened.tile_probability)

    asked = []
    part = predictor.predict(image, 0, stop=lambda: asked.append(1) or len(asked) > 1)
    ran = predictor.tile_batch  # one batch, then stopped
    assert len(asked) == 2 and (part.tile_probability > 0).sum() == ran


# --------------------------------------------------------------------------- 24.1 + 24.5


@pytest.mark.parametrize("radius", [1, 5, 16, 31])
def test_small_reaches_dilate_exactly(radius) -> None:
    rng = np.random.default_rng(radius)
    mask = rng.random((90, 120)) > 0.995
    exact = cv2.dilate(mask.astype(np.uint8), disc(radius)).astype(bool)
    np.testing.assert_array_equal(grow(mask, radius), exact)
    values = rng.random((90, 120)).astype(np.float32)
    np.testing.assert_array_equal(max_within(values, radius), cv2.dilate(values, disc(radius)))


@pytest.mark.parametrize("radius", [32, 48, 128])
def test_large_reaches_cover_the_exact_disc_and_little_more(radius) -> None:
    """Beyond ``2 * COARSE_REACH`` px a reach runs on blocks: never less than the exact
    disc (no evidence the exact reach keeps is lost, no near-peak below the exact one), and
    at most a quarter further."""
    rng = np.random.default_rng(radius)
    mask = np.zeros((700, 900), bool)
    mask[rng.integers(0, 700, 12), rng.integers(0, 900, 12)] = True
    mask[300:340, 100:103] = True
    exact = cv2.dilate(mask.astype(np.uint8), disc(radius)).astype(bool)
    grown = grow(mask, radius)
    assert radius // COARSE_REACH > 1 and not (exact & ~grown).any()
    wider = cv2.dilate(mask.astype(np.uint8), disc(int(radius * 1.25))).astype(bool)
    assert not (grown & ~wider).any() and grown.sum() > exact.sum()
    values = rng.random((700, 900)).astype(np.float32)
    near = max_within(values, radius)
    assert (near >= cv2.dilate(values, disc(radius))).all()
    assert (near <= cv2.dilate(values, disc(int(radius * 1.25)))).all()


def _shipped_proposer(tile_size: int = 128, cam_threshold: float | None = None
                      ) -> DefectProposer:
    """Untrained classifiers with the shipped weights' post-processing (weights/*.json:
    refinement, confidence, thresholds, working size): what proposals cost is theirs.
    ``cam_threshold`` replaces the shipped thresholds (an untrained map's peaks are dots)."""
    import json
    from pathlib import Path

    keys = ("refinement", "confidence", "cam_threshold", "min_area", "closing_size",
            "working_max_side")
    predictors = []
    for seed, path in enumerate(sorted((Path(__file__).parents[1] / "weights").glob("*.json"))):
        shipped = json.loads(path.read_text())
        meta = WeightsMetadata(label=shipped["label"], tile_size=tile_size, tile_overlap=16,
                               iterations=0, **{k: shipped[k] for k in keys if k in shipped})
        if cam_threshold is not None:
            meta.cam_threshold = cam_threshold
        predictors.append(DefectMapPredictor(build_classifier(seed=seed), meta, "cpu"))
    return DefectProposer(predictors)


def test_a_large_frame_keeps_the_shapes_of_every_defect_that_ran() -> None:
    """Issue 24's large frames answered with two shapes: the proposals' cost estimate was
    measured on a map with no region, so the plan took the frame's own size and the last
    resort cut the proposals to each defect's largest. With the shipped post-processing and
    costs measured at start-up, a 6 MP frame under a small deadline is answered in time and
    every defect that ran tiles keeps all its proposals."""
    # At the shipped threshold an untrained crack map's peaks are dots that a smaller
    # post-processing side erases, and whether any shape is left depends on which tiles ran.
    proposer = _shipped_proposer(cam_threshold=0.3)
    assert {"crack", "spalling", "rust"} == set(proposer.labels)
    costs = WorkCosts.measure(proposer)
    image = _photo(2000, 3000, seed=11, cracks=12)
    deadline = 12.0  # far from all tiles; room for a shared machine running slower
    start = time.perf_counter()
    planner = DeadlinePlanner(proposer, image.shape[:2], proposer.labels,
                              dict.fromkeys(proposer.labels, 0), False, deadline=deadline,
                              started=start, costs=costs)
    result = proposer.propose_detailed(image, iterations=0, planner=planner)
    assert time.perf_counter() - start <= deadline + MARGIN
    report = planner.report()
    for run in report.labels:
        assert run.tiles_run > 0, run.describe()
        assert not run.post_cut, run.describe()
        made = [p for p in result.proposals if p.label == run.label]
        again = proposer.map_to_proposals(result.maps[run.label], None, image, run.post_side)
        assert len(made) == len(again), run.describe()  # nothing left out
    # Real shapes, not a token one per defect: a cut to each defect's largest would show.
    assert len(result.proposals) > len({p.label for p in result.proposals}) >= 1, [
        r.describe() for r in report.labels]


def test_fair_times_give_the_same_time_and_run_small_defects_whole() -> None:
    assert fair_times([100.0, 100.0, 3.0], 50.0) == pytest.approx([23.5, 23.5, 3.0])
    assert fair_times([10.0, 20.0], 100.0) == pytest.approx([10.0, 20.0])  # all fits
    assert fair_times([30.0, 40.0], 20.0) == pytest.approx([10.0, 10.0])
    assert fair_times([], 5.0) == [] and fair_times([4.0], 0.0) == [0.0]


def test_a_defect_with_few_tiles_runs_whole_when_the_others_are_cut(untrained_weights) -> None:
    """A defect at a small working size (few tiles) gets all of them while the defects
    with many tiles share the rest: the same time each, not the same share of tiles."""
    proposer = DefectProposer.from_weights(untrained_weights, device="cpu")
    small = proposer.predictors["rust"]
    small.metadata.working_max_side = 4 * small.metadata.tile_size
    costs = _costs(forward=5e-6)
    labels = ["rust", "crack", "spalling"]  # the small defect plans first, with the others
    planner = _planner(proposer, (3000, 4000), labels, 0, costs)
    rust, crack, spalling = planner.works
    assert small.tile_batch < len(rust.grid) < len(crack.grid) // 10
    whole = [w.seconds(costs, 0, False) for w in planner.works]
    assert whole[0] < 2.0 < 10.0 < whole[1]  # rust fits a third of the time; crack does not
    assert planner.next_run(rust).tiles
    assert rust.quota == len(rust.grid)  # it may run its whole grid
    for work in (crack, spalling):
        assert planner.next_run(work).tiles
        assert 0 < work.quota < len(work.grid) // 2  # cut
