"""defectcam.cvat_function: the cvat-sdk native function, checked with cvat-sdk/cvat-cli's own code.

Random (untrained) weights propose arbitrary regions: only validity, the settings' effect and
equality with the Nuclio handler are asserted, never what is detected. The request options'
own cases are tests/test_options.py's; every face answering alike, tests/test_contract.py's.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import attrs
import cvat_cli.__main__ as cvat_cli_main
import cvat_sdk.auto_annotation as cvataa
import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import PIL.Image
import pytest
import yaml
from cvat_cli._internal.agent_driver_detection import AgentDetectionFunctionDriver
from cvat_cli._internal.common import FunctionLoader
from cvat_cli._internal.parsers import parse_function_parameter
from cvat_sdk import models
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.core.auth import ClientAuthParameters
from cvat_sdk.masks import decode_mask, encode_mask

import defectcam.cvat_function as cf
from defectcam.config import WEIGHTS_ENV, resolve_weights
from defectcam.core.cvat import decode_cvat_mask
from defectcam.core.labels import DEFECT_LABELS, LABEL_NAMES
from defectcam.core.options import ProposeOptions
from defectcam.feedback import read_log
from tests.helpers import save_untrained

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import (  # noqa: E402
    REPO,
    check_shapes,
    environment,
    file_b64,
    import_main,
)

MODULE = "defectcam.cvat_function"
NAME_OF_ID = {label.id: label.name for label in DEFECT_LABELS}
# Loose settings so that untrained weights propose something on a real photo.
LOOSE = {"iterations": 0, "cam_threshold": 0.01, "device": "cpu"}


def context(conf_threshold: float | None = None, conv_mask_to_poly: bool = False):
    """The context object cvat-sdk's driver (and cvat-cli's agent) hands to detect."""
    return _DetectionFunctionContextImpl(
        frame_name="frame.jpg", conf_threshold=conf_threshold, conv_mask_to_poly=conv_mask_to_poly
    )


def dataset_labels(label_type: str = "any") -> list:
    """Task labels as cvat-sdk's driver reads them (name, id, type, sublabels, attributes)."""
    return [
        SimpleNamespace(name=name, id=100 + i, type=label_type, sublabels=[], attributes=[])
        for i, name in enumerate(LABEL_NAMES)
    ]


def validate_with_driver(function, annotations, label_type: str, conv_mask_to_poly: bool):
    """cvat-sdk's own checks of detect's output (raises BadFunctionError on a violation)."""
    mapper = _AnnotationMapper(
        logging.getLogger("test"),
        function.spec.labels,
        dataset_labels(label_type),
        allow_unmatched_labels=False,
        conv_mask_to_poly=conv_mask_to_poly,
    )
    # The driver remaps the objects in place: work on copies, the memoised results stay intact.
    return mapper.validate_and_remap(copy.deepcopy(annotations), 5)


def cli_parameters(*items: str) -> dict:
    """``-p`` values parsed exactly as cvat-cli parses them."""
    return dict(parse_function_parameter(item) for item in items)


@pytest.fixture(scope="module")
def weights(untrained_weights) -> Path:
    return untrained_weights


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> Path:
    return sorted((shared_data / "concrete" / "phinet").rglob("*.jpg"))[0]  # 224x224


@pytest.fixture(scope="module")
def function(weights):
    return cf.create(weights=str(weights), **LOOSE)


@pytest.fixture(scope="module")
def detections(function, photo):
    """detect() on the photo, memoised per (conf_threshold, conv_mask_to_poly): CPU is scarce."""
    cache: dict = {}

    def run(conf: float | None = None, poly: bool = False):
        if (conf, poly) not in cache:
            with PIL.Image.open(photo) as image:
                cache[conf, poly] = function.detect(context(conf, poly), image)
        return cache[conf, poly]

    return run


# --- spec and parameters ---------------------------------------------------------------------


def test_spec_matches_the_nuclio_spec() -> None:
    nuclio = yaml.safe_load((REPO / "function.yaml").read_text())
    nuclio_spec = json.loads(nuclio["metadata"]["annotations"]["spec"])
    assert [(s.id, s.name) for s in cf.spec.labels] == [(s["id"], s["name"]) for s in nuclio_spec]
    assert {s.type for s in cf.spec.labels} == {"mask"}
    cvataa.DetectionFunctionSpec(labels=list(cf.spec.labels))  # cvat-sdk's own validation


def test_cli_parameters_reach_create(weights) -> None:
    params = cli_parameters(
        "iterations=int:2",
        f"weights=str:{weights}",
        "cam_threshold=float:0.2",
        "labels=str:crack, rust",
        "device=str:cpu",
        "screen=bool:true",
    )
    function = FunctionLoader(MODULE, None, params).load()  # what cvat-cli does with them
    assert function.settings.weights == weights
    assert function.settings.settings.device == "cpu"
    assert function.settings.settings.origins["weights"] == "-p"
    assert function.settings.options == ProposeOptions(
        iterations=2, cam_threshold=0.2, labels=("crack", "rust"), screen=True)
    assert [(s.id, s.name) for s in function.spec.labels] == [(1, "crack"), (3, "rust")]
    frame = cf.options_for_frame(function.settings.options, 0.3, False, "frame_1.jpg")
    assert (frame.min_confidence, frame.output, frame.name) == (0.3, "mask", "frame_1.jpg")
    assert frame.propose_kwargs() == {
        "labels": ["crack", "rust"], "iterations": 2, "cam_threshold": 0.2, "screen": True}


def test_no_parameters_uses_env_weights(weights, monkeypatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    function = FunctionLoader(MODULE, None, {}).load()
    assert function.settings.weights == weights
    assert function.settings.options == ProposeOptions()
    assert [s.name for s in function.spec.labels] == list(LABEL_NAMES)
    monkeypatch.delenv(WEIGHTS_ENV)
    assert resolve_weights() == REPO / "weights"


def test_function_file_route(weights) -> None:
    """`--function-file defectcam/faces/cvat_function.py` loads the same function."""
    loader = FunctionLoader(None, Path(cf.__file__), {"weights": str(weights), "labels": "rust"})
    function = loader.load()
    assert [(s.id, s.name, s.type) for s in function.spec.labels] == [(3, "rust", "mask")]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["iterations=str:2"], "-p iterations=int:"),
        (["iterations=bool:true"], "must be given as int"),
        (["iterations=int:99"], "parameter 'iterations' must be between 0 and 32, got 99"),
        (["cam_threshold=float:1.5"], "parameter 'cam_threshold' must be in (0, 1)"),
        (["labels=str:crack,dust"], "unknown label(s) ['dust'] in parameter 'labels'"),
        (["labels=str: , "], "parameter 'labels' is empty"),
        (["precision=str:fp8"], "parameter 'precision' must be one of"),
        (["screen=str:yes"], "-p screen=bool:"),
        (["iteration=int:2"], "unknown parameter(s) ['iteration']"),
        (["weights=str:/nonexistent/defectcam"], "pass -p weights=str:DIR"),
    ],
)
def test_bad_parameters_say_what_is_wrong(weights, items, message) -> None:
    params = {"weights": str(weights), **cli_parameters(*items)}
    with pytest.raises(cf.FunctionParameterError) as info:
        FunctionLoader(MODULE, None, params).load()
    assert message in str(info.value)


def test_labels_missing_from_weights(tmp_path) -> None:
    only_crack = save_untrained(tmp_path / "crack", ("crack",))
    with pytest.raises(cf.FunctionParameterError, match=r"\['rust'\] were asked for"):
        cf.create(weights=str(only_crack), labels="crack,rust")


# --- masks and polygons (known proposals, no model) --------------------------------------------


@pytest.fixture
def fixed(monkeypatch, weights, fixed_service, fixed_proposer):
    monkeypatch.setattr(cf, "load_service", lambda settings: fixed_service)
    return cf.create(weights=str(weights)), fixed_proposer


def test_masks_decode_to_the_proposals_pixels(fixed) -> None:
    function, proposer = fixed
    shapes = function.detect(context(0.0), PIL.Image.new("RGB", (80, 60)))
    assert [s.type.value for s in shapes] == ["mask"] * 4
    for shape, proposal in zip(shapes, proposer.proposals, strict=True):
        assert NAME_OF_ID[shape.label_id] == proposal.label
        full = proposal.full_mask(60, 80)
        decoded = decode_mask(shape.points, image_width=80, image_height=60)
        np.testing.assert_array_equal(decoded, full)
        x1, y1, x2, y2 = proposal.box
        assert shape.points == encode_mask(full, bbox=[x1, y1, x2 + 1, y2 + 1])
        assert shape.points[-4:] == [x1, y1, x2, y2]  # CVAT's inclusive box
    validate_with_driver(function, shapes, "mask", conv_mask_to_poly=False)


def test_polygons_when_asked(fixed) -> None:
    function, proposer = fixed
    shapes = function.detect(context(0.0, True), PIL.Image.new("RGB", (80, 60)))
    assert [s.type.value for s in shapes] == ["polygon"] * 4
    for shape, proposal in zip(shapes, proposer.proposals, strict=True):
        expected = np.round(proposal.polygon.reshape(-1), 2)
        np.testing.assert_allclose(shape.points, expected)
        assert len(shape.points) >= 6
    validate_with_driver(function, shapes, "polygon", conv_mask_to_poly=True)


@pytest.mark.parametrize(
    ("conf", "kept"), [(None, 2), (0.0, 4), (0.4, 3), (0.5, 2), (0.9, 1), (1.0, 0)]
)
def test_conf_threshold_filters_like_the_nuclio_threshold(fixed, conf, kept) -> None:
    """``conf_threshold`` is the Nuclio ``threshold``: none sent means the same 0.5."""
    function, proposer = fixed
    shapes = function.detect(context(conf), PIL.Image.new("RGB", (80, 60)))
    assert len(shapes) == kept
    assert len(proposer.calls) == 1


def test_detect_converts_the_frame_to_rgb(fixed) -> None:
    function, _ = fixed
    for mode in ("L", "RGBA", "P", "I;16", "CMYK"):
        function.detect(context(), PIL.Image.new(mode, (80, 60)))
    rgb = cf.pil_to_rgb(PIL.Image.new("LA", (8, 9), (200, 10)))
    assert rgb.shape == (9, 8, 3) and rgb.dtype == np.uint8 and (rgb == 200).all()


def test_module_is_a_function_itself(monkeypatch, weights, fixed_service) -> None:
    """Without create(): module-level spec + detect (cvataa.annotate_task(client, task, module))."""
    monkeypatch.setattr(cf, "load_service", lambda settings: fixed_service)
    monkeypatch.setattr(cf, "_module_function", None)
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    shapes = cf.detect(context(0.5, True), PIL.Image.new("RGB", (80, 60)))
    assert len(shapes) == 2
    validate_with_driver(cf, shapes, "any", conv_mask_to_poly=True)


def test_polygon_task_labels_need_conv_mask_to_poly(function) -> None:
    """cvat-sdk's rule for a mask-typed function label on a polygon-typed task label."""
    with pytest.raises(cvataa.BadFunctionError, match="type 'mask' in the function"):
        validate_with_driver(function, [], "polygon", conv_mask_to_poly=False)
    validate_with_driver(function, [], "polygon", conv_mask_to_poly=True)


# --- real photos with the real proposer ------------------------------------------------------


@pytest.mark.parametrize("poly", [False, True])
def test_real_photo_gives_valid_requests(function, detections, photo, poly) -> None:
    shapes = detections(0.0, poly)
    with PIL.Image.open(photo) as image:
        width, height = image.size
    assert shapes, "loose settings on this photo should propose something"
    for shape in shapes:
        assert isinstance(shape, models.LabeledShapeRequest)
        assert shape.frame == 0 and not hasattr(shape, "id") and not hasattr(shape, "source")
        assert shape.label_id in NAME_OF_ID
        if poly:
            assert shape.type.value == "polygon" and len(shape.points) >= 6
        else:
            assert shape.type.value == "mask"
            assert decode_mask(shape.points, image_width=width, image_height=height).any()
    tags, remapped = validate_with_driver(function, shapes, "any", conv_mask_to_poly=poly)
    assert tags == [] and len(remapped) == len(shapes)
    assert all(s.frame == 5 and s.source == "auto" for s in remapped)


@pytest.fixture(scope="module")
def proposals(function, photo):
    """The real proposer's own proposals for the photo (for their confidences)."""
    with PIL.Image.open(photo) as image:
        rgb = cf.pil_to_rgb(image)
    options = cf.options_for_frame(function.settings.options, 0.0, False, None)
    return function.service.proposer.propose_detailed(rgb, **options.propose_kwargs()).proposals


def test_real_photo_conf_threshold(detections, proposals) -> None:
    everything = detections(0.0)
    assert len(everything) == len(proposals)
    assert detections(1.0) == []
    confidences = sorted({p.confidence for p in proposals})
    if len(confidences) < 2:
        pytest.skip("untrained weights gave one confidence value on this photo")
    middle = (confidences[0] + confidences[1]) / 2
    expected = sum(p.confidence >= middle for p in proposals)
    assert 0 < len(detections(middle)) == expected < len(everything)


def test_every_frame_is_in_the_interaction_log(monkeypatch, tmp_path, weights, photo) -> None:
    """The cvat-sdk face logs through the same service as Nuclio, the frame's name as the
    file name (cvat-sdk hands pixels, not the file)."""
    monkeypatch.setenv("DEFECTCAM_LOG_DB", str(tmp_path / "log.sqlite"))
    function = cf.create(weights=str(weights), **LOOSE)
    with PIL.Image.open(photo) as image:
        shapes = function.detect(context(0.0), image)
    (request,) = read_log(tmp_path / "log.sqlite")
    assert request.file_name == "frame.jpg" and request.params["face"] == "cvat-sdk"
    assert request.params["output"] == "mask" and request.params["min_confidence"] == 0.0
    assert len(request.proposals) == len(shapes)


@pytest.fixture(scope="module")
def nuclio_handler(weights):
    """main.handler (the Nuclio face) on the same weights, through nuclio_sdk's test platform."""
    with environment(DEFECTCAM_WEIGHTS=str(weights), DEFECTCAM_DEVICE="cpu"):
        main = import_main()
        platform = nuclio_sdk.test.Platform()

        def call(body: dict):
            response = platform.call_handler(main.handler, nuclio_sdk.Event(body=body))
            assert response.status_code == 200, response.body
            return json.loads(response.body)

        yield call


def test_same_shapes_as_the_nuclio_function(nuclio_handler, detections, photo) -> None:
    """Same photo bytes and settings: the Nuclio answer and detect() describe the same shapes."""
    body = {
        "image": file_b64(photo),
        "threshold": 0.0,
        "output": "mask",
        "iterations": LOOSE["iterations"],
        "cam_threshold": LOOSE["cam_threshold"],
    }
    nuclio = nuclio_handler(body)
    with PIL.Image.open(photo) as image:
        width, height = image.size
    check_shapes(nuclio, width, height, "mask")
    polygons, masks = detections(0.0, True), detections(0.0, False)
    assert len(nuclio) == len(polygons) == len(masks) > 0
    for expected, polygon, mask in zip(nuclio, polygons, masks, strict=True):
        assert NAME_OF_ID[polygon.label_id] == NAME_OF_ID[mask.label_id] == expected["label"]
        assert list(polygon.points) == expected["points"]
        np.testing.assert_array_equal(
            decode_mask(mask.points, image_width=width, image_height=height),
            decode_cvat_mask(expected["mask"], height, width),
        )


# --- the cvat-cli commands themselves (CVAT server replaced by fakes) -------------------------


class _FakeClient:
    """Enough of cvat_sdk.Client for cvat-cli's commands to run without a server."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("fake-cvat")
        self.posted: list[dict] = []
        self.api_client = SimpleNamespace(call_api=self._call_api)

    def _call_api(self, path, method, body=None, **kwargs):
        self.posted.append({"path": path, "method": method, "body": body})
        data = json.dumps({"id": 42, "name": body["name"], **body})
        return None, SimpleNamespace(data=data.encode())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def run_cvat_cli(monkeypatch, args: list[str]) -> _FakeClient:
    client = _FakeClient()

    def build_client(parsed_args, logger):
        # The real build_client consumes the authentication arguments; so must this one.
        for field in attrs.fields(ClientAuthParameters):
            delattr(parsed_args, field.name)
        return client

    monkeypatch.setattr(cvat_cli_main, "build_client", build_client)
    assert cvat_cli_main.main(args) == 0
    return client


def test_cvat_cli_task_auto_annotate(monkeypatch, weights, photo) -> None:
    """`cvat-cli task auto-annotate` as documented, with annotate_task replaced by a local loop
    that does what cvat-sdk's driver does for one frame (the photo)."""
    seen: dict = {}

    def annotate_task(client, task_id, function, *, conf_threshold, conv_mask_to_poly, **kw):
        mapper = _AnnotationMapper(
            client.logger,
            function.spec.labels,
            dataset_labels("polygon"),
            allow_unmatched_labels=kw["allow_unmatched_labels"],
            conv_mask_to_poly=conv_mask_to_poly,
        )
        with PIL.Image.open(photo) as image:
            annotations = function.detect(context(conf_threshold, conv_mask_to_poly), image)
        seen.update(
            task_id=task_id,
            function=function,
            conf_threshold=conf_threshold,
            shapes=mapper.validate_and_remap(annotations, 0)[1],
        )

    monkeypatch.setattr(cvataa, "annotate_task", annotate_task)
    run_cvat_cli(
        monkeypatch,
        [
            "task",
            "auto-annotate",
            "7",
            "--function-module",
            MODULE,
            "-p",
            "iterations=int:0",
            "-p",
            f"weights=str:{weights}",
            "-p",
            "labels=str:crack",
            "-p",
            "cam_threshold=float:0.01",
            "-p",
            "device=str:cpu",
            "--conf-threshold",
            "0",
            "--conv-mask-to-poly",
        ],
    )
    assert seen["task_id"] == 7 and seen["conf_threshold"] == 0.0
    assert seen["function"].settings.options.iterations == 0
    assert all(s.type.value == "polygon" for s in seen["shapes"])
    assert {s.label_id for s in seen["shapes"]} <= {100}  # the task's id of "crack"


def test_cvat_cli_function_create_native_and_agent_check(monkeypatch, weights) -> None:
    client = run_cvat_cli(
        monkeypatch,
        [
            "function",
            "create-native",
            "defectcam",
            "--function-module",
            MODULE,
            "-p",
            f"weights=str:{weights}",
        ],
    )
    (request,) = client.posted
    assert request["path"] == "/api/functions" and request["method"] == "POST"
    body = request["body"]
    assert body["provider"] == "native" and body["kind"] == "detector"
    assert body["labels_v2"] == [
        {"name": name, "attributes": [], "type": "mask"} for name in LABEL_NAMES
    ]
    # What `cvat-cli function run-agent` checks before serving: the loaded module still
    # matches the registered function.
    function = FunctionLoader(MODULE, None, {"weights": str(weights)}).load()
    driver = AgentDetectionFunctionDriver(None, None, function.spec)
    driver.validate_function_compatibility({"labels_v2": body["labels_v2"]})
