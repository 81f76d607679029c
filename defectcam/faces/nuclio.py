"""The Nuclio face's transport: a request body in, a status and a JSON payload out.

``main.py`` and ``model_handler.py`` (CVAT's function layout) wire these to the service;
``defectcam serve`` runs that same ``main.handler``. The body's keys are the request
contract's options in the body's spelling (:data:`BODY`); unknown keys are ignored. Status
codes: :func:`error_answer`.
"""

from __future__ import annotations

import io
import json
import traceback
from typing import Any

from PIL import Image

from defectcam.core.image_io import ImageInputError, decode_base64
from defectcam.core.options import (
    OPTION_NAMES,
    InteractOptions,
    Limits,
    OptionError,
    ProposeOptions,
    Spelling,
    json_type,
)

OUT_OF_MEMORY = "out of memory; try a smaller image"
#: The body's keys: the options' own names, but CVAT sends ``min_confidence`` as
#: ``threshold``; messages quote the key (``'threshold'``).
BODY = Spelling({"min_confidence": "threshold"}, "'{}'")


def read_body(body: Any) -> dict:
    """The event body (dict, JSON bytes or JSON text) as a dict; :class:`OptionError` else."""
    # Nuclio hands a dict for JSON content, bytes otherwise (or when its own parse failed).
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise OptionError("request body is not UTF-8 text; expected a JSON object") from exc
    if body is None or (isinstance(body, str) and not body.strip()):
        raise OptionError('request body is empty; expected a JSON object {"image": "<base64>"}')
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            # str(exc) reads "Expecting value: line 1 column 1 (char 0)".
            raise OptionError(f"request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise OptionError(f"request body must be a JSON object, got {json_type(body)}")
    return body


def read_request(body: Any, limits: Limits | None = None) -> tuple[str, ProposeOptions]:
    """(base64 image, options) of a request body; :class:`OptionError` names what is wrong."""
    data = read_body(body)
    return _image(data), options_from_body(data, limits)


def read_interaction(body: Any, limits: Limits | None = None) -> tuple[str, InteractOptions]:
    """(base64 image, options) of an interactor request body (CVAT's ``image``,
    ``pos_points``, ``neg_points``, ``obj_bbox``); :class:`OptionError` names what is wrong."""
    data = read_body(body)
    return _image(data), InteractOptions.from_body(data, limits)


def _image(data: dict) -> str:
    image = data.get("image")
    if image is None:
        raise OptionError("missing 'image': expected the base64 of an image file", "image")
    if not isinstance(image, str):
        raise OptionError(f"'image' must be a base64 string, got {json_type(image)}", "image")
    return image


def options_from_body(body: dict, limits: Limits | None = None) -> ProposeOptions:
    """The request options of a Nuclio / HTTP JSON body.

    Args:
        body: the parsed body; keys that are no option (``image`` included) are left alone.
        limits: the worker's caps and defaults.

    Returns:
        The validated options.

    Raises:
        OptionError: a value is wrong; ``key`` is the body's key (``threshold``, ...).
    """
    values = {option: body.get(BODY.key(option)) for option in OPTION_NAMES}
    return ProposeOptions.build(values, BODY, limits)


def error_answer(exc: Exception, logger: Any, body: Any = None) -> tuple[int, dict]:
    """(status, payload) for an exception raised while answering, logged through ``logger``.

    400 (bad request) or 413 (image over the pixel limit) with ``{"error": ..., "key": ...}``,
    logged as one warning line with the frame's size: CVAT keeps only the status line of an
    error, so the function's log is where an operator finds the reason. 503 (out of memory)
    or 500 (a bug) with a short message, the traceback only in the log.

    Args:
        exc: what was raised.
        logger: a Nuclio logger.
        body: the request, read again only to find the frame's size.

    Returns:
        The status code and the JSON payload.
    """
    if isinstance(exc, (OptionError, ImageInputError)):
        key = "image" if isinstance(exc, ImageInputError) else exc.key
        size, image_bytes = frame_size(body, getattr(exc, "size", None))
        logger.warn_with("rejected request", status=exc.status, error=exc.message,
                         **({"key": key} if key else {}),
                         frame=f"{size[0]}x{size[1]}" if size else "unknown",
                         image_bytes=image_bytes)
        return exc.status, {"error": exc.message, **({"key": key} if key else {})}
    logger.error_with("handler failed", traceback=traceback.format_exc())
    if isinstance(exc, MemoryError) or _is_out_of_memory(exc):
        return 503, {"error": OUT_OF_MEMORY}
    # A bug or a broken model: a short answer, the details in the log.
    return 500, {"error": f"internal error ({type(exc).__name__}); see the function log"}


def frame_size(body: Any, size: tuple[int, int] | None = None
               ) -> tuple[tuple[int, int] | None, int | None]:
    """((width, height) or None, bytes of the image file or None) of a request, as far as
    it can be read; only the file's header is parsed. Never raises."""
    try:
        data = decode_base64(read_body(body)["image"])
    except Exception:  # noqa: BLE001 - no image to speak of: the message says why
        return size, None
    if size is None:
        try:
            with Image.open(io.BytesIO(data)) as image:
                size = image.size
        except Exception:  # noqa: BLE001 - not an image, or beyond Pillow's own limit
            size = None
    return size, len(data)


def _is_out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
