"""main.handler through nuclio_sdk's own test platform, on real photos and bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import pytest
from PIL import Image

from defectcam.utils.masks import mask_to_proposals

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import (  # noqa: E402
    check_shapes,
    encode_image,
    file_b64,
    load_main,
    write_untrained_weights,
)

# Untrained weights propose almost nothing at the default thresholds: a low CAM threshold and
# no confidence filter make shapes appear, so their validity is actually exercised.
LOOSE = {"threshold": 0.0, "cam_threshold": 0.01, "iterations": 0}


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """(main module, platform) with init_context run once on seeded untrained weights."""
    weights = write_untrained_weights(tmp_path_factory.mktemp("weights"))
    env = {
        "DEFECTCAM_WEIGHTS": str(weights),
        "DEFECTCAM_DEVICE": "cpu",
        "DEFECTCAM_MAX_PIXELS": "4000000",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        main = load_main("handler_tests")
        platform = nuclio_sdk.test.Platform()
        platform.call_handler(main.handler, nuclio_sdk.Event(body={}))  # runs init_context
        yield main, platform
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    status, shapes = call(function, {"image": file_b64(path), "output": output, **LOOSE})
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
    status, shapes = call(function, {"image": file_b64(photos["jpeg"]), "threshold": 0.9})
    assert status == 200
    assert all(float(s["confidence"]) >= 0.9 for s in shapes)


@pytest.mark.parametrize("encode", [lambda s: s, lambda s: s.encode("utf-8")])
def test_body_as_json_text_or_bytes(function, photos, encode) -> None:
    body = json.dumps({"image": file_b64(photos["jpeg"]), "labels": ["crack"], **LOOSE})
    status, shapes = call(function, encode(body))
    assert status == 200
    with Image.open(photos["jpeg"]) as image:
        check_shapes(shapes, image.width, image.height)


def _small_png() -> str:
    rng = np.random.default_rng(0)
    return encode_image(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))


def _truncated_jpeg() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()[:300]).decode()


BAD_REQUESTS = [
    (None, 400, "empty"),
    ("", 400, "empty"),
    (b"\xff\xfe\x00garbage", 400, "UTF-8"),
    ("{not json", 400, "not valid JSON"),
    ([1, 2], 400, "JSON object"),
    ({}, 400, "missing 'image'"),
    ({"image": None}, 400, "missing 'image'"),
    ({"image": 12}, 400, "'image' must be a base64 string"),
    ({"image": ["x"]}, 400, "'image' must be a base64 string"),
    ({"image": "***"}, 400, "base64"),
    ({"image": base64.b64encode(b"hello, not an image").decode()}, 400, "not a readable image"),
    ({"image": "TRUNCATED"}, 400, "truncated"),
    ({"image": "SMALL", "threshold": "high"}, 400, "'threshold' must be a number"),
    ({"image": "SMALL", "threshold": True}, 400, "'threshold' must be a number"),
    ({"image": "SMALL", "threshold": 1.5}, 400, "'threshold' must be in"),
    ({"image": "SMALL", "iterations": 10**9}, 400, "'iterations' must be between"),
    ({"image": "SMALL", "iterations": -1}, 400, "'iterations' must be between"),
    ({"image": "SMALL", "iterations": 1.5}, 400, "'iterations' must be an integer"),
    ({"image": "SMALL", "iterations": "2"}, 400, "'iterations' must be an integer"),
    ({"image": "SMALL", "labels": ["crack", "pothole"]}, 400, "unknown label"),
    ({"image": "SMALL", "labels": "crack"}, 400, "'labels' must be a list"),
    ({"image": "SMALL", "labels": []}, 400, "'labels' is empty"),
    ({"image": "SMALL", "output": "rectangle"}, 400, "'output' must be one of"),
    ({"image": "SMALL", "cam_threshold": 0}, 400, "'cam_threshold' must be in"),
    ({"image": "SMALL", "screen": "yes"}, 400, "'screen' must be true or false"),
]


def _materialise(body):
    if isinstance(body, dict) and body.get("image") == "SMALL":
        return {**body, "image": _small_png()}
    if isinstance(body, dict) and body.get("image") == "TRUNCATED":
        return {**body, "image": _truncated_jpeg()}
    return body


@pytest.mark.parametrize(("body", "status", "needle"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_problem(function, body, status, needle) -> None:
    got, payload = call(function, _materialise(body))
    assert got == status
    assert needle in payload["error"]


def test_pixel_limit_gives_413_and_worker_keeps_serving(function) -> None:
    settings = context_of(function).user_data.settings
    side = int(settings.max_pixels**0.5) + 8
    header = Image.new("L", (side, side))  # zeros compress to a tiny PNG
    status, payload = call(function, {"image": encode_image(header)})
    assert status == 413 and "too large" in payload["error"]
    status, shapes = call(function, {"image": _small_png(), "iterations": 0})
    assert status == 200 and isinstance(shapes, list)


def test_server_error_is_short_and_logged(function, capsys) -> None:
    context = context_of(function)
    model = context.user_data.model
    original = model.infer

    def broken(*args, **kwargs):
        raise RuntimeError("weights exploded")

    model.infer = broken
    try:
        status, payload = call(function, {"image": _small_png()})
    finally:
        model.infer = original
    assert status == 500
    assert "RuntimeError" in payload["error"] and "Traceback" not in payload["error"]
    assert "weights exploded" not in payload["error"]
    assert "Traceback" in capsys.readouterr().out  # the mock platform logs to stdout


def test_client_errors_log_no_traceback(function, capsys) -> None:
    for body, _status, _needle in BAD_REQUESTS:
        call(function, _materialise(body))
    assert "Traceback" not in capsys.readouterr().out


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
