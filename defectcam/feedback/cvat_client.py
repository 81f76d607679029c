"""Pull a task from a CVAT server: its "CVAT for images 1.1" export with images, over CVAT's
REST API (no cvat-sdk: the SDK of one CVAT release cannot parse another's ``/api/server/about``).

Server and credentials come from the environment (``CVAT_URL`` and ``CVAT_ACCESS_TOKEN``, or
``CVAT_USER`` + ``CVAT_PASSWORD``; ``CVAT_ORG`` for an organisation's task), never from
arguments. Two export protocols, chosen by the server's version
(``GET /api/server/about``), the other tried when the chosen one's endpoint is absent:

- CVAT before 2.17 (2.14 was checked): ``GET /api/tasks/{id}/dataset?format=...`` answers 202
  while the export is prepared and 201 when it is ready; the same call with
  ``action=download`` then sends the archive.
- CVAT 2.17 and later (2.8x was checked): ``POST /api/tasks/{id}/dataset/export?format=...
  &save_images=true`` answers 202 with an ``rq_id``; ``GET /api/requests/{rq_id}`` reports
  ``queued``/``started``/``finished``/``failed`` and, when finished, the ``result_url`` that
  sends the archive.

Credentials: a token is sent as ``Authorization: Bearer`` (CVAT's personal access tokens),
and as ``Authorization: Token`` (the login key of older servers) when Bearer is refused; user
and password as HTTP Basic. Every failure is one :class:`CvatError` line naming the server's
version and what to do; nothing is left on disk unless the pull succeeds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CVAT_URL_ENV = "CVAT_URL"
CVAT_USER_ENV = "CVAT_USER"
CVAT_PASSWORD_ENV = "CVAT_PASSWORD"
CVAT_TOKEN_ENV = "CVAT_ACCESS_TOKEN"
CVAT_ORG_ENV = "CVAT_ORG"
EXPORT_FORMAT = "CVAT for images 1.1"
#: The first CVAT release with ``POST .../dataset/export`` and ``/api/requests``.
REQUESTS_API_VERSION = (2, 17)
#: The CVAT versions this client was checked against (docs/training.md names them).
CHECKED_VERSIONS = ("2.14", "2.8x")
MANUAL_EXPORT = ("export the task in CVAT (Actions > Export task dataset, "
                 f"'{EXPORT_FORMAT}', Save images) and run feedback with --annotations "
                 "and --images")


class CvatError(ValueError):
    """A pull that cannot go on: the message is one line naming the server and what to do."""


def cvat_connection(environ: dict | None = None) -> tuple[str, dict]:
    """(server URL, credentials: ``{"access_token": ...}`` or ``{"credentials": (user,
    password)}``) from the environment."""
    env = os.environ if environ is None else environ
    url = env.get(CVAT_URL_ENV, "").strip()
    if not url:
        raise ValueError(f"--task-id needs the CVAT server in ${CVAT_URL_ENV} "
                         "(e.g. http://localhost:8080)")
    token = env.get(CVAT_TOKEN_ENV, "").strip()
    if token:
        return url, {"access_token": token}
    user, password = env.get(CVAT_USER_ENV, ""), env.get(CVAT_PASSWORD_ENV, "")
    if not user or not password:
        raise ValueError(f"--task-id needs ${CVAT_TOKEN_ENV}, or ${CVAT_USER_ENV} and "
                         f"${CVAT_PASSWORD_ENV} (credentials are never taken from arguments)")
    return url, {"credentials": (user, password)}


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) of a CVAT version string such as ``2.14.4`` or ``2.80.0.dev0``."""
    found = re.match(r"\s*v?(\d+)\.(\d+)", text or "")
    if not found:
        raise ValueError(f"not a version: {text!r}")
    return int(found.group(1)), int(found.group(2))


@dataclass
class _Answer:
    status: int
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class CvatServer:
    """One CVAT server seen through its REST API (see the module notes)."""

    def __init__(self, url: str, auth: dict, organization: str | None = None,
                 poll_seconds: float = 2.0, timeout_seconds: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.organization = organization or None
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        if "access_token" in auth:
            token = auth["access_token"]
            self._schemes = [f"Bearer {token}", f"Token {token}"]
        else:
            user, password = auth["credentials"]
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._schemes = [f"Basic {pair}"]
        self.version = "unknown"

    # -- transport ---------------------------------------------------------------------

    def _request(self, method: str, path_or_url: str, query: dict | None = None) -> _Answer:
        url = path_or_url if "://" in path_or_url else self.url + path_or_url
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self._schemes[0], "Accept": "application/json, */*"}
        if self.organization:
            headers["X-Organization"] = self.organization
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return _Answer(response.status, response.read())
        except urllib.error.HTTPError as err:
            return _Answer(err.code, err.read() or b"")
        except (urllib.error.URLError, OSError) as err:
            raise CvatError(f"cannot reach CVAT at {self.url} ({getattr(err, 'reason', err)}): "
                            f"check ${CVAT_URL_ENV}") from None

    def _call(self, method: str, path: str, query: dict | None = None) -> _Answer:
        """A request with the credentials; a refused token is tried in the next scheme."""
        answer = self._request(method, path, query)
        while answer.status == 401 and len(self._schemes) > 1:
            self._schemes.pop(0)
            answer = self._request(method, path, query)
        if answer.status in (401, 403):
            what = (f"${CVAT_TOKEN_ENV}" if self._schemes[0].split()[0] != "Basic"
                    else f"${CVAT_USER_ENV} / ${CVAT_PASSWORD_ENV}")
            raise CvatError(f"{self._who()} refused the credentials (HTTP {answer.status}): "
                            f"check {what}")
        return answer

    def _who(self) -> str:
        return f"CVAT {self.version} at {self.url}"

    # -- protocol ----------------------------------------------------------------------

    def about(self) -> str:
        """The server's version (``GET /api/server/about``, which every CVAT answers)."""
        answer = self._request("GET", "/api/server/about")
        version = answer.json().get("version") if answer.status == 200 else None
        if not isinstance(version, str):
            raise CvatError(f"{self.url}/api/server/about did not answer as CVAT does "
                            f"(HTTP {answer.status}): check ${CVAT_URL_ENV}")
        self.version = version
        try:
            major_minor = parse_version(version)
        except ValueError:
            raise CvatError(f"{self._who()}: cannot read its version; {MANUAL_EXPORT}") from None
        if major_minor < (2, 0):
            raise CvatError(f"{self._who()} is older than 2.0, which this pull does not "
                            f"support (checked: {', '.join(CHECKED_VERSIONS)}); upgrade CVAT "
                            f"or {MANUAL_EXPORT}")
        return version

    def check_task(self, task_id: int) -> None:
        answer = self._call("GET", f"/api/tasks/{task_id}")
        if answer.status == 404:
            where = "" if self.organization else f" (an organisation's task: set ${CVAT_ORG_ENV})"
            raise CvatError(f"{self._who()} has no task {task_id} this user can see{where}")
        if answer.status != 200:
            raise CvatError(f"{self._who()}: task {task_id}: HTTP {answer.status}")

    def _pause(self, deadline: float) -> None:
        """Wait before asking again, or give up past ``deadline``."""
        if time.monotonic() > deadline:
            raise CvatError(f"{self._who()}: the export was not ready after "
                            f"{self.timeout_seconds:.0f} s; try again later or {MANUAL_EXPORT}")
        time.sleep(self.poll_seconds)

    def _failed(self, task_id: int, answer: _Answer) -> CvatError:
        return CvatError(f"{self._who()}: export of task {task_id} failed "
                         f"(HTTP {answer.status}: {answer.body[:200]!r})")

    def _export_legacy(self, task_id: int) -> bytes | None:
        """CVAT < 2.17; ``None`` when the server has no such endpoint."""
        path = f"/api/tasks/{task_id}/dataset"
        query = {"format": EXPORT_FORMAT, "location": "local"}
        deadline = time.monotonic() + self.timeout_seconds
        answer = self._call("GET", path, query)
        if answer.status in (404, 405, 410):
            return None
        while answer.status == 202:  # queued or being prepared
            self._pause(deadline)
            answer = self._call("GET", path, query)
        if answer.status != 201:
            raise self._failed(task_id, answer)
        done = self._call("GET", path, {**query, "action": "download"})
        if done.status != 200:
            raise self._failed(task_id, done)
        return done.body

    def _export_requests(self, task_id: int) -> bytes | None:
        """CVAT >= 2.17; ``None`` when the server has no such endpoint."""
        deadline = time.monotonic() + self.timeout_seconds
        started = self._call("POST", f"/api/tasks/{task_id}/dataset/export",
                             {"format": EXPORT_FORMAT, "save_images": "true",
                              "location": "local"})
        if started.status in (404, 405):
            return None
        rq_id = started.json().get("rq_id")
        if started.status not in (202, 409) or not rq_id:  # 409: the same export is running
            raise self._failed(task_id, started)
        while True:
            state = self._call("GET", f"/api/requests/{urllib.parse.quote(rq_id, safe='')}")
            info = state.json()
            status = str(info.get("status", "")).lower()
            if state.status != 200 or status == "failed":
                raise CvatError(f"{self._who()}: export of task {task_id} failed: "
                                f"{info.get('message') or f'HTTP {state.status}'}")
            if status == "finished":
                break
            self._pause(deadline)
        if not info.get("result_url"):
            raise CvatError(f"{self._who()}: the finished export has no result_url; "
                            f"{MANUAL_EXPORT}")
        done = self._call("GET", info["result_url"])
        if done.status != 200:
            raise self._failed(task_id, done)
        return done.body

    def export_task(self, task_id: int) -> bytes:
        """The task's "CVAT for images 1.1" archive with images."""
        modern = parse_version(self.version) >= REQUESTS_API_VERSION
        order = ((self._export_requests, self._export_legacy) if modern
                 else (self._export_legacy, self._export_requests))
        for export in order:
            archive = export(task_id)
            if archive is not None:
                return archive
        raise CvatError(f"{self._who()} offers neither export API this client knows "
                        f"(checked: {', '.join(CHECKED_VERSIONS)}); {MANUAL_EXPORT}")


def _safe_extract(archive: Path, dest: Path) -> None:
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (dest / member).resolve().is_relative_to(root):
                    raise CvatError(f"{archive.name}: unsafe path {member!r} in the export")
            zf.extractall(dest)
    except zipfile.BadZipFile:
        raise CvatError("the export is not a zip archive") from None


def pull_task(task_id: int, dest: Path, environ: dict | None = None,
              poll_seconds: float = 2.0, timeout_seconds: float = 600.0) -> tuple[Path, Path]:
    """Export task ``task_id`` as "CVAT for images 1.1" with images into ``dest`` (created
    only when the pull succeeds; an existing non-empty ``dest`` is refused); returns
    (annotations.xml, images folder)."""
    env = os.environ if environ is None else environ
    url, auth = cvat_connection(env)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CvatError(f"{dest} already exists: remove it, or pass another --images folder "
                        "for the pulled task")
    server = CvatServer(url, auth, env.get(CVAT_ORG_ENV, "").strip(), poll_seconds,
                        timeout_seconds)
    server.about()
    server.check_task(task_id)
    archive = server.export_task(task_id)
    with tempfile.TemporaryDirectory(prefix="defectcam-cvat-") as tmp:
        staged = Path(tmp) / "task"
        staged.mkdir()
        zipped = Path(tmp) / f"task-{task_id}.zip"
        zipped.write_bytes(archive)
        _safe_extract(zipped, staged)
        xml = next(iter(sorted(staged.rglob("annotations.xml"))), None)
        if xml is None:
            raise CvatError(f"{server._who()}: the export of task {task_id} holds no "
                            f"annotations.xml; {MANUAL_EXPORT}")
        relative = xml.parent.relative_to(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        shutil.move(str(staged), str(dest))
    xml = dest / relative / "annotations.xml"
    images = xml.parent / "images"
    return xml, images if images.is_dir() else xml.parent
