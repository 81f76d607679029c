"""One contract table, run against every face: the Nuclio handler, ``defectcam serve`` over HTTP,
the cvat-sdk function and ``defectcam propose``.

Each case is a request in the contract's own names (``defectcam.core.options``); each face
sends it in its own spelling and transport, with function.yaml's limits. A valid request must
get exactly the service's answer (same labels, polygons and mask pixels, in the same order)
and land in that face's interaction log; an invalid one must be refused naming the key as the
face spells it. The validation rules themselves are tests/test_options.py's.
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import PIL.Image
import pytest
from cvat_sdk.auto_annotation.driver import _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask

import defectcam.cvat_function as cf
from defectcam.cli import main as cli
from defectcam.commands.propose import CLI
from defectcam.config import Settings
from defectcam.core.cvat import decode_cvat_mask
from defectcam.core.labels import DEFECT_LABELS
from defectcam.core.options import OptionError, ProposeOptions
from defectcam.core.proposer import DefectProposer
from defectcam.cvat_function import CVAT_SDK
from defectcam.faces.nuclio import BODY
from defectcam.feedback import read_log
from defectcam.serving.service import ProposalService

sys.path.insert(0, str(Path(__file__).resolve().parent))
from function_support import environment, import_main  # noqa: E402

LOOSE = {"min_confidence": 0.0, "cam_threshold": 0.3, "iterations": 0}


@dataclass(frozen=True)
class Case:
    name: str
    request: dict
    error: str | None = None  # the option a face must name when refusing the request


CASES = [
    Case("what CVAT sends: defaults", {}),
    Case("loose polygons", LOOSE),
    Case("masks of two labels", {**LOOSE, "labels": ["rust", "crack"], "output": "mask"}),
    Case("a climb with screening", {**LOOSE, "iterations": 1, "screen": True,
                                    "labels": ["crack"]}),
    Case("nothing that confident", {"min_confidence": 0.95}),
    Case("more steps than the yaml allows", {"iterations": 3}, error="iterations"),
    Case("a CAM threshold of 0", {"cam_threshold": 0}, error="cam_threshold"),
    Case("a label the function lacks", {"labels": ["pothole"]}, error="labels"),
    Case("a confidence above 1", {"min_confidence": 1.5}, error="min_confidence"),
]
NAME_OF_ID = {label.id: label.name for label in DEFECT_LABELS}


def normalise_json(shapes: list[dict], width: int, height: int) -> list[tuple]:
    """CVAT shape dicts as (label, type, geometry): polygon points, or the mask's pixels."""
    out = []
    for s in shapes:
        if s["type"] == "mask":
            geometry = decode_cvat_mask(s["mask"], height, width).tobytes()
        else:
            geometry = tuple(s["points"])
        out.append((s["label"], s["type"], geometry))
    return out


def normalise_sdk(shapes, width: int, height: int) -> list[tuple]:
    out = []
    for s in shapes:
        kind = s.type.value
        if kind == "mask":
            geometry = decode_mask(s.points, image_width=width, image_height=height).tobytes()
        else:
            geometry = tuple(s.points)
        out.append((NAME_OF_ID[s.label_id], kind, geometry))
    return out


@dataclass
class Refused:
    key: str
    message: str


# --------------------------------------------------------------------------- the faces


class Face:
    name = ""
    spelling = BODY

    def answer(self, request: dict, photo: Path):
        """Normalised shapes, or :class:`Refused`."""
        raise NotImplementedError

    def log_db(self) -> Path:
        raise NotImplementedError


def _body(request: dict, photo: Path) -> dict:
    body = {BODY.key(k): v for k, v in request.items()}
    return {"image": base64.b64encode(photo.read_bytes()).decode(), **body}


class HandlerFace(Face):
    name = "nuclio handler"

    def __init__(self, weights: Path, env: dict, log_db: Path) -> None:
        self._log_db = log_db
        with environment(DEFECTCAM_WEIGHTS=str(weights), DEFECTCAM_DEVICE="cpu",
                         DEFECTCAM_LOG_DB=str(log_db), **env):
            self.main = import_main()
            self.platform = nuclio_sdk.test.Platform()
            self.platform.call_handler(self.main.handler, nuclio_sdk.Event(body={}))

    def answer(self, request, photo):
        response = self.platform.call_handler(self.main.handler,
                                              nuclio_sdk.Event(body=_body(request, photo)))
        payload = json.loads(response.body)
        if response.status_code != 200:
            assert response.status_code == 400, payload
            return Refused(payload["key"], payload["error"])
        width, height = PIL.Image.open(photo).size
        return normalise_json(payload, width, height)

    def log_db(self):
        return self._log_db


class HttpFace(Face):
    name = "defectcam serve"

    def __init__(self, server) -> None:
        self.server = server

    def answer(self, request, photo):
        connection = http.client.HTTPConnection(self.server.host, self.server.port, timeout=300)
        try:
            connection.request("POST", "/", body=json.dumps(_body(request, photo)),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            status, payload = response.status, json.loads(response.read())
        finally:
            connection.close()
        if status != 200:
            assert status == 400, payload
            return Refused(payload["key"], payload["error"])
        width, height = PIL.Image.open(photo).size
        return normalise_json(payload, width, height)

    def log_db(self):
        return self.server.log_db


class CvatSdkFace(Face):
    name = "cvat-sdk function"
    spelling = CVAT_SDK

    def __init__(self, weights: Path, env: dict, log_db: Path) -> None:
        self.weights, self.env, self._log_db = weights, env, log_db

    def answer(self, request, photo):
        parameters = {"weights": str(self.weights), "device": "cpu"}
        for key in ("iterations", "cam_threshold", "screen"):
            if key in request:
                parameters[key] = request[key]
        if "labels" in request:
            parameters["labels"] = ",".join(request["labels"])
        context = _DetectionFunctionContextImpl(
            frame_name="frame.png", conf_threshold=request.get("min_confidence"),
            conv_mask_to_poly=request.get("output", "polygon") == "polygon")
        with environment(DEFECTCAM_LOG_DB=str(self._log_db), **self.env):
            try:
                function = cf.create(**parameters)
                with PIL.Image.open(photo) as image:
                    shapes = function.detect(context, image)
                    width, height = image.size
            except (cf.FunctionParameterError, OptionError) as exc:
                key = getattr(exc, "key", None) or _key_in(str(exc), self.spelling)
                return Refused(key, str(exc))
        return normalise_sdk(shapes, width, height)

    def log_db(self):
        return self._log_db


class CliFace(Face):
    name = "defectcam propose"
    spelling = CLI

    def __init__(self, weights: Path, env: dict, log_db: Path, out: Path, capsys) -> None:
        self.weights, self.env, self._log_db, self.out = weights, env, log_db, out
        self.capsys = capsys

    def answer(self, request, photo):
        args = ["propose", str(photo), "--out", str(self.out), "--weights", str(self.weights),
                "--device", "cpu", "--no-progress", "--log", str(self._log_db)]
        for key, value in request.items():
            if key == "screen":
                args += ["--screen"] if value else []
            elif key == "labels":
                args += ["--labels", ",".join(value)]
            else:
                args += [CLI.key(key), str(value)]
        self.capsys.readouterr()
        with environment(**self.env):
            code = cli(args)
        err = self.capsys.readouterr().err
        if code != 0:
            assert code == 2 and err.startswith("defectcam propose: error: "), err
            message = err.removeprefix("defectcam propose: error: ").strip()
            return Refused(_key_in(message, self.spelling), message)
        shapes = json.loads((self.out / f"{photo.stem}.cvat.json").read_text())
        width, height = PIL.Image.open(photo).size
        return normalise_json(shapes, width, height)

    def log_db(self):
        return self._log_db


def _key_in(message: str, spelling) -> str:
    """The face key a message names (the faces whose errors carry no key field)."""
    for option in ("min_confidence", "iterations", "cam_threshold", "labels", "output",
                   "screen"):
        if spelling.show(option) in message:
            return spelling.key(option)
    raise AssertionError(f"no option named in {message!r}")


FACES = ["handler", "http", "cvat-sdk", "cli"]


@pytest.fixture(scope="module")
def reference(untrained_weights, function_request_env):
    """The service itself, with function.yaml's limits: what every face must answer."""
    settings = Settings.from_env(function_request_env).override("test", log_db=None)
    proposer = DefectProposer.from_weights(untrained_weights, device="cpu")
    return ProposalService(proposer, settings)


@pytest.fixture(scope="module")
def handler_face(untrained_weights, function_request_env, tmp_path_factory):
    log_db = tmp_path_factory.mktemp("handler") / "log.sqlite"
    return HandlerFace(untrained_weights, function_request_env, log_db)


@pytest.fixture
def face(request, untrained_weights, function_request_env, tmp_path_factory, capsys,
         handler_face, http_server):
    tmp = tmp_path_factory.mktemp("face")
    if request.param == "handler":
        return handler_face
    if request.param == "http":
        return HttpFace(http_server)
    if request.param == "cvat-sdk":
        return CvatSdkFace(untrained_weights, function_request_env, tmp / "log.sqlite")
    return CliFace(untrained_weights, function_request_env, tmp / "log.sqlite", tmp / "out",
                   capsys)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("face", FACES, indirect=True)
def test_every_face_keeps_the_contract(face: Face, case: Case, reference, crack_photo) -> None:
    got = face.answer(case.request, crack_photo)
    if case.error is not None:
        with pytest.raises(OptionError):  # the service refuses it too
            ProposeOptions.build(case.request, limits=reference.limits)
        assert isinstance(got, Refused), got
        assert got.key == face.spelling.key(case.error)
        assert face.spelling.show(case.error) in got.message
        return
    options = ProposeOptions.build(case.request, limits=reference.limits)
    rgb = np.asarray(PIL.Image.open(crack_photo).convert("RGB"))
    expected = reference.propose(rgb, options)
    width, height = rgb.shape[1], rgb.shape[0]
    assert got == normalise_json(expected.shapes(), width, height)
    logged = read_log(face.log_db())[-1]  # every face logs through the service
    params = dict(logged.params)
    assert params.pop("steps") == expected.steps  # what each defect was asked to run
    # function.yaml sets a deadline: recorded, generous enough to reduce nothing here.
    assert params.pop("deadline")["reduced"] is False
    assert params == {**options.to_log(), "face": logged.params["face"]}
    assert [p.label for p in logged.proposals] == [p.label for p in expected.proposals]


def test_the_table_discriminates(reference, crack_photo) -> None:
    """The cases would catch a face with another default threshold or limit."""
    rgb = np.asarray(PIL.Image.open(crack_photo).convert("RGB"))
    default = reference.propose(rgb, ProposeOptions.build({}, limits=reference.limits))
    everything = reference.propose(rgb, ProposeOptions(min_confidence=0.0))
    assert default.proposals and default.left_out > 0
    assert {p.label for p in everything.proposals} - {p.label for p in default.proposals}
    loose = reference.propose(rgb, ProposeOptions.build(LOOSE, limits=reference.limits))
    assert len({p.label for p in loose.proposals}) == 3 and len(loose.proposals) > 3
    assert reference.limits.max_iterations == 2  # function.yaml's
