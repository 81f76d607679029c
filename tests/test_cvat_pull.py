"""``defectcam feedback --task-id``: pulling a task from CVAT 2.14 and 2.8x over real HTTP on
loopback (tests/cvat_server.py answers as those releases do), with every failure one line
that names the server's version, and nothing left on disk when the pull fails."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectcam.cli import main as cli
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    defect_labels,
    write_cvat_xml,
)
from defectcam.feedback.cvat_client import CvatError, cvat_connection, parse_version, pull_task
from defectcam.serving.interaction_log import ProposalLog, log_proposals

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cvat_server import PASSWORD, TOKEN, USER, FakeCvat  # noqa: E402

TASK = 7


@pytest.fixture(scope="module")
def task_export(tmp_path_factory):
    """A real "CVAT for images 1.1" archive (annotations.xml + images/), the frame's bytes."""
    tmp = tmp_path_factory.mktemp("task")
    image = np.full((60, 80, 3), 140, np.uint8)
    image[10:30, 10:40] = (190, 95, 40)
    ok, png = cv2.imencode(".png", image)
    square = np.array([[10, 10], [39, 10], [39, 29], [10, 29]], float)
    xml = write_cvat_xml(CvatAnnotations(defect_labels(), [CvatImage(
        0, "frame_000.png", 80, 60, [CvatShape("polygon", "rust", square, source="auto")])]),
        tmp / "annotations.xml")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.write(xml, "annotations.xml")
        zf.writestr("images/frame_000.png", png.tobytes())
    return buffer.getvalue(), png.tobytes(), square


def env(url: str, **extra: str) -> dict:
    return {"CVAT_URL": url, **extra}


@pytest.mark.parametrize("profile, credentials", [
    ("2.14", {"CVAT_USER": USER, "CVAT_PASSWORD": PASSWORD}),
    ("2.14", {"CVAT_ACCESS_TOKEN": TOKEN}),  # a 2.14 login key: Bearer refused, Token taken
    ("2.80", {"CVAT_ACCESS_TOKEN": TOKEN}),
    ("2.80", {"CVAT_USER": USER, "CVAT_PASSWORD": PASSWORD}),
])
def test_pull_from_each_release(tmp_path, task_export, profile, credentials):
    archive, png, _ = task_export
    with FakeCvat(profile, {TASK: archive}) as cvat:
        xml, images = pull_task(TASK, tmp_path / "pulled", env(cvat.url, **credentials),
                                poll_seconds=0.01)
    assert xml == tmp_path / "pulled" / "annotations.xml"
    assert (images / "frame_000.png").read_bytes() == png
    calls = {c for c in cvat.calls}
    if profile == "2.14":  # the legacy protocol only: 202, 202, 201, then the download
        assert ("GET", f"/api/tasks/{TASK}/dataset") in calls
        assert not any(path.startswith("/api/requests") for _, path in calls)
        assert sum(c == ("GET", f"/api/tasks/{TASK}/dataset") for c in cvat.calls) == 4
    else:
        assert ("POST", f"/api/tasks/{TASK}/dataset/export") in calls
        assert ("GET", f"/api/tasks/{TASK}/dataset/download") in calls
        assert ("GET", f"/api/tasks/{TASK}/dataset") not in calls


@pytest.mark.parametrize("profile, credentials, message", [
    ("1.7", {"CVAT_ACCESS_TOKEN": TOKEN}, "CVAT 1.7.0 at http://127.0.0.1:"),
    ("none", {"CVAT_ACCESS_TOKEN": TOKEN}, "CVAT 2.80.1 at http://127.0.0.1:"),
    ("2.80", {"CVAT_ACCESS_TOKEN": "wrong"}, "refused the credentials (HTTP 401): check "
                                             "$CVAT_ACCESS_TOKEN"),
    ("2.14", {"CVAT_USER": USER, "CVAT_PASSWORD": "wrong"}, "CVAT 2.14.4 at http://127.0.0.1:"),
])
def test_failures_are_one_line_and_leave_nothing(tmp_path, task_export, profile, credentials,
                                                 message):
    archive, _, _ = task_export
    dest = tmp_path / "out" / "cvat-task-7"
    with FakeCvat(profile, {TASK: archive}) as cvat, pytest.raises(CvatError) as err:
        pull_task(TASK, dest, env(cvat.url, **credentials), poll_seconds=0.01)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert not (tmp_path / "out").exists()
    if profile in ("1.7", "none"):
        assert "--annotations" in text  # what to do instead


def test_missing_task_unreachable_server_and_timeout(tmp_path, task_export):
    archive, _, _ = task_export
    token = {"CVAT_ACCESS_TOKEN": TOKEN}
    with FakeCvat("2.80", {TASK: archive}) as cvat:
        with pytest.raises(CvatError, match=r"CVAT 2\.80\.1 at .* has no task 8 .*CVAT_ORG"):
            pull_task(8, tmp_path / "a", env(cvat.url, **token))
    with FakeCvat("2.14", {TASK: archive}, polls=1000) as cvat:
        with pytest.raises(CvatError, match=r"CVAT 2\.14\.4 .* not ready after 0 s"):
            pull_task(TASK, tmp_path / "b", env(cvat.url, **token), poll_seconds=0.01,
                      timeout_seconds=0.05)
    url = cvat.url  # shut down: nothing listens there any more
    with pytest.raises(CvatError, match="cannot reach CVAT at .*check \\$CVAT_URL"):
        pull_task(TASK, tmp_path / "c", env(url, **token))
    assert not any((tmp_path / d).exists() for d in "abc")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(CvatError, match="already exists"):
        pull_task(TASK, tmp_path / "full", env(url, **token))


def test_version_and_credentials_parsing():
    assert parse_version("2.14.4") == (2, 14) and parse_version("v2.80.0.dev0") == (2, 80)
    with pytest.raises(ValueError):
        parse_version("develop")
    with pytest.raises(ValueError, match="CVAT_URL"):
        cvat_connection({})
    with pytest.raises(ValueError, match="CVAT_PASSWORD"):
        cvat_connection({"CVAT_URL": "http://cvat:8080", "CVAT_USER": "u"})
    assert cvat_connection({"CVAT_URL": "http://c", "CVAT_ACCESS_TOKEN": "t"}) == (
        "http://c", {"access_token": "t"})


def test_feedback_task_id_end_to_end(tmp_path, task_export, monkeypatch, capsys):
    """feedback --task-id on CVAT 2.14: the pulled frame is matched to the logged request
    by content, the kept rust proposal is accepted."""
    archive, png, square = task_export
    log = ProposalLog(tmp_path / "log.sqlite")
    shapes = [{"label": "rust", "type": "polygon", "points": square.ravel().tolist(),
               "confidence": "0.9"}]
    log_proposals(log, hashlib.sha256(png).hexdigest(), (80, 60), None, {"output": "polygon"},
                  {}, shapes, 0.1)
    with FakeCvat("2.14", {TASK: archive}, polls=0) as cvat:
        monkeypatch.setenv("CVAT_URL", cvat.url)
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
        assert cli(["feedback", "--task-id", str(TASK), "--log", str(tmp_path / "log.sqlite"),
                    "--out", str(tmp_path / "fb")]) == 0
        report = json.loads((tmp_path / "fb" / "feedback-report.json").read_text())
        assert report["per_defect"]["rust"]["accepted"] == 1
        assert (tmp_path / "fb" / "cvat-task-7" / "images" / "frame_000.png").is_file()
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "wrong")
        assert cli(["feedback", "--task-id", str(TASK), "--log", str(tmp_path / "log.sqlite"),
                    "--out", str(tmp_path / "fb2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CVAT 2.14.4" in err
    assert not (tmp_path / "fb2").exists()
