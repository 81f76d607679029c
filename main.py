"""Nuclio entry points of the defectcam CVAT detector: ``init_context`` and ``handler``.

Request (JSON object; CVAT sends only ``image`` and sometimes ``threshold``):
    image          str, required   base64 of the frame file (a data: URL prefix is tolerated)
    threshold      number in [0,1] confidence a proposal needs to be returned
                                   (default DEFECTCAM_CONFIDENCE_THRESHOLD, 0.5)
    iterations     int in [0, DEFECTCAM_MAX_ITERATIONS]   AdvCAM steps (default: the weights')
    labels         list of label names, a non-empty subset of the loaded defects
    output         "polygon" (default) or "mask"
    cam_threshold  number in (0,1)  CAM binarisation threshold (default: the weights')
    screen         bool            climb only on tiles the classifier calls defective
    name           str             the frame's file name, recorded in the interaction log
Unknown keys are ignored. Answer: 200 with a JSON list of CVAT shapes; 400 (bad request) or
413 (image over DEFECTCAM_MAX_PIXELS) with ``{"error": ..., "key": ...}`` naming the problem;
500 (bug) or 503 (out of memory) with a short message, the traceback only in the log.

Environment: DEFECTCAM_WEIGHTS (weights folder, default ``weights/`` next to this file),
DEFECTCAM_DEVICE (cpu, cuda, cuda:N; default auto), DEFECTCAM_PRECISION (fp32, bf16, fp16;
CUDA only for the latter two), DEFECTCAM_MAX_PIXELS, DEFECTCAM_MAX_ITERATIONS,
DEFECTCAM_CONFIDENCE_THRESHOLD, DEFECTCAM_LOG_DB (SQLite interaction log; "off" disables).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from defectcam.core.cvat import OUTPUT_TYPES
from defectcam.core.image_io import (
    ImageInputError,
    decode_base64,
    decode_image,
    max_pixels_from_env,
)
from defectcam.core.predictor import PRECISIONS
from defectcam.core.proposer import MAX_ITERATIONS
from defectcam.feedback import ProposalLog, log_proposals
from model_handler import ModelHandler

WEIGHTS_ENV = "DEFECTCAM_WEIGHTS"
DEVICE_ENV = "DEFECTCAM_DEVICE"
PRECISION_ENV = "DEFECTCAM_PRECISION"
MAX_ITERATIONS_ENV = "DEFECTCAM_MAX_ITERATIONS"
THRESHOLD_ENV = "DEFECTCAM_CONFIDENCE_THRESHOLD"
DEFAULT_MAX_ITERATIONS = 10
DEFAULT_THRESHOLD = 0.5


class RequestError(ValueError):
    """A client error: answered with ``status`` and a JSON message, never a traceback."""

    def __init__(self, message: str, status: int = 400, key: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.key = message, status, key


@dataclass(frozen=True)
class Settings:
    weights: Path
    device: str | None
    precision: str
    max_pixels: int
    max_iterations: int
    default_threshold: float

    @classmethod
    def from_env(cls) -> Settings:
        weights = os.environ.get(WEIGHTS_ENV, "").strip()
        device = os.environ.get(DEVICE_ENV, "").strip() or None
        threshold = _env_number(THRESHOLD_ENV, DEFAULT_THRESHOLD, float)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{THRESHOLD_ENV} must be in [0, 1], got {threshold}")
        max_iterations = _env_number(MAX_ITERATIONS_ENV, DEFAULT_MAX_ITERATIONS, int)
        if not 0 <= max_iterations <= MAX_ITERATIONS:
            raise ValueError(
                f"{MAX_ITERATIONS_ENV} must be within 0..{MAX_ITERATIONS}, got {max_iterations}"
            )
        precision = os.environ.get(PRECISION_ENV, "").strip() or "fp32"
        if precision not in PRECISIONS:
            raise ValueError(
                f"{PRECISION_ENV} must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        return cls(
            weights=Path(weights) if weights else Path(__file__).resolve().parent / "weights",
            device=None if device == "auto" else device,
            precision=precision,
            max_pixels=max_pixels_from_env(),
            max_iterations=max_iterations,
            default_threshold=threshold,
        )


@dataclass(frozen=True)
class DetectRequest:
    image: str
    threshold: float
    output: str = "polygon"
    labels: list[str] | None = None
    iterations: int | None = None
    cam_threshold: float | None = None
    screen: bool | None = None
    name: str | None = None


def init_context(context) -> None:
    """Load every classifier once per worker (Nuclio calls this before the first event)."""
    settings = Settings.from_env()
    context.logger.info_with(
        "loading defectcam weights",
        weights=str(settings.weights),
        device=str(settings.device or "auto"),
        precision=settings.precision,
    )
    model = ModelHandler(settings.weights, device=settings.device, precision=settings.precision)
    context.user_data.settings = settings
    context.user_data.model = model
    # Every answered proposal goes to the interaction log (DEFECTCAM_LOG_DB; "off" disables).
    context.user_data.log = ProposalLog.from_env(context.logger)
    context.logger.info_with("defectcam ready", labels=list(model.labels))


def handler(context, event):
    started = time.perf_counter()
    settings: Settings = context.user_data.settings
    model: ModelHandler = context.user_data.model
    try:
        request = parse_request(event.body, settings, model.labels)
        data = decode_base64(request.image)
        decoded = decode_image(data, max_pixels=settings.max_pixels)
        shapes = model.infer(
            decoded.rgb,
            threshold=request.threshold,
            output=request.output,
            labels=request.labels,
            iterations=request.iterations,
            cam_threshold=request.cam_threshold,
            screen=request.screen,
        )
    except (RequestError, ImageInputError) as exc:
        key = "image" if isinstance(exc, ImageInputError) else exc.key
        context.logger.warn_with("rejected request", status=exc.status, error=exc.message)
        payload = {"error": exc.message, **({"key": key} if key else {})}
        return _json_response(context, payload, exc.status)
    except MemoryError:
        context.logger.error_with("out of memory", traceback=traceback.format_exc())
        return _json_response(context, {"error": "out of memory; try a smaller image"}, 503)
    except Exception as exc:  # a bug or a broken model: short answer, details in the log
        context.logger.error_with("handler failed", traceback=traceback.format_exc())
        if _is_out_of_memory(exc):
            return _json_response(context, {"error": "out of memory; try a smaller image"}, 503)
        message = f"internal error ({type(exc).__name__}); see the function log"
        return _json_response(context, {"error": message}, 500)
    seconds = time.perf_counter() - started
    # Never raises: a store that cannot be written is reported in the log, the answer goes out.
    log_proposals(
        getattr(context.user_data, "log", None), hashlib.sha256(data).hexdigest(),
        (decoded.width, decoded.height), request.name,
        {k: v for k, v in vars(request).items() if k not in ("image", "name")},
        model.model_version, model.last_proposals, seconds,
    )
    context.logger.info_with(
        "proposed",
        width=decoded.width,
        height=decoded.height,
        shapes=len(shapes),
        seconds=round(seconds, 3),
    )
    return _json_response(context, shapes, 200)


def parse_request(body, settings: Settings, known_labels: tuple[str, ...]) -> DetectRequest:
    """Validate the event body (dict, JSON bytes or JSON str) into a :class:`DetectRequest`."""
    data = _body_to_dict(body)
    if "image" not in data or data["image"] is None:
        raise RequestError("missing 'image': expected the base64 of an image file", key="image")
    image = data["image"]
    if not isinstance(image, str):
        raise RequestError(f"'image' must be a base64 string, got {_json_type(image)}", key="image")
    threshold = _optional_number(data, "threshold", 0.0, 1.0, closed=True)
    output = data.get("output")
    if output is None:
        output = "polygon"
    elif output not in OUTPUT_TYPES:
        raise RequestError(
            f"'output' must be one of {list(OUTPUT_TYPES)}, got {output!r}", key="output"
        )
    iterations = data.get("iterations")
    if iterations is not None:
        if isinstance(iterations, float) and iterations.is_integer():
            iterations = int(iterations)
        if isinstance(iterations, bool) or not isinstance(iterations, int):
            raise RequestError(
                f"'iterations' must be an integer, got {_json_type(iterations)}", key="iterations"
            )
        if not 0 <= iterations <= settings.max_iterations:
            raise RequestError(
                f"'iterations' must be between 0 and {settings.max_iterations} "
                f"(limit set by {MAX_ITERATIONS_ENV}), got {iterations}",
                key="iterations",
            )
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise RequestError(f"'name' must be a string, got {_json_type(name)}", key="name")
    screen = data.get("screen")
    if screen is not None and not isinstance(screen, bool):
        raise RequestError(
            f"'screen' must be true or false, got {_json_type(screen)}", key="screen"
        )
    return DetectRequest(
        image=image,
        threshold=settings.default_threshold if threshold is None else threshold,
        output=output,
        labels=_parse_labels(data.get("labels"), known_labels),
        iterations=iterations,
        cam_threshold=_optional_number(data, "cam_threshold", 0.0, 1.0, closed=False),
        screen=screen,
        name=name,
    )


def _body_to_dict(body) -> dict:
    # Nuclio hands a dict for JSON content, bytes otherwise (or when its own parse failed).
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RequestError("request body is not UTF-8 text; expected a JSON object") from exc
    if body is None or (isinstance(body, str) and not body.strip()):
        raise RequestError('request body is empty; expected a JSON object {"image": "<base64>"}')
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"request body is not valid JSON ({exc.msg} at line {exc.lineno} "
                f"column {exc.colno})"
            ) from exc
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {_json_type(body)}")
    return body


def _parse_labels(value, known: tuple[str, ...]) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(
            f"'labels' must be a list of label names, got {_json_type(value)}", key="labels"
        )
    if not value:
        raise RequestError(f"'labels' is empty; choose from {list(known)}", key="labels")
    unknown = sorted({v for v in value if v not in known})
    if unknown:
        raise RequestError(
            f"unknown label(s) {unknown} in 'labels'; this function knows {list(known)}",
            key="labels",
        )
    return list(dict.fromkeys(value))


def _optional_number(data: dict, key: str, low: float, high: float, closed: bool) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{key}' must be a number, got {_json_type(value)}", key=key)
    inside = low <= value <= high if closed else low < value < high
    if not inside:
        bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        raise RequestError(f"'{key}' must be in {bounds}, got {value}", key=key)
    return float(value)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(value) else f"non-finite number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _json_response(context, payload, status: int):
    return context.Response(
        body=json.dumps(payload),
        headers={},
        content_type="application/json",
        status_code=status,
    )


def _env_number(name: str, default, kind):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
