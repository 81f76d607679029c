"""The Nuclio face of the defectcam interactors (CVAT's AI Tools > Interactors).

``interactor_main.py`` at the repository root re-exports :func:`init_context` and
:func:`handler` (``interactors/*.yaml``: ``handler: interactor_main:handler``), as ``main.py``
does for the detector. Request: CVAT's ``{"image": base64, "pos_points": [[x, y], ...],
"neg_points": [[x, y], ...], "obj_bbox": [[x1, y1], [x2, y2]] or null}``, other clients may
add ``label``, ``iterations``, ``cam_threshold`` and ``name`` (``InteractOptions``). Answer:
200 with ``{"mask": rows of 0/1, "bounds": [x1, y1, x2, y2], "points": [[x, y], ...]}``;
bad input 400 (413 beyond the pixel limit) with ``{"error": ..., "key": ...}`` and one warning
line, as the detector's face answers (:func:`defectcam.faces.nuclio.error_answer`).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from defectcam.config import DEVICE_ENV, MAX_PIXELS_ENV, Settings
from defectcam.core.device import resolve_device
from defectcam.core.image_io import decode_base64, decode_image
from defectcam.faces.nuclio import error_answer, read_interaction
from defectcam.serving.interactor import InteractorService


def init_context(context: Any) -> None:
    """Load the classifiers once per worker (Nuclio calls this before the first event)."""
    settings = Settings.from_env()
    resolve_device(settings.device, DEVICE_ENV)  # a one-line error, not torch's traceback
    context.logger.info_with("loading defectcam interactor", **settings.as_dict())
    context.user_data.interactor = InteractorService.from_settings(settings, context.logger)
    context.logger.info_with("defectcam interactor ready",
                             labels=list(context.user_data.interactor.labels))


def answer(service: InteractorService, body: Any) -> dict:
    """The CVAT interactor answer for one request body (raises ``OptionError`` /
    ``ImageInputError`` for the client's mistakes)."""
    started = time.perf_counter()
    image, options = read_interaction(body, service.limits)
    data = decode_base64(image)
    decoded = decode_image(data, service.settings.max_pixels, limit_name=MAX_PIXELS_ENV)
    result = service.interact(decoded.rgb, options, face="nuclio-interactor", started=started,
                              image_sha256=hashlib.sha256(data).hexdigest())
    return result.to_cvat()


def handler(context: Any, event: Any) -> Any:
    """One interaction: the mask, or a JSON error; the worker goes on either way."""
    try:
        status, payload = 200, answer(context.user_data.interactor, event.body)
    except Exception as exc:  # every failure becomes a JSON answer; the worker goes on
        status, payload = error_answer(exc, context.logger, event.body)
    return context.Response(body=json.dumps(payload), headers={},
                            content_type="application/json", status_code=status)
