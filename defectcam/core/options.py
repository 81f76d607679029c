"""The request contract: every option of a proposal request, its bounds and its default,
defined once under its internal name, and one validation that raises :class:`OptionError`
naming the key as the calling face spells it (a :class:`Spelling` the face passes in).

Options (bounds; default): ``min_confidence`` ([0, 1]; 0.5: a proposal's confidence must
reach it), ``iterations`` (AdvCAM steps, 0..32; the weights'), ``cam_threshold`` (the map's
binarisation, (0, 1); the weights'), ``labels`` (known labels; all), ``output`` (polygon or
mask), ``screen`` (bool; the weights' ``screen_threshold``) and ``name`` (the file's name).
An operator's :class:`Limits` cap the iterations and preset defaults for keys a request
leaves out. Each face maps its own spelling onto these names (``defectcam.nuclio``,
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
