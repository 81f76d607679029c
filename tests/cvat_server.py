"""A CVAT-shaped HTTP server on loopback for the ``--task-id`` pull: the endpoints that pull
uses, answered as CVAT's server code (``cvat/apps/engine/views.py``) answers them in the two
release lines the client supports. Not a mock of the client: the client speaks real HTTP to it.

- ``2.14``: ``/api/server/about`` without ``logo_url``/``subtitle`` (which cvat-sdk 2.80
  requires); ``GET /api/tasks/{id}/dataset?format=..`` answers 202 while preparing, 201 when
  ready, the archive with ``action=download``; no ``/dataset/export``, no ``/api/requests``;
  ``Authorization: Token <key>`` or Basic (a Bearer header is not read: 401).
- ``2.80``: ``about`` with ``logo_url`` and ``subtitle``; ``POST /api/tasks/{id}/dataset/
  export`` answers 202 with an ``rq_id``, ``GET /api/requests/{rq_id}`` reports
  ``started`` then ``finished`` with a ``result_url``; ``GET .../dataset`` (import only)
  answers 405; ``Authorization: Bearer <personal access token>`` or Basic.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER, PASSWORD, TOKEN = "annotator", "s3cret", "pat-0123456789"


@dataclass
class CvatProfile:
    version: str
    legacy_export: bool
    requests_export: bool
    token_scheme: str  # "Token" (2.14's login key) or "Bearer" (personal access tokens)
    about_extra: dict = field(default_factory=dict)


PROFILES = {
    "2.14": CvatProfile("2.14.4", True, False, "Token"),
    "2.80": CvatProfile("2.80.1", False, True, "Bearer",
                        {"logo_url": "/static/logo.svg", "subtitle": "Computer Vision "
                                                                      "Annotation Tool"}),
    "1.7": CvatProfile("1.7.0", True, False, "Token"),
    "none": CvatProfile("2.80.1", False, False, "Bearer"),
}


class FakeCvat:
    """The server: ``archives`` maps task id -> zip bytes; ``calls`` records (method, path)."""

    def __init__(self, profile: str, archives: dict[int, bytes], polls: int = 2) -> None:
        self.profile = PROFILES[profile]
        self.archives = archives
        self.polls = polls
        self.calls: list[tuple[str, str]] = []
        self._progress: dict[str, int] = {}
        handler = type("Handler", (_Handler,), {"cvat": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeCvat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def ready(self, key: str) -> bool:
        """The export job behind ``key`` finishes after ``polls`` status checks."""
        self._progress[key] = self._progress.get(key, 0) + 1
        return self._progress[key] > self.polls


class _Handler(BaseHTTPRequestHandler):
    cvat: FakeCvat

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | bytes | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/zip" if isinstance(body, bytes)
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return header in (f"Basic {basic}", f"{self.cvat.profile.token_scheme} {TOKEN}")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        cvat, profile = self.cvat, self.cvat.profile
        parsed = urllib.parse.urlsplit(self.path)
        path, query = parsed.path, dict(urllib.parse.parse_qsl(parsed.query))
        cvat.calls.append((method, path))
        if path == "/api/server/about" and method == "GET":
            return self._send(200, {"name": "Computer Vision Annotation Tool",
                                    "description": "CVAT", "version": profile.version,
                                    **profile.about_extra})
        if not self._authorised():
            return self._send(401, {"detail": "Authentication credentials were not provided."})
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "tasks"] and len(parts) >= 3:
            task = int(parts[2])
            if task not in cvat.archives:
                return self._send(404, {"detail": "Not found."})
            rest = parts[3:]
            if rest == [] and method == "GET":
                return self._send(200, {"id": task, "name": f"task {task}"})
            if rest == ["dataset"] and method == "GET":
                if not profile.legacy_export:
                    return self._send(405, {"detail": 'Method "GET" not allowed.'})
                if query.get("format") != "CVAT for images 1.1":
                    return self._send(400, {"detail": "Unknown format"})
                if not cvat.ready(f"legacy-{task}"):
                    return self._send(202)
                if query.get("action") == "download":
                    return self._send(200, cvat.archives[task])
                return self._send(201)
            if rest == ["dataset", "export"] and method == "POST" and profile.requests_export:
                if query.get("save_images") != "true":
                    return self._send(400, {"detail": "save_images expected"})
                rq_id = f"action=export&target=task&target_id={task}&format=CVAT for images 1.1"
                return self._send(202, {"rq_id": rq_id})
            if rest == ["dataset", "download"] and method == "GET" and profile.requests_export:
                return self._send(200, cvat.archives[task])
        if parts[:2] == ["api", "requests"] and profile.requests_export and method == "GET":
            rq_id = urllib.parse.unquote("/".join(parts[2:]))
            task = int(dict(urllib.parse.parse_qsl(rq_id))["target_id"])
            if not cvat.ready(rq_id):
                return self._send(200, {"id": rq_id, "status": "started", "message": ""})
            url = (f"{cvat.url}/api/tasks/{task}/dataset/download?"
                   f"{urllib.parse.urlencode({'rq_id': rq_id})}")
            return self._send(200, {"id": rq_id, "status": "finished", "message": "",
                                    "result_url": url})
        return self._send(404, {"detail": "Not found."})
