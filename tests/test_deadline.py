"""Issue 16: no frame fails a CVAT job. Through the Nuclio handler: thin frames get an empty
answer, a 6000 x 4500 frame is accepted and answered within a small deadline with the
reduction logged, a generous deadline changes nothing. Then the deadline's parts against the
real engine: the cost model, the planner's levels, the tile orders, the merged map."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from defectcam.core.model import build_classifier
from defectcam.core.predictor import DefectMapPredictor
from defectcam.core.proposer import DefectProposer
from defectcam.core.weights import WeightsMetadata
from defectcam.deadline import (
    TileCosts,
    _LabelWork,
    follow_order,
    levels,
    plan,
    reserve_for,
    survey_order,
)
from defectcam.feedback import read_log
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


def test_a_6000x4500_frame_is_answered_within_a_small_deadline(timed) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_photo(4500, 6000)).save(buffer, "JPEG", quality=85)
    import base64

    body = {"image": base64.b64encode(buffer.getvalue()).decode()}  # what CVAT sends
    with captured_log(timed) as log:
        start = time.perf_counter()
        status, shapes = call_function(timed, body)
        elapsed = time.perf_counter() - start
    assert status == 200, shapes
    assert elapsed <= SMALL_DEADLINE + MARGIN, f"answered after {elapsed:.1f} s"
    check_shapes(shapes, 6000, 4500)
    assert {s["label"] for s in shapes} <= {"crack"}
    record = read_log(_log_db(timed))[-1]
    deadline = record.params["deadline"]
    crack = deadline["labels"]["crack"]
    assert deadline["reduced"] is True and deadline["seconds"] == SMALL_DEADLINE
    assert 0 < crack["tiles_left_out"] < crack["tiles"]
    assert crack["steps"] == {"0": crack["tiles"] - crack["tiles_left_out"]}  # plain Grad-CAM
    assert crack["requested_iterations"] == 0  # the fixture weights' own value
    lines = [line for line in log.getvalue().splitlines() if "deadline: reduced" in line]
    assert len(lines) == 1 and "tiles_left_out" in lines[0], log.getvalue()


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


def test_tile_costs_learn_the_forward_and_the_step() -> None:
    costs = TileCosts()
    assert costs.tile_seconds(1000, 2) == 0.0  # nothing measured: no estimate
    forward, step = 2e-6, 5e-6
    costs.observe(1000, 2, 4, 1000 * (2 * forward + 4 * step))  # a climb first: split by prior
    assert costs.known and costs.step_measured and not costs.forward_measured
    for _ in range(30):
        costs.observe(1000, 2, 0, 1000 * 2 * forward)
        costs.observe(1000, 2, 4, 1000 * (2 * forward + 4 * step))
    assert costs.forward == pytest.approx(forward, rel=1e-3)
    assert costs.step == pytest.approx(step, rel=1e-2)
    assert costs.tile_seconds(1000, 3) == pytest.approx(1000 * (forward + 3 * step), rel=1e-2)
    costs.observe_climbs("crack", 10, 2)
    screened = costs.tile_seconds(1000, 3, screen=True, label="crack")
    assert screened == pytest.approx(1000 * (forward + 0.2 * (forward + 3 * step)), rel=1e-2)


@pytest.fixture(scope="module")
def proposer(untrained_weights) -> DefectProposer:
    return DefectProposer.from_weights(untrained_weights, device="cpu")


def test_plan_takes_the_best_level_that_fits(proposer) -> None:
    costs = TileCosts(forward=1e-6, step=2e-6, forward_measured=True, step_measured=True)
    works = [_LabelWork(label, proposer.predictors[label], (800, 1000), 2, False)
             for label in ("crack", "rust")]
    ladder = levels(2, False)
    assert ladder == [(2, False), (2, True), (1, False), (1, True), (0, False)]
    cost = [sum(w.seconds(costs, min(2, cap), screen and cap > 0) for w in works)
            for cap, screen in ladder]
    assert cost == sorted(cost, reverse=True)  # each level is cheaper than the one before
    for index, seconds in enumerate(cost):
        assert plan(works, costs, seconds * 1.001, ladder) == index
    assert plan(works, costs, cost[0] * 10, ladder, 3) == 3  # never back up a level
    assert plan(works, costs, cost[-1] * 0.99, ladder) is None  # then: a share of the tiles
    assert levels(1, True) == [(1, True), (0, False)]
    assert reserve_for(100) == 5.0 and reserve_for(3) == 0.3


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
    work = _LabelWork("crack", predictor, image.shape[:2], 1, False)
    work.record(predictor.predict(image, 1, tiles=climbed), 1, False, climbed)
    work.record(predictor.predict(image, 0, tiles=plain), 0, False, plain)
    merged = work.defect_map()
    assert not work.remaining and merged.iterations == 1
    assert merged.normaliser == pytest.approx(screened.normaliser, rel=1e-5)
    np.testing.assert_allclose(merged.cam_map, screened.cam_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(merged.tile_probability, screened.tile_probability)
    assert work.run.steps == {1: len(climbed), 0: len(plain)} and work.run.reduced

    asked = []
    part = predictor.predict(image, 0, stop=lambda: asked.append(1) or len(asked) > 1)
    ran = predictor.tile_batch  # one batch, then stopped
    assert len(asked) == 2 and (part.tile_probability > 0).sum() == ran
