"""main.handler through nuclio_sdk's own test platform, on real photos and bad input."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import sys
from pathlib import Path

import nuclio_sdk
import nuclio_sdk.logger
import nuclio_sdk.test
import numpy as np
import pytest
from PIL import Image

from defectcam.core.postprocess import mask_to_proposals

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import (  # noqa: E402
    BAD_REQUESTS,
    LOOSE,
    check_shapes,
    encode_image,
    environment,
    file_b64,
    load_main,
    materialise,
    small_png,
    write_untrained_weights,
)


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """(main module, platform) with init_context run once on seeded untrained weights."""
    weights = write_untrained_weights(tmp_path_factory.mktemp("weights"))
    with environment(DEFECTCAM_WEIGHTS=str(weights), DEFECTCAM_DEVICE="cpu",
                     DEFECTCAM_MAX_PIXELS="4000000"):
        main = load_main("handler_tests")
        platform = nuclio_sdk.test.Platform()
        platform.call_handler(main.handler, nuclio_sdk.Event(body={}))  # runs init_context
        yield main, platform


def call(function, body):
    main, platform = function
    response = platform.call_handler(main.handler, nuclio_sdk.Event(body=body))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def context_of(function):
    """The worker context the mock platform made (and init_context filled) for main.handler."""
    main, platform = function
    return platform._get_handler_context(main.handler)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, Path]:
    return {
        "jpeg": sorted((shared_data / "crack" / "crackforest").rglob("*.jpg"))[0],
        "deepcrack": sorted((shared_data / "crack" / "deepcrack").rglob("*.jpg"))[0],
        "rust_large": _first_of_size(shared_data / "rust" / "corrosion", 1600 * 1200),
    }


def _first_of_size(folder: Path, min_pixels: int) -> Path:
    for path in sorted(folder.rglob("*.jpg")):
        with Image.open(path) as image:
            if image.width * image.height >= min_pixels:
                return path
    pytest.skip(f"no photo of {min_pixels} pixels in {folder}")


@pytest.mark.parametrize("output", ["polygon", "mask"])
def test_real_jpeg(function, photos, output: str) -> None:
    path = photos["jpeg"]
    body = {"image": file_b64(path), "output": output, "labels": ["crack"], **LOOSE}
    status, shapes = call(function, body)
    assert status == 200
    with Image.open(path) as image:
        check_shapes(shapes, image.width, image.height, output)


def test_real_photo_as_png(function, photos) -> None:
    with Image.open(photos["deepcrack"]) as image:
        image = image.convert("RGB")
    status, shapes = call(
        function, {"image": encode_image(image, "PNG"), "output": "mask", **LOOSE}
    )
    assert status == 200
    check_shapes(shapes, image.width, image.height, "mask")


@pytest.mark.slow
def test_multi_megapixel_photo(function, photos) -> None:
    path = photos["rust_large"]
    body = {"image": file_b64(path), "labels": ["rust"], "output": "mask", **LOOSE}
    status, shapes = call(function, body)
    assert status == 200
    with Image.open(path) as image:
        assert image.width * image.height >= 1_920_000
        check_shapes(shapes, image.width, image.height, "mask")
    assert {s["label"] for s in shapes} <= {"rust"}


def test_cvat_request_shape_only_image(function, photos) -> None:
    """What CVAT sends: image (and sometimes threshold), nothing else."""
    status, shapes = call(function, {"image": file_b64(photos["jpeg"])})
    assert status == 200 and isinstance(shapes, list)
    body = {"image": file_b64(photos["jpeg"]), "threshold": 0.9, "labels": ["spalling"]}
    status, shapes = call(function, body)
    assert status == 200
    assert all(float(s["confidence"]) >= 0.9 for s in shapes)


@pytest.mark.parametrize("encode", [lambda s: s, lambda s: s.encode("utf-8")])
def test_body_as_json_text_or_bytes(function, photos, encode) -> None:
    body = json.dumps({"image": file_b64(photos["jpeg"]), "labels": ["crack"], **LOOSE})
    status, shapes = call(function, encode(body))
    assert status == 200
    with Image.open(photos["jpeg"]) as image:
        check_shapes(shapes, image.width, image.height)


@pytest.mark.parametrize(("body", "status", "needle"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_problem(function, body, status, needle) -> None:
    got, payload = call(function, materialise(body))
    assert got == status
    assert needle in payload["error"]


def test_pixel_limit_gives_413_and_worker_keeps_serving(function) -> None:
    settings = context_of(function).user_data.settings
    side = int(settings.max_pixels**0.5) + 8
    header = Image.new("L", (side, side))  # zeros compress to a tiny PNG
    status, payload = call(function, {"image": encode_image(header)})
    assert status == 413 and "too large" in payload["error"]
    status, shapes = call(function, {"image": small_png(), "iterations": 0})
    assert status == 200 and isinstance(shapes, list)


@contextlib.contextmanager
def captured_log(function):
    """What the handler logs through ``context.logger`` while the block runs."""
    context = context_of(function)
    original, stream = context.logger, io.StringIO()
    logger = nuclio_sdk.Logger(logging.DEBUG, "captured")
    logger.set_handler("default", stream, nuclio_sdk.logger.HumanReadableFormatter())
    context.logger = logger
    try:
        yield stream
    finally:
        context.logger = original


def test_server_error_is_short_and_logged(function) -> None:
    model = context_of(function).user_data.model
    original = model.infer

    def broken(*args, **kwargs):
        raise RuntimeError("weights exploded")

    model.infer = broken
    try:
        with captured_log(function) as log:
            status, payload = call(function, {"image": small_png()})
    finally:
        model.infer = original
    assert status == 500
    assert "RuntimeError" in payload["error"] and "Traceback" not in payload["error"]
    assert "weights exploded" not in payload["error"]
    assert "Traceback" in log.getvalue() and "weights exploded" in log.getvalue()


def test_client_errors_log_no_traceback(function) -> None:
    with captured_log(function) as log:
        for body, _status, _needle in BAD_REQUESTS:
            call(function, materialise(body))
    assert log.getvalue().count("rejected request") == len(BAD_REQUESTS)
    assert "Traceback" not in log.getvalue()


def test_exif_rotated_photo_reaches_the_model_upright(function) -> None:
    context = context_of(function)
    model = context.user_data.model
    seen = []
    original = model.proposer.propose

    def recording(image, **kwargs):
        seen.append(image.shape)
        return original(image, **kwargs)

    model.proposer.propose = recording
    try:
        image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 64, 3), np.uint8))
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90 degrees: displayed 40 wide, 64 high
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", exif=exif.tobytes())
        body = {"image": base64.b64encode(buffer.getvalue()).decode(), **LOOSE}
        status, shapes = call(function, body)
    finally:
        model.proposer.propose = original
    assert status == 200 and seen == [(64, 40, 3)]
    check_shapes(shapes, 40, 64)


class _FixedProposer:
    """Stands in for DefectProposer with proposals from a known mask."""

    labels = ("crack", "spalling", "rust")

    def __init__(self) -> None:
        mask = np.zeros((60, 80), bool)
        mask[10:30, 5:25] = True
        mask[15:20, 10:15] = False  # a hole: the polygon covers it, the mask does not
        mask[40:42, 30:75] = True  # a thin crack
        mask[50, 2] = True  # a lone pixel: the polygon is its pixel square
        self.proposals = mask_to_proposals(mask, "crack", min_area=1)
        for p, confidence in zip(self.proposals, (0.9, 0.6, 0.2), strict=False):
            p.confidence = confidence

    def propose(self, image, min_confidence=0.0, **kwargs):
        return [p for p in self.proposals if p.confidence >= min_confidence]


@pytest.mark.parametrize("output", ["polygon", "mask"])
def test_model_handler_shapes_follow_the_contract(output: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from model_handler import ModelHandler

    handler = ModelHandler.__new__(ModelHandler)
    handler.proposer, handler.labels = _FixedProposer(), _FixedProposer.labels
    shapes = handler.infer(np.zeros((60, 80, 3), np.uint8), threshold=0.0, output=output)
    assert len(shapes) == 3
    check_shapes(shapes, 80, 60, output)
    assert all(isinstance(s["confidence"], str) for s in shapes)
    kept = handler.infer(np.zeros((60, 80, 3), np.uint8), threshold=0.5, output=output)
    assert sorted(float(s["confidence"]) for s in kept) == [0.6, 0.9]
