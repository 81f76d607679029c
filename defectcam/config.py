"""Every ``DEFECTCAM_*`` environment variable, read here and nowhere else, and the one
weights resolver.

:class:`Settings` is what an operator sets for a worker; every face builds it with
:meth:`Settings.from_env` and hands the core what it needs as arguments. What each variable
sets and its value when unset: docs/deploy.md, "Environment variables". This module imports
nothing heavy: the console script reads it before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectcam.core.image_io import DEFAULT_MAX_PIXELS
from defectcam.core.labels import LABEL_NAMES
from defectcam.core.options import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_ITERATIONS,
    Limits,
    OptionError,
    ProposeOptions,
    Spelling,
)

WEIGHTS_ENV = "DEFECTCAM_WEIGHTS"
DEVICE_ENV = "DEFECTCAM_DEVICE"
PRECISION_ENV = "DEFECTCAM_PRECISION"
MAX_PIXELS_ENV = "DEFECTCAM_MAX_PIXELS"
MAX_ITERATIONS_ENV = "DEFECTCAM_MAX_ITERATIONS"
CONFIDENCE_THRESHOLD_ENV = "DEFECTCAM_CONFIDENCE_THRESHOLD"
ITERATIONS_ENV = "DEFECTCAM_ITERATIONS"
LABELS_ENV = "DEFECTCAM_LABELS"
OUTPUT_ENV = "DEFECTCAM_OUTPUT"
CAM_THRESHOLD_ENV = "DEFECTCAM_CAM_THRESHOLD"
SCREEN_ENV = "DEFECTCAM_SCREEN"
DEADLINE_ENV = "DEFECTCAM_DEADLINE"
LOG_DB_ENV = "DEFECTCAM_LOG_DB"
LOG_SYNC_ENV = "DEFECTCAM_LOG_SYNC"
MAX_BODY_ENV = "DEFECTCAM_MAX_BODY_BYTES"
MALLOC_TUNING_ENV = "DEFECTCAM_MALLOC_TUNING"
SHARED_DATA_ENV = "DEFECTCAM_SHARED_DATA"

#: Request option -> the variable that presets it for requests without the key (each has the
#: option's name as a :class:`Settings` field; :meth:`Settings.limits` hands them on).
OPTION_DEFAULT_ENV = {
    "min_confidence": CONFIDENCE_THRESHOLD_ENV,
    "iterations": ITERATIONS_ENV,
    "labels": LABELS_ENV,
    "output": OUTPUT_ENV,
    "cam_threshold": CAM_THRESHOLD_ENV,
    "screen": SCREEN_ENV,
}
#: What a request may ask for, what it gets by default and how long it may take: the yaml
#: files set these, and ``defectcam serve`` reads them from there.
REQUEST_ENV = (MAX_PIXELS_ENV, MAX_ITERATIONS_ENV, *OPTION_DEFAULT_ENV.values(), DEADLINE_ENV)
#: The request contract's messages, with each option named by its variable.
ENV_SPELLING = Spelling(OPTION_DEFAULT_ENV)
DEADLINE_OFF_VALUES = ("", "off", "none")
BOOLEAN_VALUES = {"true": True, "1": True, "yes": True, "on": True,
                  "false": False, "0": False, "no": False, "off": False}

REPO = Path(__file__).resolve().parents[1]
#: The repository's weights/ folder (exists in a source checkout / editable install).
REPO_WEIGHTS = REPO / "weights"
#: Inside the Nuclio container (the function directory is copied to /opt/nuclio); the
#: function yaml mounts a volume on /opt/nuclio/data so that the log outlives the container.
CONTAINER_LOG_PATH = Path("/opt/nuclio/data/defectcam-log.sqlite")
LOCAL_LOG_PATH = Path("runs/defectcam-log.sqlite")
LOG_DISABLED_VALUES = ("", "off", "none", "false", "0", "disabled")
LOG_SYNC_VALUES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: ``defectcam.core.device.PRECISION_CHOICES`` (named here without importing torch;
#: tests/test_options.py keeps them equal): ``auto`` and the keys of ``PRECISIONS``.
PRECISION_NAMES = ("auto", "fp32", "bf16", "fp16")
#: Same as ``maxRequestBodySize`` in function.yaml / function-gpu.yaml.
DEFAULT_MAX_BODY_BYTES = 134_217_728


#: Setting -> the variable that sets it.
_VARIABLES = {
    "weights": WEIGHTS_ENV, "device": DEVICE_ENV, "precision": PRECISION_ENV,
    "max_pixels": MAX_PIXELS_ENV, "max_iterations": MAX_ITERATIONS_ENV,
    **OPTION_DEFAULT_ENV, "deadline": DEADLINE_ENV, "log_db": LOG_DB_ENV,
}


class ConfigError(ValueError):
    """A setting an operator got wrong; the message names the variable (or option)."""


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _raw(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def resolve_weights(explicit: str | Path | None = None,
                    environ: Mapping[str, str] | None = None) -> Path:
    """The weights to load.

    Args:
        explicit: a path given on a command line or as a parameter (``None`` or blank: none).
        environ: the environment (default ``os.environ``).

    Returns:
        ``explicit``, else ``$DEFECTCAM_WEIGHTS``, else ``weights/`` of the repository.
    """
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    value = _raw(_environ(environ), WEIGHTS_ENV)
    return Path(value).expanduser() if value else REPO_WEIGHTS


def log_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """``DEFECTCAM_LOG_DB``; unset: the container path when /opt/nuclio exists, else
    ./runs/defectcam-log.sqlite; empty or "off": ``None`` (logging disabled)."""
    raw = _environ(environ).get(LOG_DB_ENV)
    if raw is None:
        return CONTAINER_LOG_PATH if CONTAINER_LOG_PATH.parent.parent.is_dir() else LOCAL_LOG_PATH
    return parse_log_path(raw)


def parse_log_path(value: str) -> Path | None:
    """A log path as an operator writes it: empty or "off" switch the log off."""
    if value.strip().lower() in LOG_DISABLED_VALUES:
        return None
    return Path(value.strip()).expanduser()


def log_sync(environ: Mapping[str, str] | None = None) -> str:
    """``DEFECTCAM_LOG_SYNC`` (SQLite ``synchronous`` of the interaction log)."""
    value = (_raw(_environ(environ), LOG_SYNC_ENV) or "NORMAL").upper()
    if value not in LOG_SYNC_VALUES:
        raise ConfigError(f"{LOG_SYNC_ENV} must be NORMAL or FULL, got {value!r}")
    return value


def max_body_bytes(environ: Mapping[str, str] | None = None,
                   default: int = DEFAULT_MAX_BODY_BYTES) -> int:
    """``DEFECTCAM_MAX_BODY_BYTES`` for ``defectcam serve`` (Nuclio's ``maxRequestBodySize``)."""
    return _number(_environ(environ), MAX_BODY_ENV, default, int, low=1)


def malloc_tuning(environ: Mapping[str, str] | None = None) -> bool:
    """False when ``DEFECTCAM_MALLOC_TUNING=0`` switches the CPU malloc tuning off."""
    return _raw(_environ(environ), MALLOC_TUNING_ENV) != "0"


def shared_data_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DEFECTCAM_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    value = _raw(_environ(environ), SHARED_DATA_ENV)
    return Path(value) if value else REPO.parent / "shared" / "data"


def _number(environ: Mapping[str, str], name: str, default, kind, low=None, high=None):
    raw = _raw(environ, name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or (
            low is not None and value < low) or (high is not None and value > high):
        bounds = ("a finite number" if low is None and high is None else f"at least {low}"
                  if high is None else f"within {low}..{high}")
        raise ConfigError(f"{name} must be {bounds}, got {raw}")
    return value


def _option_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """The request defaults the environment sets (:data:`OPTION_DEFAULT_ENV`), checked by the
    request contract with each option named by its variable; unset or empty: the contract's
    default (``None`` for the classifiers' own values)."""
    raw = {option: _raw(environ, name) for option, name in OPTION_DEFAULT_ENV.items()}
    values: dict[str, Any] = {
        "min_confidence": _number(environ, CONFIDENCE_THRESHOLD_ENV, DEFAULT_MIN_CONFIDENCE,
                                  float, 0.0, 1.0),
        "iterations": _number(environ, ITERATIONS_ENV, None, int, 0, MAX_ITERATIONS),
        "cam_threshold": _number(environ, CAM_THRESHOLD_ENV, None, float),
        "labels": [name.strip() for name in raw["labels"].split(",") if name.strip()] or None,
        "output": raw["output"] or None,
        "screen": None,
    }
    if raw["screen"]:
        if raw["screen"].lower() not in BOOLEAN_VALUES:
            raise ConfigError(f"{SCREEN_ENV} must be true or false, got {raw['screen']!r}")
        values["screen"] = BOOLEAN_VALUES[raw["screen"].lower()]
    try:
        options = ProposeOptions.build(values, ENV_SPELLING, Limits(labels=LABEL_NAMES))
    except OptionError as exc:
        raise ConfigError(exc.message) from None
    return {option: getattr(options, option) for option in OPTION_DEFAULT_ENV}


def _deadline(environ: Mapping[str, str]) -> float | None:
    raw = _raw(environ, DEADLINE_ENV)
    if raw.lower() in DEADLINE_OFF_VALUES:
        return None
    value = _number(environ, DEADLINE_ENV, None, float)
    if not value > 0:
        raise ConfigError(f"{DEADLINE_ENV} must be a number of seconds above 0 (unset, empty "
                          f"or 'off' for no deadline), got {raw}")
    return value


@dataclass(frozen=True)
class Settings:
    """What an operator sets for a worker: where the weights are, how they run, the request
    limits and defaults, and where the interaction log goes. ``origins`` says, per setting,
    where its value came from (an environment variable, a file, the command line, default)."""

    weights: Path | tuple[Path, ...] = REPO_WEIGHTS
    device: str | None = None
    precision: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_iterations: int = MAX_ITERATIONS
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    iterations: int | None = None
    labels: tuple[str, ...] | None = None
    output: str = "polygon"
    cam_threshold: float | None = None
    screen: bool | None = None
    deadline: float | None = None
    log_db: Path | None = LOCAL_LOG_PATH
    malloc_tuning: bool = True
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.device is not None and self.device.strip().lower() in ("", "auto"):
            object.__setattr__(self, "device", None)  # auto: CUDA when present

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 origins: Mapping[str, str] | None = None) -> Settings:
        """The settings an environment sets.

        Args:
            environ: the variables (default ``os.environ``).
            origins: variable -> where it came from, for variables that did not come from
                the environment (``defectcam serve``: the function's yaml).

        Returns:
            The settings, each with its origin in ``origins``.

        Raises:
            ConfigError: a variable's value is invalid; the message names it.
        """
        env = _environ(environ)
        device = _raw(env, DEVICE_ENV) or None
        precision = _raw(env, PRECISION_ENV) or "auto"
        if precision not in PRECISION_NAMES:
            raise ConfigError(
                f"{PRECISION_ENV} must be one of {list(PRECISION_NAMES)}, got {precision!r}")
        labels = dict(origins or {})
        where = {}
        for key, name in _VARIABLES.items():
            given = name in env if name == LOG_DB_ENV else bool(_raw(env, name))
            where[key] = labels.get(name, name) if given else "default"
        return cls(
            weights=resolve_weights(None, env),
            device=device,
            precision=precision,
            max_pixels=_number(env, MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, int, low=1),
            max_iterations=_number(env, MAX_ITERATIONS_ENV, MAX_ITERATIONS, int, 0,
                                   MAX_ITERATIONS),
            **_option_defaults(env),
            deadline=_deadline(env),
            log_db=log_path(env),
            malloc_tuning=malloc_tuning(env),
            origins=where,
        )

    def override(self, origin: str, **values: Any) -> Settings:
        """These settings with ``values`` replaced (command-line options, cvat-sdk parameters:
        pass only those given), their origin recorded as ``origin``."""
        for key in values:
            if key not in self.__dataclass_fields__ or key == "origins":
                raise TypeError(f"unknown setting {key!r}")
        return dataclasses.replace(self, **values,
                                   origins={**self.origins, **dict.fromkeys(values, origin)})

    @property
    def default_iterations(self) -> int | None:
        """The AdvCAM steps of a request without ``iterations``: ``iterations`` capped by
        ``max_iterations`` (``None``: each classifier's own, which the service caps)."""
        return None if self.iterations is None else min(self.iterations, self.max_iterations)

    def limits(self, labels: tuple[str, ...] | None = None) -> Limits:
        """The request limits and defaults these settings impose (``labels``: what the loaded
        weights know; default: every label of the function spec)."""
        defaults = {option: getattr(self, option) for option in OPTION_DEFAULT_ENV}
        defaults["iterations"] = self.default_iterations
        source = MAX_ITERATIONS_ENV if self.max_iterations < MAX_ITERATIONS else None
        kwargs = {"labels": tuple(labels)} if labels is not None else {}
        return Limits(max_iterations=self.max_iterations, max_iterations_source=source,
                      defaults=defaults, **kwargs)

    def as_dict(self) -> dict[str, str]:
        """Every setting as text (for a log line)."""
        if self.iterations is None:
            iterations = f"each classifier's own, at most {self.max_iterations}"
        elif self.default_iterations != self.iterations:
            iterations = f"{self.default_iterations} ({self.iterations} capped by max_iterations)"
        else:
            iterations = str(self.iterations)
        return {
            "weights": str(self.weights), "device": self.device or "auto",
            "precision": self.precision, "max_pixels": str(self.max_pixels),
            "max_iterations": str(self.max_iterations),
            "min_confidence": f"{self.min_confidence:g}",
            "iterations": iterations,
            "labels": ",".join(self.labels) if self.labels else "all",
            "output": self.output,
            "cam_threshold": ("each classifier's own" if self.cam_threshold is None
                              else f"{self.cam_threshold:g}"),
            "screen": ("each classifier's own" if self.screen is None
                       else str(self.screen).lower()),
            "deadline": "none" if self.deadline is None else f"{self.deadline:g} s",
            "log_db": str(self.log_db) if self.log_db else "off",
        }

    def describe(self) -> list[str]:
        """One line per setting: its value and where it came from."""
        return [f"{key} = {value} ({self.origins.get(key, 'default')})"
                for key, value in self.as_dict().items()]
