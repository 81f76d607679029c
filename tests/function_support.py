"""Helpers shared by the Nuclio-function tests (handler, HTTP server, yaml)."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from defectcam.core.cvat import decode_cvat_mask
from defectcam.core.labels import LABEL_NAMES
from defectcam.core.postprocess import polygon_to_mask
from tests.helpers import save_untrained

REPO = Path(__file__).resolve().parents[1]


#: Head biases of the untrained test weights: confidences near 0.76 (crack), 0.57 (spalling)
#: and 0.29 (rust) on the test photos, so that the default threshold (0.5) drops the rust
#: proposals and keeps the others: a face with another default gives another answer.
HEAD_BIAS = {"crack": 1.0, "rust": -1.0}


def write_untrained_weights(directory: Path, tile_size: int = 128, overlap: int = 16) -> Path:
    """One seeded, untrained classifier per label; small tiles keep CPU tests fast."""
    return save_untrained(directory, LABEL_NAMES, tile_size=tile_size, tile_overlap=overlap,
                          head_bias=HEAD_BIAS, iterations=0, min_area=16)


@contextlib.contextmanager
def environment(**env: str):
    """Set environment variables for the block, restoring the previous values after."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_main():
    """``main`` imported as a module from the repository root, as Nuclio and ``defectcam
    serve`` import it (its state lives in each context, so one module serves every test)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import main

    return main


def start_function(**env: str):
    """(main module, nuclio_sdk test platform) with ``init_context`` run once in ``env``
    (each platform keeps its own worker context, so several can live side by side)."""
    import nuclio_sdk
    import nuclio_sdk.test

    with environment(**env):
        main = import_main()
        platform = nuclio_sdk.test.Platform()
        platform.call_handler(main.handler, nuclio_sdk.Event(body={}))  # runs init_context
    return main, platform


def call_function(function, body) -> tuple[int, object]:
    """(status, parsed JSON body) of one request to ``start_function``'s handler."""
    import json

    import nuclio_sdk

    main, platform = function
    response = platform.call_handler(main.handler, nuclio_sdk.Event(body=body))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


@contextlib.contextmanager
def captured_log(function):
    """What the handler and its service log (both through the worker's logger, which the
    service keeps from ``init_context``) while the block runs."""
    import logging

    import nuclio_sdk
    import nuclio_sdk.logger

    main, platform = function
    context = platform._get_handler_context(main.handler)
    service = context.user_data.model.service
    original, stream = context.logger, io.StringIO()
    logger = nuclio_sdk.Logger(logging.DEBUG, "captured")
    logger.set_handler("default", stream, nuclio_sdk.logger.HumanReadableFormatter())
    context.logger = service.logger = logger
    try:
        yield stream
    finally:
        context.logger = service.logger = original


def encode_image(image: Image.Image, fmt: str = "PNG", **save_options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def file_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def check_shapes(shapes, width: int, height: int, output: str = "polygon") -> None:
    """Every shape valid per shared/docs/cvat-contract.md ("The answer")."""
    assert isinstance(shapes, list)
    for shape in shapes:
        assert shape["label"] in LABEL_NAMES, shape["label"]
        assert shape["type"] == output
        points = shape["points"]
        assert len(points) % 2 == 0 and len(points) >= 6, len(points)
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in points)
        xy = np.asarray(points, dtype=float).reshape(-1, 2)
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= width - 1).all()
        assert (xy[:, 1] >= 0).all() and (xy[:, 1] <= height - 1).all()
        assert 0.0 <= float(shape["confidence"]) <= 1.0
        if output == "mask":
            values = shape["mask"]
            assert all(v in (0, 1) for v in values[:-4])
            x1, y1, x2, y2 = values[-4:]
            assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height
            assert len(values) - 4 == (x2 - x1 + 1) * (y2 - y1 + 1)
            mask = decode_cvat_mask(values, height, width)
            assert mask.any()
            # The polygon traces the mask's outer contour: rasterised, it covers the mask's
            # pixels (holes aside) and stays inside the mask's box.
            filled = polygon_to_mask(xy, height, width)
            assert (mask & ~filled).sum() <= 0.02 * mask.sum() + 4
            ys, xs = np.nonzero(filled)
            assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1
            assert ys.min() >= y1 - 1 and ys.max() <= y2 + 1


# Untrained weights propose almost nothing at the default thresholds: a low CAM threshold and
# no confidence filter make shapes appear, so their validity is actually exercised.
LOOSE = {"threshold": 0.0, "cam_threshold": 0.01, "iterations": 0}


def small_png() -> str:
    rng = np.random.default_rng(0)
    return encode_image(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))


def truncated_jpeg() -> str:
    buffer = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return base64.b64encode(data[: len(data) * 6 // 10]).decode()


#: What the transport (the Nuclio / HTTP face) must refuse before any option is read: the
#: options' own cases are tests/test_options.py's, once, against the options type.
BAD_REQUESTS = [
    (None, 400, "empty"),
    ("", 400, "empty"),
    (b"\xff\xfe\x00garbage", 400, "UTF-8"),
    ("{not json", 400, "not valid JSON"),
    ('{"image": "x', 400, "not valid JSON (Unterminated string starting at: line 1"),
    ([1, 2], 400, "JSON object"),
    ({}, 400, "missing 'image'"),
    ({"image": None}, 400, "missing 'image'"),
    ({"image": 12}, 400, "'image' must be a base64 string"),
    ({"image": ["x"]}, 400, "'image' must be a base64 string"),
    ({"image": "***"}, 400, "base64"),
    ({"image": base64.b64encode(b"hello, not an image").decode()}, 400,
     "'image' is not a readable image file (19 bytes; expected the base64 of"),
    ({"image": "TRUNCATED"}, 400, "truncated"),
    ({"image": "SMALL", "threshold": "high"}, 400, "'threshold' must be a number"),
]


def materialise(body):
    if isinstance(body, dict) and body.get("image") == "SMALL":
        return {**body, "image": small_png()}
    if isinstance(body, dict) and body.get("image") == "TRUNCATED":
        return {**body, "image": truncated_jpeg()}
    return body
