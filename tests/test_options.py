"""The request contract, once: every option's bounds and default against ``ProposeOptions``
(in each face's spelling), the operator's limits, and the settings every face reads
(``defectcam.config``). The faces keep only their transport cases; tests/test_contract.py
runs one table through all of them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from defectcam.commands.propose import CLI, options_from_args
from defectcam.config import (
    CAM_THRESHOLD_ENV,
    CONFIDENCE_THRESHOLD_ENV,
    DEADLINE_ENV,
    ITERATIONS_ENV,
    LABELS_ENV,
    MAX_ITERATIONS_ENV,
    MAX_PIXELS_ENV,
    OPTION_DEFAULT_ENV,
    OUTPUT_ENV,
    PRECISION_ENV,
    PRECISION_NAMES,
    REPO_WEIGHTS,
    REQUEST_ENV,
    SCREEN_ENV,
    WEIGHTS_ENV,
    ConfigError,
    Settings,
    log_path,
    resolve_weights,
)
from defectcam.core.image_io import DEFAULT_MAX_PIXELS
from defectcam.core.options import (
    DEFAULT_MIN_CONFIDENCE,
    INTERNAL,
    MAX_ITERATIONS,
    Limits,
    OptionError,
    ProposeOptions,
    check_limits,
)
from defectcam.cvat_function import CVAT_SDK, options_for_frame, options_from_parameters
from defectcam.faces.nuclio import BODY, options_from_body, read_body, read_request

#: (option, value, the message's text after the key) -- each face's key goes in front.
INVALID = [
    ("min_confidence", "high", " must be a number, got string"),
    ("min_confidence", True, " must be a number, got boolean"),
    ("min_confidence", math.nan, " must be a number, got non-finite number nan"),
    ("min_confidence", 1.5, " must be in [0, 1], got 1.5"),
    ("min_confidence", -0.1, " must be in [0, 1], got -0.1"),
    ("iterations", 10**9, " must be between 0 and 32, got 1000000000"),
    ("iterations", -1, " must be between 0 and 32, got -1"),
    ("iterations", 1.5, " must be an integer, got number"),
    ("iterations", "2", " must be an integer, got string"),
    ("iterations", True, " must be an integer, got boolean"),
    ("cam_threshold", 0, " must be in (0, 1), got 0"),
    ("cam_threshold", 1.0, " must be in (0, 1), got 1.0"),
    ("cam_threshold", "0.1", " must be a number, got string"),
    ("labels", "crack", " must be a list of label names, got string"),
    ("labels", [1], " must be a list of label names, got array"),
    ("labels", [], " is empty; choose from ['crack', 'spalling', 'rust']"),
    ("output", "rectangle", " must be one of ['polygon', 'mask'], got 'rectangle'"),
    ("screen", "yes", " must be true or false, got string"),
    ("name", 5, " must be a string, got number"),
]


@pytest.mark.parametrize(("option", "value", "message"), INVALID)
@pytest.mark.parametrize("spelling", [INTERNAL, BODY, CVAT_SDK, CLI],
                         ids=["internal", "body", "cvat-sdk", "cli"])
def test_one_validation_names_the_key_as_each_face_spells_it(spelling, option, value,
                                                              message) -> None:
    with pytest.raises(OptionError) as info:
        ProposeOptions.build({option: value}, spelling)
    assert info.value.message == spelling.show(option) + message
    assert info.value.key == spelling.key(option) and info.value.status == 400


def test_face_spellings_of_the_confidence_threshold() -> None:
    """One internal name; CVAT's own names where CVAT fixes them."""
    assert BODY.show("min_confidence") == "'threshold'"
    assert CVAT_SDK.show("min_confidence") == "parameter 'conf_threshold'"
    assert CLI.show("min_confidence") == "--min-confidence"
    assert options_from_body({"threshold": 0.25}).min_confidence == 0.25
    assert options_from_body({"min_confidence": 0.25}).min_confidence == 0.5  # not a key


def test_unknown_labels_are_named_with_what_the_function_knows() -> None:
    limits = Limits(labels=("crack", "rust"))
    with pytest.raises(OptionError) as info:
        options_from_body({"labels": ["crack", "pothole", "spalling"]}, limits)
    assert info.value.message == ("unknown label(s) ['pothole', 'spalling'] in 'labels'; this "
                                  "function knows ['crack', 'rust']")


def test_values_are_normalised() -> None:
    options = options_from_body({"iterations": 2.0, "labels": ["rust", "crack", "rust"],
                                        "threshold": 1, "cam_threshold": 0.3})
    assert options.iterations == 2 and isinstance(options.iterations, int)
    assert options.labels == ("rust", "crack") and options.min_confidence == 1.0
    assert options_from_parameters({"labels": " crack, rust ,"}).labels == ("crack", "rust")


def test_one_default_everywhere() -> None:
    """No threshold sent, no --min-confidence, no conf_threshold: the function's 0.5."""
    cli = argparse.Namespace(min_confidence=None, iterations=None, cam_threshold=None,
                             labels=None, output="polygon", screen=None)
    defaults = [ProposeOptions(), options_from_body({}), options_from_args(cli),
                options_for_frame(options_from_parameters({}), None, True, None)]
    assert {o.min_confidence for o in defaults} == {DEFAULT_MIN_CONFIDENCE} == {0.5}
    # None: each classifier's own (iterations, cam_threshold, screen_threshold).
    assert {(o.iterations, o.cam_threshold, o.labels, o.screen) for o in defaults} == {
        (None, None, None, None)}


def test_operator_presets_and_caps() -> None:
    settings = Settings.from_env({CONFIDENCE_THRESHOLD_ENV: "0.3", MAX_ITERATIONS_ENV: "2"})
    limits = settings.limits()
    assert options_from_body({}, limits).min_confidence == 0.3
    assert options_from_body({"threshold": 0.0}, limits).min_confidence == 0.0
    assert options_from_body({"iterations": 2}, limits).iterations == 2
    with pytest.raises(OptionError) as info:
        options_from_body({"iterations": 3}, limits)
    assert info.value.message == ("'iterations' must be between 0 and 2 (limit set by "
                                  "DEFECTCAM_MAX_ITERATIONS), got 3")
    with pytest.raises(OptionError, match=r"^--iterations must be between 0 and 2"):
        check_limits(ProposeOptions(iterations=3), limits, CLI)  # built elsewhere


def test_direct_construction_checks_the_engine_bounds() -> None:
    """The proposer validates with the same type, so a library caller gets the same rule."""
    with pytest.raises(OptionError, match=rf"^iterations must be between 0 and {MAX_ITERATIONS}"):
        ProposeOptions(iterations=MAX_ITERATIONS + 1)
    assert ProposeOptions(labels=["efflorescence"]).labels == ("efflorescence",)  # any weights
    assert isinstance(OptionError("x"), ValueError)


def test_propose_and_log_forms() -> None:
    options = ProposeOptions(min_confidence=0.2, iterations=1, labels=("rust",), output="mask",
                             screen=True, name="a.jpg")
    assert options.propose_kwargs() == {"iterations": 1, "cam_threshold": None,
                                        "labels": ["rust"], "screen": True}
    assert options.to_log() == {"min_confidence": 0.2, "iterations": 1, "cam_threshold": None,
                                "labels": ["rust"], "output": "mask", "screen": True}


# --------------------------------------------------------------------------- transport


def test_request_body_parsing() -> None:
    image, options = read_request(b'{"image": "abc", "threshold": 0.7, "extra": 1}')
    assert image == "abc" and options.min_confidence == 0.7
    with pytest.raises(OptionError) as info:
        read_body('{"image": "x')
    assert "at at" not in info.value.message  # issue 14.11
    assert info.value.message == ("request body is not valid JSON (Unterminated string "
                                  "starting at: line 1 column 11 (char 10))")
    with pytest.raises(OptionError) as info:
        read_request({"image": "abc", "threshold": 2})
    assert info.value.key == "threshold"


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_origins(tmp_path) -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.weights, settings.device, settings.precision) == (REPO_WEIGHTS, None, "auto")
    assert (settings.max_pixels, settings.max_iterations, settings.min_confidence) == (
        DEFAULT_MAX_PIXELS, MAX_ITERATIONS, DEFAULT_MIN_CONFIDENCE)
    assert set(settings.origins.values()) == {"default"}
    env = {WEIGHTS_ENV: str(tmp_path), MAX_PIXELS_ENV: "1000", "DEFECTCAM_DEVICE": "auto",
           MAX_ITERATIONS_ENV: "2", "DEFECTCAM_LOG_DB": "off"}
    settings = Settings.from_env(env, origins={MAX_ITERATIONS_ENV: "function.yaml"})
    assert (settings.weights, settings.max_pixels, settings.device, settings.log_db) == (
        tmp_path, 1000, None, None)
    assert settings.origins["max_pixels"] == MAX_PIXELS_ENV
    assert settings.origins["max_iterations"] == "function.yaml"
    assert "max_iterations = 2 (function.yaml)" in settings.describe()
    changed = settings.override("command line", max_pixels=5, log_db=None)
    assert changed.max_pixels == 5 and changed.origins["max_pixels"] == "command line"
    with pytest.raises(TypeError):
        settings.override("x", colour="red")


@pytest.mark.parametrize(("name", "value", "message"), [
    (MAX_PIXELS_ENV, "lots", "DEFECTCAM_MAX_PIXELS='lots' is not a valid int"),
    (MAX_PIXELS_ENV, "-5", "DEFECTCAM_MAX_PIXELS must be at least 1, got -5"),
    (MAX_PIXELS_ENV, "0", "DEFECTCAM_MAX_PIXELS must be at least 1, got 0"),
    (MAX_ITERATIONS_ENV, "99", "DEFECTCAM_MAX_ITERATIONS must be within 0..32, got 99"),
    (CONFIDENCE_THRESHOLD_ENV, "1.5", "DEFECTCAM_CONFIDENCE_THRESHOLD must be within 0.0..1.0"),
    (CONFIDENCE_THRESHOLD_ENV, "nan", "DEFECTCAM_CONFIDENCE_THRESHOLD must be within"),
    (PRECISION_ENV, "fp8", "DEFECTCAM_PRECISION must be one of ['auto', 'fp32', 'bf16', 'fp16']"),
])
def test_bad_settings_name_the_variable(name, value, message) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(message)


def test_one_weights_resolver_and_log_path(tmp_path) -> None:
    assert resolve_weights(None, {}) == REPO_WEIGHTS
    assert resolve_weights(None, {WEIGHTS_ENV: str(tmp_path)}) == tmp_path
    assert resolve_weights(tmp_path / "x", {WEIGHTS_ENV: "elsewhere"}) == tmp_path / "x"
    assert log_path({"DEFECTCAM_LOG_DB": " off "}) is None
    assert log_path({"DEFECTCAM_LOG_DB": str(tmp_path / "l.db")}) == tmp_path / "l.db"


def test_precision_names_are_the_predictors() -> None:
    from defectcam.core.device import PRECISION_CHOICES
    from defectcam.core.predictor import PRECISIONS

    assert PRECISION_CHOICES == PRECISION_NAMES == ("auto", *PRECISIONS)


def test_public_api() -> None:
    import defectcam

    assert defectcam.ProposeOptions is ProposeOptions and defectcam.Settings is Settings
    for name in defectcam.__all__:
        assert getattr(defectcam, name) is not None
    with pytest.raises(AttributeError):
        defectcam.not_a_name  # noqa: B018
    assert Path(defectcam.__file__).parent.name == "defectcam"


# --------------------------------------------------------------------------- request defaults


def test_every_cvat_option_has_an_environment_default() -> None:
    """CVAT sends only image and threshold: each other option an operator needs for CVAT's
    calls has a variable, read once, checked by the contract (issue 15.2)."""
    assert set(OPTION_DEFAULT_ENV) == {"min_confidence", "iterations", "cam_threshold",
                                       "labels", "output", "screen"}
    assert set(OPTION_DEFAULT_ENV.values()) | {MAX_PIXELS_ENV, MAX_ITERATIONS_ENV,
                                               DEADLINE_ENV} == set(REQUEST_ENV)
    env = {ITERATIONS_ENV: "3", LABELS_ENV: "rust, crack", OUTPUT_ENV: "mask",
           CAM_THRESHOLD_ENV: "0.2", SCREEN_ENV: "yes", DEADLINE_ENV: "90"}
    settings = Settings.from_env(env)
    assert (settings.iterations, settings.labels, settings.output, settings.cam_threshold,
            settings.screen, settings.deadline) == (3, ("rust", "crack"), "mask", 0.2, True, 90)
    options = options_from_body({}, settings.limits())
    assert (options.iterations, options.labels, options.output, options.cam_threshold,
            options.screen) == (3, ("rust", "crack"), "mask", 0.2, True)
    sent = options_from_body({"iterations": 1, "labels": ["crack"], "output": "polygon",
                                     "cam_threshold": 0.3, "screen": False}, settings.limits())
    assert (sent.iterations, sent.labels, sent.output, sent.cam_threshold, sent.screen) == (
        1, ("crack",), "polygon", 0.3, False)
    assert "deadline = 90 s (DEFECTCAM_DEADLINE)" in settings.describe()
    empty = Settings.from_env(dict.fromkeys(env, ""))
    assert empty == Settings() and empty.deadline is None


def test_the_maximum_caps_the_default_steps() -> None:
    settings = Settings.from_env({ITERATIONS_ENV: "4", MAX_ITERATIONS_ENV: "1"})
    assert settings.default_iterations == 1
    assert options_from_body({}, settings.limits()).iterations == 1
    assert "iterations = 1 (4 capped by max_iterations) (DEFECTCAM_ITERATIONS)" in (
        settings.describe())
    with pytest.raises(OptionError, match="limit set by DEFECTCAM_MAX_ITERATIONS"):
        options_from_body({"iterations": 2}, settings.limits())
    # The classifiers' own steps are capped by the service (tests/test_nuclio_handler.py).
    assert Settings.from_env({MAX_ITERATIONS_ENV: "0"}).limits().defaults["iterations"] is None


@pytest.mark.parametrize(("name", "value", "message"), [
    (ITERATIONS_ENV, "two", "DEFECTCAM_ITERATIONS='two' is not a valid int"),
    (ITERATIONS_ENV, "33", "DEFECTCAM_ITERATIONS must be within 0..32, got 33"),
    (LABELS_ENV, "crack,pothole", "unknown label(s) ['pothole'] in DEFECTCAM_LABELS"),
    (OUTPUT_ENV, "box", "DEFECTCAM_OUTPUT must be one of ['polygon', 'mask'], got 'box'"),
    (CAM_THRESHOLD_ENV, "1.5", "DEFECTCAM_CAM_THRESHOLD must be in (0, 1), got 1.5"),
    (CAM_THRESHOLD_ENV, "inf", "DEFECTCAM_CAM_THRESHOLD must be a finite number, got inf"),
    (SCREEN_ENV, "maybe", "DEFECTCAM_SCREEN must be true or false, got 'maybe'"),
    (DEADLINE_ENV, "0", "DEFECTCAM_DEADLINE must be a number of seconds above 0"),
    (DEADLINE_ENV, "soon", "DEFECTCAM_DEADLINE='soon' is not a valid float"),
])
def test_bad_request_defaults_name_the_variable(name, value, message) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(message)
