"""The click interactor (issue 23): the mask computation on synthetic cracks with the fitted
fixture classifier, the Nuclio face through nuclio_sdk's own Event/Context (CVAT's request
and the answer its UI takes), bad input, the interaction log, and the yaml files."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import pytest
import yaml
from PIL import Image

from defectcam.core.interact import (
    Clicks,
    InteractSettings,
    click_mask,
    erase_negatives,
    interact,
    model_candidates,
    select_object,
)
from defectcam.core.options import InteractOptions, Limits, OptionError
from defectcam.core.predictor import DefectMapPredictor
from defectcam.core.proposer import DefectProposer
from defectcam.core.weights import WeightsError, WeightsMetadata, read_metadata, save_weights
from defectcam.feedback import read_log
from defectcam.serving.interaction_log import ProposalLog
from defectcam.serving.interactor import InteractorService

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import BAD_REQUESTS, environment, materialise  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INTERACTOR_FILES = sorted((REPO / "interactors").glob("*.yaml"))
#: The fixture classifier learnt 48 px crops: small tiles keep every window a few tiles.
CRACK_META = dict(label="crack", tile_size=64, tile_overlap=16, iterations=0,
                  cam_threshold=0.3, closing_size=3, min_area=8,
                  refinement={"evidence": "dark-lines", "dilation": 8, "kernel_px": 15,
                              "k": 1.5})


def crack_scene(width: int = 400, height: int = 96) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """Concrete with a long horizontal crack (row ~30, the whole width) and a short one
    (rows ~70, columns 40-110) well apart: (image, long crack mask, short crack mask)."""
    rng = np.random.default_rng(3)
    base = rng.normal(150, 6, (height, width))
    image = np.repeat(np.clip(base, 0, 255)[:, :, None], 3, axis=2).astype(np.uint8)
    long_crack = np.zeros((height, width), bool)
    for x in range(width):
        y = int(30 + 4 * np.sin(x / 25))
        long_crack[y : y + 3, x] = True
    short_crack = np.zeros((height, width), bool)
    short_crack[70:73, 40:110] = True
    image[long_crack | short_crack] = 50
    return image, long_crack, short_crack


@pytest.fixture(scope="module")
def crack_predictor(fitted_crack_model) -> DefectMapPredictor:
    return DefectMapPredictor(fitted_crack_model, WeightsMetadata(**CRACK_META), "cpu",
                              precision="fp32")


@pytest.fixture(scope="module")
def crack_weights(tmp_path_factory, fitted_crack_model) -> Path:
    """The fitted fixture classifier as the only weights of a function (a crack
    interactor, as interactors/crack.yaml deploys one)."""
    folder = tmp_path_factory.mktemp("interactor-weights")
    save_weights(fitted_crack_model, WeightsMetadata(**CRACK_META), folder / "crack.safetensors")
    return folder


# --------------------------------------------------------------------------- the mask


def test_a_click_follows_its_crack_past_the_window_and_leaves_the_other(crack_predictor):
    image, long_crack, short_crack = crack_scene()
    y = int(np.nonzero(long_crack[:, 60])[0].mean())
    result = interact(crack_predictor, image, Clicks(((60.0, float(y)),)))
    mask = result.full_mask(*long_crack.shape)
    assert result.source == "model"
    assert result.windows > 1  # the first window (64 px) is far shorter than the crack
    assert mask[:, 300:].any(), "the answer stops near the first window"
    near = np.zeros_like(long_crack)
    near[max(0, y - 8) : y + 12] = True
    recall = (mask & long_crack).sum() / long_crack.sum()
    assert recall > 0.6, recall
    assert (mask & ~near).sum() <= 0.05 * mask.sum()  # on the crack's band only
    assert not (mask & short_crack).any()


def test_a_click_off_any_evidence_still_gets_an_answer(crack_predictor):
    image, long_crack, short_crack = crack_scene()
    result = interact(crack_predictor, image, Clicks(((300.0, 85.0),)))
    mask = result.full_mask(*image.shape[:2])
    assert result.area > 0
    ys, xs = np.nonzero(mask)  # next to the click (a disc, or the noise's darkest speck)
    assert np.hypot(xs - 300, ys - 85).min() <= 18
    assert not (mask & (long_crack | short_crack)).any()


def test_points_outside_the_frame_are_refused_by_name():
    options = InteractOptions.from_body({"pos_points": [[10, 10]], "neg_points": [[500, 3]]})
    with pytest.raises(OptionError) as caught:
        options.check_frame(400, 96)
    assert caught.value.key == "neg_points" and "400 x 96" in caught.value.message


def test_select_object_takes_the_clicked_blob_and_negatives_erase_locally():
    candidates = np.zeros((60, 200), bool)
    candidates[10:20, 10:190] = True  # a long bar
    candidates[40:50, 10:30] = True  # another object
    settings = InteractSettings(snap_px=4, group_px=2, erase_px=20)
    obj = select_object(candidates, [(15, 15)], (), settings)
    assert obj[15, 180] and not obj[45, 15]
    erased = erase_negatives(obj, [(15, 15)], [(100, 15)], settings)
    assert erased[15, 15] and not erased[15, 100]
    # the far end is cut off by the eraser and no longer reached by the positive click
    assert not erased[15, 180]
    assert erased[15, 60]  # the positive side up to the eraser stays
    assert select_object(candidates, [(100, 55)], (), settings) is None  # nothing near


def test_a_region_joins_evidence_pieces_and_a_negative_takes_a_piece_away():
    candidates = np.zeros((60, 200), bool)
    candidates[10:30, 10:40] = True  # the clicked piece of a patch
    candidates[10:30, 70:100] = True  # another piece of the same patch, 30 px away
    candidates[10:30, 160:190] = True  # a piece outside the region
    region = np.zeros_like(candidates)
    region[5:35, 5:110] = True
    settings = InteractSettings(snap_px=4, group_px=2, erase_px=20)
    alone = select_object(candidates, [(20, 20)], (), settings)
    assert alone[20, 20] and not alone[20, 80]
    joined = select_object(candidates, [(20, 20)], (), settings, joins=region)
    assert joined[20, 20] and joined[20, 80] and not joined[20, 170]
    # a negative click on the other piece says "not this one": all of it goes, not 20 px
    kept = erase_negatives(joined, [(20, 20)], [(95, 20)], settings, joins=region)
    assert kept[20, 20] and not kept[:, 70:100].any()


class _FixedMap:
    """A classifier whose map of every window is the one given (``model_candidates`` asks
    only for ``metadata`` and ``predict(window, iterations).cam_map``)."""

    def __init__(self, cam_map: np.ndarray) -> None:
        self.metadata = WeightsMetadata(label="rust", tile_size=64, tile_overlap=16,
                                        iterations=0, closing_size=0)
        self.cam_map = cam_map

    def predict(self, window, iterations=None):
        return SimpleNamespace(cam_map=self.cam_map)


def test_the_region_rules_cut_or_widen_the_evidence():
    """``cut`` keeps the evidence inside the map's region; ``union`` also keeps the region
    itself (a pixel head's outline where the colour rule sees nothing)."""
    image = np.full((40, 100, 3), 150, np.uint8)
    image[10:30, 10:40] = (180, 70, 20)  # rust colour: the evidence
    cam = np.zeros((40, 100), np.float32)
    cam[10:30, 30:70] = 1.0  # the map: overlaps the evidence at columns 30-39
    masks = {}
    for region in ("cut", "union"):
        settings = InteractSettings(region=region, evidence="rust-colour", dilation=0,
                                    cam_threshold=0.5)
        kind, mask, _ = model_candidates(_FixedMap(cam), settings)(image)[0]
        assert kind == "model"
        masks[region] = mask
    assert masks["cut"][20, 35] and not masks["cut"][20, 20] and not masks["cut"][20, 60]
    assert masks["union"][20, 35] and masks["union"][20, 60] and not masks["union"][20, 20]
    with pytest.raises(ValueError, match="unknown region"):
        InteractSettings(region="everything")


def test_click_share_lowers_the_threshold_to_the_map_at_the_click():
    """A map the model is unsure of (0.3, below the 0.5 threshold) still outlines the clicked
    defect with ``click_share`` 0.5: the threshold falls to half the map at the least
    confident click, never above the threshold itself nor below half of it."""
    image = np.full((40, 100, 3), 150, np.uint8)
    cam = np.full((40, 100), 0.001, np.float32)
    cam[10:30, 10:40] = 0.3  # the clicked blob, weakly
    cam[10:30, 60:75] = 0.2  # a fainter one
    cam[10:30, 80:95] = 0.8  # a confident one
    plain = InteractSettings(evidence="none", cam_threshold=0.5)
    shared = InteractSettings(evidence="none", cam_threshold=0.5, click_share=0.5)

    def region(settings, clicks):
        return model_candidates(_FixedMap(cam), settings)(image, clicks)[0][1]

    assert not region(plain, [(20, 20)])[20, 20]
    mask = region(shared, [(20, 20)])  # threshold 0.25
    assert mask[20, 20] and mask[20, 35] and not mask[20, 65] and not mask[5, 50]
    mask = region(shared, [(87, 20)])  # a confident click: threshold 0.4
    assert mask[20, 87] and not mask[20, 20]
    mask = region(shared, [(87, 20), (20, 20)])  # the least confident click counts
    assert mask[20, 87] and mask[20, 20]
    mask = region(shared, [(50, 5)])  # a click where the map is near zero: the floor, 0.25
    assert not mask[5, 50] and not mask[20, 65] and mask[20, 20]
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="click_share"):
            InteractSettings(click_share=bad)


def test_fill_closes_the_answer_and_the_window_stops_at_max_side():
    image = np.zeros((100, 1000, 3), np.uint8)
    ring = np.zeros((100, 1000), np.uint8)
    cv2.circle(ring, (50, 50), 20, 1, thickness=3)
    line = np.zeros((100, 1000), bool)
    line[48:52, :] = True

    def candidates(window, _):
        return [("evidence", ring[: window.shape[0], : window.shape[1]].astype(bool), None)]

    plain = click_mask(image, Clicks(((50.0, 31.0),)), candidates, "spalling",
                       settings=InteractSettings(window=100))
    full = click_mask(image, Clicks(((50.0, 31.0),)), candidates, "spalling",
                      settings=InteractSettings(window=100, fill=8))
    assert not plain.full_mask(100, 1000)[50, 50] and full.full_mask(100, 1000)[50, 50]

    def running_line(window, _):  # an object that runs through every window it is given
        return [("evidence", np.ones(window.shape[:2], bool), None)]

    free = click_mask(image, Clicks(((500.0, 50.0),)), running_line, "rust",
                      settings=InteractSettings(window=100))
    capped = click_mask(image, Clicks(((500.0, 50.0),)), running_line, "rust",
                        settings=InteractSettings(window=100, max_side=300))
    assert free.window[2] - free.window[0] > 300
    assert capped.window[2] - capped.window[0] == 300 and capped.windows <= 3


def test_the_weights_carry_the_interactor_settings(fitted_crack_model, tmp_path):
    image, long_crack, _ = crack_scene()
    y = float(np.nonzero(long_crack[:, 60])[0].mean())
    meta = WeightsMetadata(**CRACK_META, interact={"max_grows": 0})
    predictor = DefectMapPredictor(fitted_crack_model, meta, "cpu", precision="fp32")
    result = interact(predictor, image, Clicks(((60.0, y),)))
    assert result.windows == 1 and not result.full_mask(*long_crack.shape)[:, 300:].any()
    bad = tmp_path / "crack.safetensors"
    save_weights(fitted_crack_model, WeightsMetadata(**CRACK_META), bad)
    sidecar = json.loads(bad.with_suffix(".json").read_text())
    sidecar["interact"] = {"region": "everything"}
    bad.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="interact.*region"):
        read_metadata(bad)
    with pytest.raises(ValueError, match="unknown interact settings"):
        InteractSettings.from_dict({"dilate": 3})


def test_a_click_takes_the_interactors_own_steps_not_the_detectors(fitted_crack_model,
                                                                     tmp_path):
    """Weights that recommend AdvCAM steps to the detector may answer a click with fewer
    (sidecar ``interact.iterations``); a request's own ``iterations`` still wins."""
    image, long_crack, _ = crack_scene()
    y = float(np.nonzero(long_crack[:, 60])[0].mean())
    log = ProposalLog(tmp_path / "log.sqlite")
    steps = {}
    for interact_steps in (None, 0):
        meta = WeightsMetadata(**{**CRACK_META, "iterations": 1},
                               interact={"max_grows": 0, "iterations": interact_steps})
        proposer = DefectProposer([DefectMapPredictor(fitted_crack_model, meta, "cpu",
                                                      precision="fp32")])
        service = InteractorService(proposer, log=log)
        for asked in (None, 1):
            service.interact(image, InteractOptions(((60.0, y),), iterations=asked))
            steps[interact_steps, asked] = read_log(tmp_path / "log.sqlite")[-1].params[
                "iterations"]
    assert steps == {(None, None): 1, (None, 1): 1, (0, None): 0, (0, 1): 1}
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        InteractSettings(iterations=-1)


# --------------------------------------------------------------------------- the face


@pytest.fixture(scope="module")
def interactor(tmp_path_factory, crack_weights):
    """(interactor_main module, platform, log path), init_context run once."""
    log_db = tmp_path_factory.mktemp("interactor-log") / "log.sqlite"
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import interactor_main

    with environment(DEFECTCAM_WEIGHTS=str(crack_weights / "crack.safetensors"),
                     DEFECTCAM_DEVICE="cpu", DEFECTCAM_LOG_DB=str(log_db),
                     DEFECTCAM_MAX_PIXELS="4000000"):
        platform = nuclio_sdk.test.Platform()
        platform.call_handler(interactor_main.handler, nuclio_sdk.Event(body={}))
    return interactor_main, platform, log_db


def call(interactor, body) -> tuple[int, dict]:
    module, platform, _ = interactor
    response = platform.call_handler(module.handler, nuclio_sdk.Event(body=body))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def scene_b64() -> tuple[str, np.ndarray]:
    image, long_crack, _ = crack_scene()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode(), long_crack


def test_cvat_request_gets_the_answer_cvat_ui_takes_and_is_logged(interactor):
    image, long_crack = scene_b64()
    y = float(np.nonzero(long_crack[:, 200])[0].mean())
    # exactly what CVAT's lambda_manager sends an interactor
    body = {"image": image, "pos_points": [[200, y]], "neg_points": [], "obj_bbox": None}
    status, answer = call(interactor, body)
    assert status == 200, answer
    assert set(answer) == {"mask", "bounds", "points"}
    x1, y1, x2, y2 = answer["bounds"]
    mask = np.asarray(answer["mask"])
    # cvat-ui: rle = mask2Rle(mask.flat()) + bounds, the bounds inclusive
    assert mask.shape == (y2 - y1 + 1, x2 - x1 + 1)
    assert set(np.unique(mask)) <= {0, 1} and mask.any()
    assert 0 <= x1 <= x2 < 400 and 0 <= y1 <= y2 < 96
    full = np.zeros((96, 400), bool)
    full[y1 : y2 + 1, x1 : x2 + 1] = mask > 0
    assert (full & long_crack).sum() > 0.5 * long_crack.sum()
    points = np.asarray(answer["points"])
    assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
    assert (points[:, 0] >= x1 - 1).all() and (points[:, 0] <= x2 + 1).all()

    logged = [r for r in read_log(interactor[2]) if r.is_interaction]
    assert logged, "the interaction is not in the log"
    request = logged[-1]
    assert request.params["label"] == "crack"
    assert request.params["pos_points"] == [[200.0, y]]
    assert request.params["neg_points"] == []
    (proposal,) = request.proposals
    assert proposal.kind == "mask" and proposal.label == "crack"
    assert (proposal.region(96, 400) == full).all()


def test_negative_point_shrinks_the_answer(interactor):
    image, long_crack = scene_b64()
    y = float(np.nonzero(long_crack[:, 200])[0].mean())
    y_neg = float(np.nonzero(long_crack[:, 330])[0].mean())
    _, one = call(interactor, {"image": image, "pos_points": [[200, y]], "neg_points": []})
    status, two = call(interactor, {"image": image, "pos_points": [[200, y]],
                                    "neg_points": [[330, y_neg]]})
    assert status == 200
    assert two["bounds"][2] < one["bounds"][2]  # the crack beyond the negative is left out
    assert two["bounds"][0] <= 200 <= two["bounds"][2]


BAD_INTERACTIONS = [
    ({"image": "SCENE"}, "pos_points", "missing 'pos_points'"),
    ({"image": "SCENE", "pos_points": []}, "pos_points", "'pos_points' is empty"),
    ({"image": "SCENE", "pos_points": "10,10"}, "pos_points", "list of [x, y] points"),
    ({"image": "SCENE", "pos_points": [[10, "a"]]}, "pos_points", "number pairs"),
    ({"image": "SCENE", "pos_points": [[401, 10]]}, "pos_points",
     "'pos_points' point [401, 10] is outside the 400 x 96 frame"),
    ({"image": "SCENE", "pos_points": [[10, 10]], "neg_points": [[-1, 5]]}, "neg_points",
     "outside the 400 x 96 frame"),
    ({"image": "SCENE", "pos_points": [[10, 10]], "label": "rust"}, "label",
     "label 'rust' has no weights in this function; it answers ['crack']"),
    ({"image": "SCENE", "pos_points": [[10, 10]], "obj_bbox": [[5, 5]]}, "obj_bbox",
     "'obj_bbox' must be null or [[x1, y1], [x2, y2]]"),
    ({"image": "SCENE", "pos_points": [[10, 10]], "iterations": 99}, "iterations",
     "'iterations' must be between 0 and"),
    ({"pos_points": [[10, 10]]}, "image", "missing 'image'"),
]


@pytest.mark.parametrize(("body", "key", "message"), BAD_INTERACTIONS)
def test_bad_input_is_a_400_naming_the_key(interactor, body, key, message):
    image, _ = scene_b64()
    body = {k: (image if v == "SCENE" else v) for k, v in body.items()}
    status, answer = call(interactor, body)
    assert status == 400, answer
    assert answer["key"] == key
    assert message in answer["error"]


def test_transport_errors_and_the_worker_keeps_serving(interactor):
    for body, status, message in BAD_REQUESTS[:7]:
        got, answer = call(interactor, materialise(body))
        assert got == status and message in answer["error"]
    image, long_crack = scene_b64()
    y = float(np.nonzero(long_crack[:, 100])[0].mean())
    status, answer = call(interactor, {"image": image, "pos_points": [[100, y]]})
    assert status == 200 and np.asarray(answer["mask"]).any()


def test_options_contract_limits_and_label():
    limits = Limits(labels=("crack",), max_iterations=2)
    options = InteractOptions.from_body({"pos_points": [[1, 2]], "obj_bbox": [[0, 0], [5, 6]],
                                         "iterations": 1, "name": "a.jpg"}, limits)
    assert options.pos_points == ((1.0, 2.0),) and options.obj_bbox == (0.0, 0.0, 5.0, 6.0)
    assert options.to_log()["obj_bbox"] == [0.0, 0.0, 5.0, 6.0]
    with pytest.raises(OptionError, match="between 0 and 2"):
        InteractOptions.from_body({"pos_points": [[1, 2]], "iterations": 3}, limits)
    with pytest.raises(OptionError, match="at most 100"):
        InteractOptions.from_body({"pos_points": [[1, 2]] * 101}, limits)


# --------------------------------------------------------------------------- yaml files


def test_one_interactor_per_defect_as_cvat_reads_them():
    assert [p.name for p in INTERACTOR_FILES] == [
        "crack-gpu.yaml", "crack.yaml", "rust-gpu.yaml", "rust.yaml", "spalling-gpu.yaml",
        "spalling.yaml"]
    names = set()
    for path in INTERACTOR_FILES:
        data = yaml.safe_load(path.read_text())
        defect = path.stem.removesuffix("-gpu")
        gpu = path.stem.endswith("-gpu")
        meta = data["metadata"]["annotations"]
        assert meta["type"] == "interactor" and int(meta["version"]) == 2
        assert int(meta["min_pos_points"]) == 1 and int(meta["min_neg_points"]) == 0
        assert meta["name"] == f"defectcam {defect} (click)" and meta["help_message"]
        assert data["metadata"]["name"] == f"defectcam-{defect}-click-{'gpu' if gpu else 'cpu'}"
        names.add(data["metadata"]["name"])
        assert data["spec"]["description"] and data["spec"]["handler"] == \
            "interactor_main:handler"
        env = {e["name"]: str(e["value"]) for e in data["spec"]["env"]}
        assert env["DEFECTCAM_WEIGHTS"] == f"/opt/defectcam/weights/{defect}.safetensors"
        assert env["DEFECTCAM_DEVICE"] == ("cuda" if gpu else "cpu")
        assert ("resources" in data["spec"]) == gpu
        assert data["spec"]["build"]["baseImage"] == f"defectcam-base:{'gpu' if gpu else 'cpu'}"
    assert len(names) == 6
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import interactor_main  # the handler module the yaml files name

    assert callable(interactor_main.handler) and callable(interactor_main.init_context)
