"""The request contract: every option of a proposal request, its bounds and its default,
defined once under its internal name, and one validation that raises :class:`OptionError`
naming the key as the calling face spells it (a :class:`Spelling` the face passes in).

Options (bounds; default): ``min_confidence`` ([0, 1]; 0.5: a proposal's confidence must
reach it), ``iterations`` (AdvCAM steps, 0..32; the weights'), ``cam_threshold`` (the map's
binarisation, (0, 1); the weights'), ``labels`` (known labels; all), ``output`` (polygon or
mask), ``screen`` (bool; the weights' ``screen_threshold``) and ``name`` (the file's name).
An operator's :class:`Limits` cap the iterations and preset defaults for keys a request
leaves out. Each face maps its own spelling onto these names (``defectcam.faces.nuclio``,
``defectcam.cvat_function``, ``defectcam.commands.propose``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from defectcam.core.labels import LABEL_NAMES

#: The most AdvCAM steps a request may ask for: each costs a forward and a backward per tile.
MAX_ITERATIONS = 32
#: Confidence a proposal needs when a request sets none (CVAT's dialog default too).
DEFAULT_MIN_CONFIDENCE = 0.5
#: CVAT shape types a face can answer.
OUTPUT_TYPES = ("polygon", "mask")


class OptionError(ValueError):
    """A request option (or the request itself) is wrong: answered with ``status`` (400) and
    the message; ``key`` is the option as the face that received it spells it."""

    def __init__(self, message: str, key: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.key, self.status = message, key, status


@dataclass(frozen=True)
class Limits:
    """What an operator allows and presets for requests.

    ``max_iterations``: the most AdvCAM steps a request may ask for (named in the error as
    ``max_iterations_source``, e.g. ``DEFECTCAM_MAX_ITERATIONS``, when set); ``labels``: what
    the loaded weights (or the function spec) know; ``defaults``: option -> value for
    requests that leave the key out (overrides the contract's default).
    """

    max_iterations: int = MAX_ITERATIONS
    max_iterations_source: str | None = None
    labels: tuple[str, ...] = LABEL_NAMES
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def default(self, option: str) -> Any:
        """The value a request that leaves ``option`` out gets: the operator's, else the
        contract's."""
        if option in self.defaults:
            return self.defaults[option]
        return _DEFAULTS[option]


@dataclass(frozen=True)
class Spelling:
    """How one face names the options: ``keys`` maps an option to the face's key where the
    two differ; ``quote`` shows a key in a message (``'{}'`` gives ``'threshold'``)."""

    keys: Mapping[str, str] = field(default_factory=dict)
    quote: str = "{}"

    def key(self, option: str) -> str:
        return self.keys.get(option, option)

    def show(self, option: str) -> str:
        return self.quote.format(self.key(option))


#: The internal names (library callers, the interaction log).
INTERNAL = Spelling()


@dataclass(frozen=True)
class ProposeOptions:
    """One proposal request's options, validated (see the module docstring for each)."""

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    iterations: int | None = None
    cam_threshold: float | None = None
    labels: tuple[str, ...] | None = None
    output: str = "polygon"
    screen: bool | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        # Direct construction is checked against the engine's bounds (any label list); the
        # face constructors check first, with the face's key names and the operator's limits.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        checked = _validate(values, INTERNAL, Limits(labels=()), labels_known=False)
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def build(cls, values: Mapping[str, Any], spelling: Spelling = INTERNAL,
              limits: Limits | None = None) -> ProposeOptions:
        """Options from the values a face received, checked against the operator's limits.

        Args:
            values: internal option name -> value as the face received it (absent or
                ``None``: the limits' default, else the contract's).
            spelling: how the face names the options, for its error messages.
            limits: the operator's caps and defaults (``None``: the engine's bounds).

        Returns:
            The validated options.

        Raises:
            OptionError: a value is out of bounds; its ``key`` is the face's spelling.
            TypeError: ``values`` holds a name that is no option (a bug in the face).
        """
        limits = limits or Limits()
        given = {key: value for key, value in values.items() if value is not None}
        unknown = sorted(set(given) - set(_DEFAULTS))
        if unknown:
            raise TypeError(f"not request options: {unknown}")
        full = {option: given.get(option, limits.default(option)) for option in _DEFAULTS}
        return cls(**_validate(full, spelling, limits))

    # ------------------------------------------------------------------ uses

    def propose_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``DefectProposer.propose_detailed`` (which keeps every
        proposal: ``min_confidence`` is applied by the service that counts what it drops)."""
        return {"iterations": self.iterations, "cam_threshold": self.cam_threshold,
                "labels": list(self.labels) if self.labels is not None else None,
                "screen": self.screen}

    def to_log(self) -> dict[str, Any]:
        """The options as the interaction log records them (internal names, no file name)."""
        data = dataclasses.asdict(self)
        data.pop("name")
        data["labels"] = list(self.labels) if self.labels is not None else None
        return data

    def replace(self, **values: Any) -> ProposeOptions:
        return dataclasses.replace(self, **values)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ProposeOptions)}
#: Every option's internal name.
OPTION_NAMES = tuple(_DEFAULTS)


def check_limits(options: ProposeOptions, limits: Limits, spelling: Spelling = INTERNAL) -> None:
    """Check options built elsewhere (a library caller's) against a worker's limits.

    Args:
        options: the options to check.
        limits: the worker's caps and the labels it knows.
        spelling: how the calling face names the options, for the message.

    Raises:
        OptionError: ``options`` ask for more than ``limits`` allow.
    """
    _validate(dataclasses.asdict(options), spelling, limits)


# ---------------------------------------------------------------------- validation


def split_labels(value: Any) -> Any:
    """A comma-separated label list as a list (other values are left for validation).

    Args:
        value: ``"crack, rust"`` from a command line or a parameter, or anything else.

    Returns:
        ``["crack", "rust"]`` for a string, ``value`` itself otherwise.
    """
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


def _validate(values: dict[str, Any], spelling: Spelling, limits: Limits,
              labels_known: bool = True) -> dict[str, Any]:
    out = dict(values)
    out["min_confidence"] = _number(values["min_confidence"], "min_confidence", spelling,
                                    closed=True)
    if values["iterations"] is not None:
        out["iterations"] = _iterations(values["iterations"], spelling, limits)
    if values["cam_threshold"] is not None:
        out["cam_threshold"] = _number(values["cam_threshold"], "cam_threshold", spelling,
                                       closed=False)
    if values["labels"] is not None:
        out["labels"] = _labels(values["labels"], spelling, limits.labels if labels_known
                                else None)
    if values["output"] not in OUTPUT_TYPES:
        raise OptionError(f"{spelling.show('output')} must be one of {list(OUTPUT_TYPES)}, "
                          f"got {values['output']!r}", spelling.key("output"))
    if values["screen"] is not None and not isinstance(values["screen"], bool):
        raise OptionError(f"{spelling.show('screen')} must be true or false, got "
                          f"{json_type(values['screen'])}", spelling.key("screen"))
    if values["name"] is not None and not isinstance(values["name"], str):
        raise OptionError(f"{spelling.show('name')} must be a string, got "
                          f"{json_type(values['name'])}", spelling.key("name"))
    return out


def _number(value: Any, option: str, spelling: Spelling, closed: bool) -> float:
    key, shown = spelling.key(option), spelling.show(option)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(f"{shown} must be a number, got {json_type(value)}", key)
    inside = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
    if not inside:
        raise OptionError(f"{shown} must be in {'[0, 1]' if closed else '(0, 1)'}, got {value}",
                          key)
    return float(value)


def _iterations(value: Any, spelling: Spelling, limits: Limits) -> int:
    key, shown = spelling.key("iterations"), spelling.show("iterations")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{shown} must be an integer, got {json_type(value)}", key)
    high = min(limits.max_iterations, MAX_ITERATIONS)
    if not 0 <= value <= high:
        source = f" (limit set by {limits.max_iterations_source})" if (
            limits.max_iterations_source) else ""
        raise OptionError(f"{shown} must be between 0 and {high}{source}, got {value}", key)
    return value


def _labels(value: Any, spelling: Spelling, known: tuple[str, ...] | None) -> tuple[str, ...]:
    key, shown = spelling.key("labels"), spelling.show("labels")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptionError(f"{shown} must be a list of label names, got {json_type(value)}", key)
    if not value:
        raise OptionError(f"{shown} is empty; choose from {list(known or LABEL_NAMES)}", key)
    if known is not None:
        unknown = sorted({v for v in value if v not in known})
        if unknown:
            raise OptionError(f"unknown label(s) {unknown} in {shown}; this function knows "
                              f"{list(known)}", key)
    return tuple(dict.fromkeys(value))


def json_type(value: Any) -> str:
    """The JSON type of a value, for messages ("got string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(value) else f"non-finite number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------- interactor requests

#: Most points of one kind an interactor request may carry (each is a click in CVAT).
MAX_POINTS = 100


@dataclass(frozen=True)
class InteractOptions:
    """One interactor request's options (CVAT's AI Tools > Interactors), validated.

    Body keys, as CVAT's ``lambda_manager`` sends them: ``pos_points`` (at least one
    ``[x, y]`` in frame pixels), ``neg_points`` (``[x, y]`` list, may be empty or absent),
    ``obj_bbox`` (``[[x1, y1], [x2, y2]]``; null or ``[]``: none). Other clients may add
    ``label`` (the defect whose classifier answers; default: the function's only one),
    ``iterations``,
    ``cam_threshold`` (as for proposals) and ``name`` (recorded in the interaction log).
    Whether the points lie inside the frame is checked once the frame is decoded
    (:meth:`check_frame`).
    """

    pos_points: tuple[tuple[float, float], ...]
    neg_points: tuple[tuple[float, float], ...] = ()
    obj_bbox: tuple[float, float, float, float] | None = None
    label: str | None = None
    iterations: int | None = None
    cam_threshold: float | None = None
    name: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], limits: Limits | None = None
                  ) -> InteractOptions:
        """From a Nuclio / HTTP JSON body (a dict; ``image`` and unknown keys are left to the
        caller); raises :class:`OptionError` naming the key."""
        limits = limits or Limits()
        if body.get("pos_points") is None:
            raise OptionError("missing 'pos_points': expected a list of [x, y] clicks on the "
                              "defect (at least one)", "pos_points")
        positive = _points(body["pos_points"], "pos_points")
        if not positive:
            raise OptionError("'pos_points' is empty: click at least once on the defect",
                              "pos_points")
        negative = _points(body.get("neg_points") or [], "neg_points")
        box = _box(body.get("obj_bbox"))
        label = body.get("label")
        if label is not None:
            if not isinstance(label, str):
                raise OptionError(f"'label' must be a string, got {json_type(label)}", "label")
            if label not in limits.labels:
                raise OptionError(f"label {label!r} has no weights in this function; it "
                                  f"answers {list(limits.labels)}", "label")
        # iterations, cam_threshold and name: the proposal contract's rules and messages
        common = ProposeOptions.build(
            {"iterations": body.get("iterations"), "cam_threshold": body.get("cam_threshold"),
             "name": body.get("name")}, Spelling(quote="'{}'"), limits)
        return cls(positive, negative, box, label, common.iterations, common.cam_threshold,
                   common.name)

    def check_frame(self, width: int, height: int) -> None:
        """Raise :class:`OptionError` (naming the key) for a point or box outside a
        ``width`` x ``height`` frame."""
        for key, points in (("pos_points", self.pos_points), ("neg_points", self.neg_points)):
            for x, y in points:
                if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                    raise OptionError(f"'{key}' point [{x:g}, {y:g}] is outside the "
                                      f"{width} x {height} frame", key)
        if self.obj_bbox is not None:
            x1, y1, x2, y2 = self.obj_bbox
            if x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1:
                raise OptionError(f"'obj_bbox' {list(self.obj_bbox)} lies outside the "
                                  f"{width} x {height} frame", "obj_bbox")

    def to_log(self) -> dict[str, Any]:
        """The options as the interaction log records them (the clicks in frame pixels)."""
        return {"pos_points": [list(p) for p in self.pos_points],
                "neg_points": [list(p) for p in self.neg_points],
                "obj_bbox": list(self.obj_bbox) if self.obj_bbox is not None else None,
                "label": self.label, "iterations": self.iterations,
                "cam_threshold": self.cam_threshold}


def _finite_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def _points(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, (list, tuple)):
        raise OptionError(f"'{key}' must be a list of [x, y] points, got {json_type(value)}",
                          key)
    if len(value) > MAX_POINTS:
        raise OptionError(f"'{key}' has {len(value)} points; at most {MAX_POINTS}", key)
    out = []
    for point in value:
        if not (isinstance(point, (list, tuple)) and len(point) == 2
                and all(_finite_number(v) for v in point)):
            shown = point if isinstance(point, (list, tuple)) else json_type(point)
            raise OptionError(f"'{key}' must be a list of [x, y] number pairs, got an item "
                              f"{shown!r}", key)
        out.append((float(point[0]), float(point[1])))
    return tuple(out)


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None  # CVAT's newer UI sends [] when no box was drawn
    flat = value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (list, tuple)) for v in value):
        flat = [*value[0], *value[1]]
    if not (isinstance(flat, (list, tuple)) and len(flat) == 4
            and all(_finite_number(v) for v in flat)):
        raise OptionError("'obj_bbox' must be null or [[x1, y1], [x2, y2]]", "obj_bbox")
    x1, y1, x2, y2 = (float(v) for v in flat)
    if x2 < x1 or y2 < y1:
        raise OptionError(f"'obj_bbox' {list(flat)} has its second corner above or left of "
                          "its first", "obj_bbox")
    return x1, y1, x2, y2
