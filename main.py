"""Nuclio entry points of the defectcam CVAT detector (function.yaml: ``handler: main:handler``).

As thin as CVAT's own functions: the settings come from the environment
(``defectcam/config.py``), ``ModelHandler`` answers a request body with CVAT shapes, and
``defectcam/faces/nuclio.py`` maps errors to status codes. The request keys, bounds and defaults
are the request contract's (``defectcam/core/options.py``); ``defectcam serve`` imports this
module and runs the same handler over plain HTTP.
"""

import json

from defectcam.config import DEVICE_ENV, Settings
from defectcam.core.device import resolve_device
from defectcam.faces.nuclio import error_answer
from model_handler import ModelHandler


def init_context(context) -> None:
    """Load every classifier once per worker (Nuclio calls this before the first event)."""
    settings = Settings.from_env()
    resolve_device(settings.device, DEVICE_ENV)  # a one-line error, not torch's traceback
    context.logger.info_with("loading defectcam", **settings.as_dict())
    context.user_data.model = ModelHandler(settings, context.logger)
    context.logger.info_with("defectcam ready", labels=list(context.user_data.model.labels))


def handler(context, event):
    try:
        status, payload = 200, context.user_data.model.infer(event.body)
    except Exception as exc:  # every failure becomes a JSON answer; the worker goes on
        status, payload = error_answer(exc, context.logger, event.body)
    return context.Response(
        body=json.dumps(payload),
        headers={},
        content_type="application/json",
        status_code=status,
    )
