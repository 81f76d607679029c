"""defectcam as a cvat-sdk native auto-annotation function (no Nuclio, no Docker).

    cvat-cli task auto-annotate TASK_ID --function-module defectcam.cvat_function \\
        -p weights=str:weights/ -p iterations=int:2 [--conf-threshold 0.5] [--conv-mask-to-poly]

cvat-cli (``FunctionLoader.load``) imports this module and, because it defines ``create``,
always calls ``create(**parameters)`` with the ``-p NAME=TYPE:VALUE`` values (none: ``create()``).
The module-level ``spec`` and ``detect`` make the module itself a function too, for
``cvat_sdk.auto_annotation.annotate_task(client, task_id, defectcam.cvat_function)``.

One code path with the Nuclio function: both call ``DefectProposer.propose`` with the same
settings mapping (:meth:`FunctionSettings.propose_options`, as ``ModelHandler.infer`` builds it)
and the same image conversion (``defectcam.core.image_io``); only the output wrapping differs
(cvat-sdk request objects here, JSON dicts there).

Spec label type is ``mask``, not the Nuclio spec's ``polygon``: cvat-sdk's driver rejects a
mask shape for a label declared ``polygon``, and maps a ``mask`` label to ``polygon`` when
``--conv-mask-to-poly`` is given (as cvat-sdk's own torchvision instance-segmentation function
declares). Ids and names are the Nuclio spec's (``defectcam.core.labels``).
"""

# No `from __future__ import annotations`: `cvat-cli --function-file` executes this file as a
# module that is not in sys.modules, where @dataclass cannot resolve string annotations.

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from defectcam.core.cvat import encode_sdk_mask, flat_points
from defectcam.core.image_io import pil_to_rgb
from defectcam.core.labels import DEFECT_LABELS, LABEL_NAMES
from defectcam.core.postprocess import Proposal
from defectcam.core.proposer import MAX_ITERATIONS, DefectProposer
from defectcam.core.weights import WeightsError, find_weights

WEIGHTS_ENV = "DEFECTCAM_WEIGHTS"
#: The repository's weights/ folder (exists in a source checkout / editable install).
REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
#: The label type the spec declares (see the module docstring).
SPEC_LABEL_TYPE = "mask"
PARAMETERS = ("weights", "iterations", "cam_threshold", "labels", "device", "screen")
_LABEL_IDS = {label.name: label.id for label in DEFECT_LABELS}


class FunctionParameterError(ValueError):
    """A bad ``-p`` parameter; the message names it and shows the right cvat-cli syntax."""


@dataclass(frozen=True)
class FunctionSettings:
    """What ``-p`` can set. ``None`` means "the weights' recommended value", as in Nuclio."""

    weights: Path
    iterations: int | None = None
    cam_threshold: float | None = None
    labels: tuple[str, ...] | None = None
    device: str | None = None
    screen: bool | None = None

    def propose_options(self, min_confidence: float) -> dict:
        """Keyword arguments for ``DefectProposer.propose``: the mapping ``ModelHandler.infer``
        builds from a Nuclio request, so both faces propose the same shapes."""
        return {
            "iterations": self.iterations,
            "cam_threshold": self.cam_threshold,
            "labels": list(self.labels) if self.labels is not None else None,
            "screen": bool(self.screen),
            "min_confidence": min_confidence,
        }


def default_weights() -> Path:
    """``$DEFECTCAM_WEIGHTS`` when set, else the repository's ``weights/`` folder."""
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(value).expanduser() if value else REPO_WEIGHTS


def parse_settings(**parameters) -> FunctionSettings:
    """Validate cvat-cli's ``-p`` values (already typed by ``NAME=TYPE:VALUE``)."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise FunctionParameterError(
            f"unknown parameter(s) {unknown}; defectcam takes {list(PARAMETERS)} "
            "(e.g. -p iterations=int:2 -p weights=str:DIR)"
        )
    weights = _typed(parameters, "weights", (str,), "str", "DIR")
    iterations = _typed(parameters, "iterations", (int,), "int", "2")
    if iterations is not None and not 0 <= iterations <= MAX_ITERATIONS:
        raise FunctionParameterError(
            f"parameter 'iterations' must be within 0..{MAX_ITERATIONS}, got {iterations}"
        )
    cam_threshold = _typed(parameters, "cam_threshold", (int, float), "float", "0.1")
    if cam_threshold is not None:
        cam_threshold = float(cam_threshold)
        if not 0.0 < cam_threshold < 1.0:
            raise FunctionParameterError(
                f"parameter 'cam_threshold' must be in (0, 1), got {cam_threshold}"
            )
    device = _typed(parameters, "device", (str,), "str", "cuda")
    device = (device or "").strip() or None
    return FunctionSettings(
        weights=Path(weights).expanduser() if weights else default_weights(),
        iterations=iterations,
        cam_threshold=cam_threshold,
        labels=_parse_labels(_typed(parameters, "labels", (str,), "str", "crack,rust")),
        device=None if device == "auto" else device,
        screen=_typed(parameters, "screen", (bool,), "bool", "true"),
    )


def _typed(parameters: dict, name: str, kinds: tuple[type, ...], cli_type: str, example: str):
    value = parameters.get(name)
    # bool is an int subclass: -p iterations=bool:true must not pass as iterations=1.
    bool_ok = bool in kinds or not isinstance(value, bool)
    if value is None or (isinstance(value, kinds) and bool_ok):
        return value
    raise FunctionParameterError(
        f"parameter {name!r} must be given as {cli_type} (-p {name}={cli_type}:{example}), "
        f"got {type(value).__name__} {value!r}"
    )


def _parse_labels(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise FunctionParameterError(
            f"parameter 'labels' is empty; give a comma-separated subset of {list(LABEL_NAMES)}"
        )
    unknown = [name for name in names if name not in LABEL_NAMES]
    if unknown:
        raise FunctionParameterError(
            f"unknown label(s) {unknown} in parameter 'labels'; choose from {list(LABEL_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


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
    points = encode_sdk_mask(proposal.mask.astype(bool), proposal.box)
    return cvataa.mask(label_id, points)


_PROPOSERS: dict[tuple[str, str | None], DefectProposer] = {}
_PROPOSERS_LOCK = threading.Lock()


def load_proposer(weights: Path, device: str | None) -> DefectProposer:
    """One proposer per (weights, device), loaded on first use and kept for the process."""
    key = (str(Path(weights).resolve()), device)
    with _PROPOSERS_LOCK:
        if key not in _PROPOSERS:
            _PROPOSERS[key] = DefectProposer.from_weights(weights, device=device)
        return _PROPOSERS[key]


class DefectDetectionFunction:
    """A cvat-sdk ``DetectionFunction``: ``spec`` plus ``detect(context, image)``."""

    def __init__(self, settings: FunctionSettings, available: Sequence[str] | None = None):
        self.settings = settings
        wanted = settings.labels or (tuple(available) if available is not None else LABEL_NAMES)
        self.spec = make_spec(wanted)

    @property
    def proposer(self) -> DefectProposer:
        return load_proposer(self.settings.weights, self.settings.device)

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        rgb = pil_to_rgb(image)
        # cvat-sdk: None means "the function's choice"; like cvat-sdk's own functions, keep all.
        threshold = context.conf_threshold if context.conf_threshold is not None else 0.0
        options = self.settings.propose_options(threshold)
        spec_names = {label.name for label in self.spec.labels}
        if self.settings.labels is None and not spec_names.issuperset(self.proposer.labels):
            # Weights with a classifier the spec does not declare: cvat-sdk would reject its
            # shapes. Otherwise pass no list, so the order of proposals is Nuclio's.
            options["labels"] = [name for name in self.proposer.labels if name in spec_names]
        proposals = self.proposer.propose(rgb, **options)
        height, width = rgb.shape[:2]
        return [
            proposal_to_cvat_request(p, height, width, as_polygon=bool(context.conv_mask_to_poly))
            for p in proposals
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
    foreign = sorted(set(found) - set(LABEL_NAMES))
    if foreign:
        raise FunctionParameterError(
            f"weights in {settings.weights} have labels {foreign} that defectcam/core/labels.py "
            f"({list(LABEL_NAMES)}) does not list"
        )
    missing = [name for name in settings.labels or () if name not in found]
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
