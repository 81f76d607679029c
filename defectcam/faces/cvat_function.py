"""defectcam as a cvat-sdk native auto-annotation function (no Nuclio, no Docker).

    cvat-cli task auto-annotate TASK_ID --function-module defectcam.cvat_function \
        -p weights=str:weights/ [--conf-threshold 0.5] [--conv-mask-to-poly]

cvat-cli imports this module and calls :func:`create` with the ``-p`` parameters; the
module-level ``spec`` and :func:`detect` make the module itself a function too. Every frame
goes through the same ``ProposalService`` as a Nuclio request, interaction log included.
"""

# No `from __future__ import annotations`: `cvat-cli --function-file` executes this file as a
# module that is not in sys.modules, where @dataclass cannot resolve string annotations.

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from defectcam.config import (
    PRECISION_NAMES,
    WEIGHTS_ENV,
    ConfigError,
    Settings,
    resolve_weights,
)
from defectcam.core.cvat import encode_sdk_mask, flat_points
from defectcam.core.device import resolve_device
from defectcam.core.image_io import pil_to_rgb
from defectcam.core.labels import DEFECT_LABELS, LABEL_NAMES
from defectcam.core.options import Limits, OptionError, ProposeOptions, Spelling, split_labels
from defectcam.core.postprocess import Proposal
from defectcam.core.weights import WeightsError, find_weights
from defectcam.serving.service import ProposalService, check_spec_labels

#: The label type the spec declares: ``mask``, not the Nuclio spec's ``polygon``, because
#: cvat-sdk's driver rejects a mask shape for a label declared ``polygon`` and maps a ``mask``
#: label to ``polygon`` under ``--conv-mask-to-poly`` (as cvat-sdk's own torchvision
#: instance-segmentation function declares). Ids and names are the Nuclio spec's.
SPEC_LABEL_TYPE = "mask"
#: ``-p`` parameters that set where and how the model runs (the rest are request options).
SETUP_PARAMETERS = ("weights", "device", "precision")
OPTION_PARAMETERS = ("iterations", "cam_threshold", "labels", "screen")
#: cvat-sdk's names: ``-p NAME=TYPE:VALUE`` parameters are the options' own names; the
#: driver's ``conf_threshold`` is ``min_confidence``.
CVAT_SDK = Spelling({"min_confidence": "conf_threshold"}, "parameter '{}'")
PARAMETERS = SETUP_PARAMETERS + OPTION_PARAMETERS
#: cvat-cli's TYPE per parameter, and an example value, for messages.
_SYNTAX = {"weights": ("str", "DIR"), "device": ("str", "cuda"), "precision": ("str", "bf16"),
           "iterations": ("int", "2"), "cam_threshold": ("float", "0.1"),
           "labels": ("str", "crack,rust"), "screen": ("bool", "true")}
_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_LABEL_IDS = {label.name: label.id for label in DEFECT_LABELS}


class FunctionParameterError(ValueError):
    """A bad ``-p`` parameter; the message names it and shows the right cvat-cli syntax."""


@dataclass(frozen=True)
class FunctionSettings:
    """What ``-p`` set: the worker's settings (weights, device, precision; the rest from the
    environment, as for Nuclio) and the request options every frame starts from."""

    settings: Settings
    options: ProposeOptions

    @property
    def weights(self) -> Path:
        return self.settings.weights


def parse_settings(**parameters) -> FunctionSettings:
    """Validate cvat-cli's ``-p`` values (already typed by ``NAME=TYPE:VALUE``)."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise FunctionParameterError(
            f"unknown parameter(s) {unknown}; defectcam takes {list(PARAMETERS)} "
            "(e.g. -p iterations=int:2 -p weights=str:DIR)"
        )
    for name, value in parameters.items():
        _check_type(name, value)
    device = (parameters.get("device") or "").strip() or None
    precision = parameters.get("precision")
    if precision is not None and precision not in PRECISION_NAMES:
        raise FunctionParameterError(
            f"parameter 'precision' must be one of {list(PRECISION_NAMES)}, got {precision!r}")
    try:
        if device:
            resolve_device(device, "-p device")  # before any model loads
        given = {"weights": resolve_weights(parameters.get("weights")), "device": device,
                 "precision": precision}
        settings = Settings.from_env().override(
            "-p", **{k: v for k, v in given.items() if parameters.get(k) is not None})
        options = options_from_parameters(parameters, settings.limits())
    except (OptionError, ValueError) as exc:
        raise FunctionParameterError(str(exc)) from exc
    return FunctionSettings(settings, options)


def options_from_parameters(parameters: dict, limits: Limits | None = None) -> ProposeOptions:
    """The request options among cvat-cli's ``-p`` parameters.

    Args:
        parameters: ``-p NAME=TYPE:VALUE`` values by name (``labels`` comma-separated);
            the set-up parameters (weights, device, precision) are left alone.
        limits: the worker's caps and defaults.

    Returns:
        The options every frame starts from (see :func:`options_for_frame`).

    Raises:
        OptionError: a value is wrong, named as ``parameter '...'``.
    """
    values = {option: parameters.get(option) for option in ("iterations", "cam_threshold",
                                                            "screen")}
    values["labels"] = split_labels(parameters.get("labels"))
    return ProposeOptions.build(values, CVAT_SDK, limits)


def options_for_frame(options: ProposeOptions, conf_threshold: float | None,
                      conv_mask_to_poly: bool, frame_name: str | None,
                      limits: Limits | None = None) -> ProposeOptions:
    """``options`` for one frame of cvat-sdk's driver or agent.

    Args:
        options: from :func:`options_from_parameters`.
        conf_threshold: the driver's ``conf_threshold`` (``None``: the default).
        conv_mask_to_poly: polygons (True) or masks.
        frame_name: the frame's name, for the interaction log (or ``None``).
        limits: the worker's caps and defaults.

    Returns:
        The validated options of this frame.
    """
    values = {**dataclasses.asdict(options), "min_confidence": conf_threshold,
              "output": "polygon" if conv_mask_to_poly else "mask", "name": frame_name}
    return ProposeOptions.build(values, CVAT_SDK, limits or Limits())


def _check_type(name: str, value) -> None:
    cli_type, example = _SYNTAX[name]
    kinds = _KINDS[cli_type]
    # bool is an int subclass: -p iterations=bool:true must not pass as iterations=1.
    bool_ok = bool in kinds or not isinstance(value, bool)
    if value is None or (isinstance(value, kinds) and bool_ok):
        return
    raise FunctionParameterError(
        f"parameter {name!r} must be given as {cli_type} (-p {name}={cli_type}:{example}), "
        f"got {type(value).__name__} {value!r}"
    )


def make_spec(labels: Sequence[str] = LABEL_NAMES) -> cvataa.DetectionFunctionSpec:
    """The spec for ``labels``: ids and names from ``defectcam.core.labels`` (the Nuclio spec's)."""
    return cvataa.DetectionFunctionSpec(
        labels=[
            cvataa.label_spec(label.name, label.id, type=SPEC_LABEL_TYPE)
            for label in DEFECT_LABELS
            if label.name in labels
        ]
    )


def proposal_to_cvat_request(
    proposal: Proposal, height: int, width: int, as_polygon: bool
) -> models.LabeledShapeRequest:
    """One proposal as the shape request cvat-sdk expects from ``detect``."""
    label_id = _LABEL_IDS[proposal.label]
    if as_polygon:
        return cvataa.polygon(label_id, flat_points(proposal.polygon))
    x1, y1, x2, y2 = proposal.box
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise ValueError(f"proposal box {proposal.box} outside the {width}x{height} image")
    return cvataa.mask(label_id, encode_sdk_mask(proposal.mask.astype(bool), proposal.box))


_SERVICES: dict[tuple, ProposalService] = {}
_SERVICES_LOCK = threading.Lock()


def load_service(settings: Settings) -> ProposalService:
    """One service per (weights, device, precision, log), loaded on first use and kept."""
    key = (str(Path(settings.weights).resolve()), settings.device, settings.precision,
           str(settings.log_db))
    with _SERVICES_LOCK:
        if key not in _SERVICES:
            _SERVICES[key] = ProposalService.from_settings(settings)
        return _SERVICES[key]


class DefectDetectionFunction:
    """A cvat-sdk ``DetectionFunction``: ``spec`` plus ``detect(context, image)``."""

    def __init__(self, settings: FunctionSettings, available: Sequence[str] | None = None):
        self.settings = settings
        wanted = settings.options.labels or (
            tuple(available) if available is not None else LABEL_NAMES)
        self.spec = make_spec(wanted)

    @property
    def service(self) -> ProposalService:
        return load_service(self.settings.settings)

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        rgb = pil_to_rgb(image)
        service = self.service
        options = options_for_frame(
            self.settings.options, context.conf_threshold, bool(context.conv_mask_to_poly),
            getattr(context, "frame_name", None), service.limits)
        answer = service.propose(rgb, options, face="cvat-sdk")
        height, width = rgb.shape[:2]
        return [
            proposal_to_cvat_request(p, height, width, as_polygon=options.output == "polygon")
            for p in answer.proposals
        ]


def create(**parameters) -> DefectDetectionFunction:
    """cvat-cli's factory: ``-p NAME=TYPE:VALUE`` arrive here as keyword arguments."""
    settings = parse_settings(**parameters)
    try:
        found = find_weights(settings.weights)
    except WeightsError as exc:
        raise FunctionParameterError(
            f"no usable defectcam weights at {settings.weights} ({exc}); pass "
            f"-p weights=str:DIR or set {WEIGHTS_ENV}"
        ) from exc
    try:
        check_spec_labels(tuple(found), settings.weights)  # before any frame is downloaded
    except ConfigError as exc:
        raise FunctionParameterError(str(exc)) from exc
    missing = [name for name in settings.options.labels or () if name not in found]
    if missing:
        raise FunctionParameterError(
            f"labels {missing} were asked for but {settings.weights} only has "
            f"classifiers for {sorted(found)}"
        )
    return DefectDetectionFunction(settings, available=tuple(found))


#: The module as a function: every label of the Nuclio spec, default settings.
spec = make_spec()
_module_function: DefectDetectionFunction | None = None


def detect(
    context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
) -> list[models.LabeledShapeRequest]:
    """Module-level ``detect`` (default settings; the proposer loads on the first frame)."""
    global _module_function
    if _module_function is None:
        _module_function = DefectDetectionFunction(parse_settings())
    return _module_function.detect(context, image)
