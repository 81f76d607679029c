"""``defectcam serve`` in a subprocess: real HTTP, real photos, the transport's bad input,
concurrency, and the function yaml's settings (the server is conftest's ``http_server``)."""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectcam.feedback import read_log
from tests.conftest import SERVER_MAX_BODY, SERVER_MAX_PIXELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import (  # noqa: E402
    BAD_REQUESTS,
    LOOSE,
    REPO,
    check_shapes,
    encode_image,
    file_b64,
    materialise,
)


@pytest.fixture(scope="module")
def server(http_server):
    return http_server


def post(
    server, body: bytes | str | dict, content_type: str = "application/json", method: str = "POST"
):
    host, port = server.host, server.port
    if isinstance(body, dict) or isinstance(body, list) or body is None:
        body = json.dumps(body)
    payload = body.encode() if isinstance(body, str) else body
    connection = http.client.HTTPConnection(host, port, timeout=300)
    try:
        connection.request(method, "/", body=payload, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def post_json(server, body, **kwargs):
    status, content_type, raw = post(server, body, **kwargs)
    assert content_type == "application/json", raw[:200]
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, Path]:
    return {
        "jpeg": sorted((shared_data / "crack" / "crackforest").rglob("*.jpg"))[1],
        "deepcrack": sorted((shared_data / "crack" / "deepcrack").rglob("*.jpg"))[1],
    }


@pytest.mark.parametrize("output", ["polygon", "mask"])
def test_real_jpeg_over_http(server, photos, output: str) -> None:
    path = photos["jpeg"]
    status, shapes = post_json(
        server, {"image": file_b64(path), "output": output, "labels": ["crack"], **LOOSE}
    )
    assert status == 200
    with Image.open(path) as image:
        check_shapes(shapes, image.width, image.height, output)


def test_real_png_over_http(server, photos) -> None:
    with Image.open(photos["deepcrack"]) as image:
        image = image.convert("RGB")
    status, shapes = post_json(server, {"image": encode_image(image), "output": "mask", **LOOSE})
    assert status == 200
    check_shapes(shapes, image.width, image.height, "mask")


def test_body_without_json_content_type(server, photos) -> None:
    body = json.dumps({"image": file_b64(photos["jpeg"]), "labels": ["rust"], **LOOSE})
    status, shapes = post_json(server, body, content_type="text/plain")
    assert status == 200 and isinstance(shapes, list)


@pytest.mark.parametrize(("body", "status", "needle"), BAD_REQUESTS)
def test_bad_input_over_http(server, body, status, needle) -> None:
    body = materialise(body)
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    got, payload = post_json(server, raw)
    assert got == status, payload
    assert needle in payload["error"]


def test_invalid_json_with_json_content_type(server) -> None:
    status, payload = post_json(server, b'{"image": ', content_type="application/json")
    assert status == 400 and "not valid JSON" in payload["error"]


def test_pixel_limit_over_http(server) -> None:
    side = int(SERVER_MAX_PIXELS**0.5) + 100
    status, payload = post_json(server, {"image": encode_image(Image.new("L", (side, side)))})
    assert status == 413 and "too large" in payload["error"]


def test_body_over_limit_is_413(server) -> None:
    status, payload = post_json(server, b"x" * (SERVER_MAX_BODY + 1))
    assert status == 413 and "exceeds the limit" in payload["error"]


def _tiny(seed: int) -> str:
    rng = np.random.default_rng(seed)
    return encode_image(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))


def test_concurrent_requests_are_all_answered_correctly(server) -> None:
    bodies = [{"image": _tiny(seed), "output": "mask", **LOOSE} for seed in range(6)]
    expected = [post_json(server, body)[1] for body in bodies]  # one at a time
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda body: post_json(server, body), bodies))
    for (status, shapes), reference in zip(answers, expected, strict=True):
        assert status == 200
        assert shapes == reference
        check_shapes(shapes, 64, 48, "mask")


def test_worker_keeps_serving_and_logs_no_traceback(server) -> None:
    for body, _status, _needle in BAD_REQUESTS[:8]:
        body = materialise(body)
        post(server, body if isinstance(body, (bytes, str)) else json.dumps(body))
    status, shapes = post_json(server, {"image": _tiny(9), **LOOSE})
    assert status == 200 and isinstance(shapes, list)
    time.sleep(0.2)
    log = server.log.read_text()
    assert "rejected request" in log
    assert "Traceback" not in log


def test_get_is_handed_to_the_handler_like_nuclio(server) -> None:
    status, payload = post_json(server, b"", method="GET")
    assert status == 400 and "empty" in payload["error"]


def test_base64_body_round_trip_matches_handler(server, photos) -> None:
    """The HTTP answer equals what the handler answers in-process for the same request."""
    body = {
        "image": base64.b64encode(photos["jpeg"].read_bytes()).decode(),
        "labels": ["crack"],
        **LOOSE,
    }
    first = post_json(server, body)
    second = post_json(server, body)
    assert first == second and first[0] == 200


def test_serve_uses_the_function_yaml_settings_and_says_so(server) -> None:
    """Where its environment is silent, serve answers with function.yaml's limits and
    prints each setting with its origin at start."""
    env = {e["name"]: str(e["value"])
           for e in yaml.safe_load((REPO / "function.yaml").read_text())["spec"]["env"]}
    limit = int(env["DEFECTCAM_MAX_ITERATIONS"])
    printed = "\n".join(server.stdout)
    assert f"max_iterations = {limit} (function.yaml)" in printed
    assert f"min_confidence = {float(env['DEFECTCAM_CONFIDENCE_THRESHOLD']):g} (function.yaml)" \
        in printed
    assert f"max_pixels = {SERVER_MAX_PIXELS} (DEFECTCAM_MAX_PIXELS)" in printed
    assert f"max_body_bytes = {SERVER_MAX_BODY} (--max-body-bytes)" in printed
    status, payload = post_json(server, {"image": _tiny(3), "iterations": limit + 1})
    assert status == 400 and payload["key"] == "iterations"
    assert f"between 0 and {limit} (limit set by DEFECTCAM_MAX_ITERATIONS)" in payload["error"]
    assert post_json(server, {"image": _tiny(3), "iterations": limit, **{
        k: v for k, v in LOOSE.items() if k != "iterations"}})[0] == 200


def test_http_answers_are_in_the_interaction_log(server) -> None:
    body = {"image": _tiny(11), "name": "http_frame.png", **LOOSE}
    status, shapes = post_json(server, body)
    assert status == 200
    (request,) = [r for r in read_log(server.log_db) if r.file_name == "http_frame.png"]
    assert request.params["face"] == "nuclio" and len(request.proposals) == len(shapes)


@pytest.mark.parametrize(("option", "message"), [
    ("--workers=0", "--workers must be >= 1"),
    ("--port=70000", "--port must be within 0..65535"),
    ("--worker-timeout=-1", "--worker-timeout must be positive"),
])
def test_bad_options_fail_before_loading(tmp_path, option, message) -> None:
    """Refused at once (exit 2, one line), although the weights do not even exist."""
    result = subprocess.run(
        [sys.executable, "-m", "defectcam.cli", "serve", option, "--function-dir", str(REPO)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"DEFECTCAM_WEIGHTS": str(tmp_path / "missing"), "PYTHONPATH": str(REPO),
             "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
