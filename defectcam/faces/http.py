"""An HTTP server that hosts the Nuclio function's ``main.handler`` as Nuclio's HTTP trigger and
Python wrapper do: real ``nuclio_sdk`` events and contexts, ``init_context`` once per worker,
answers through ``nuclio_sdk.Response.from_entrypoint_output``. ``defectcam serve`` runs it."""

from __future__ import annotations

import base64
import datetime
import importlib
import json
import logging
import queue
import sys
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import nuclio_sdk
import nuclio_sdk.json_encoder
import nuclio_sdk.logger

DEFAULT_WORKER_TIMEOUT = 10.0
TRIGGER = nuclio_sdk.event.TriggerInfo("http", "myHttpTrigger")


def make_logger(level: int = logging.INFO) -> nuclio_sdk.Logger:
    logger = nuclio_sdk.Logger(level, "defectcam")
    logger.set_handler("default", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
    return logger


def resolve_function_dir(function_dir: Path | None) -> Path:
    if function_dir is None:
        candidates = [Path.cwd(), Path(__file__).resolve().parents[2]]
    else:
        candidates = [Path(function_dir)]
    for candidate in candidates:
        if (candidate / "main.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no main.py in {', '.join(str(c) for c in candidates)} (use --function-dir)"
    )


def load_function_module(function_dir: Path) -> ModuleType:
    """``main`` imported as a module from ``function_dir``, as Nuclio's wrapper imports the
    yaml's ``handler: main:handler``. One module serves every worker: each has its own
    context, where ``init_context`` keeps its model."""
    main_file = (function_dir / "main.py").resolve()
    if str(function_dir) not in sys.path:
        sys.path.insert(0, str(function_dir))  # main imports model_handler next to it
    module = importlib.import_module("main")
    if Path(module.__file__ or "").resolve() != main_file:
        raise ImportError(f"a module 'main' from {module.__file__} is already loaded, "
                          f"not {main_file}")
    return module


class FunctionWorker:
    """One handler instance: its own Context and ``init_context`` call."""

    def __init__(self, module: ModuleType, index: int, logger: nuclio_sdk.Logger) -> None:
        self.index = index
        self.module = module
        self.context = nuclio_sdk.Context(
            logger, nuclio_sdk.Platform("local"), worker_id=index, trigger=TRIGGER
        )
        if hasattr(self.module, "init_context"):
            self.module.init_context(self.context)
        self._encode = nuclio_sdk.json_encoder.Encoder().encode

    def call(self, event: nuclio_sdk.Event) -> dict:
        output = self.module.handler(self.context, event)
        return nuclio_sdk.Response.from_entrypoint_output(self._encode, output)


class WorkerPool:
    def __init__(self, workers: list[FunctionWorker]) -> None:
        self._free: queue.Queue[FunctionWorker] = queue.Queue()
        for worker in workers:
            self._free.put(worker)
        self.size = len(workers)

    def acquire(self, timeout: float) -> FunctionWorker | None:
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            return None

    def release(self, worker: FunctionWorker) -> None:
        self._free.put(worker)


class FunctionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address,
        pool: WorkerPool,
        worker_timeout: float,
        max_body: int,
        max_pending: int,
        logger: nuclio_sdk.Logger,
    ) -> None:
        self.pool, self.worker_timeout, self.max_body = pool, worker_timeout, max_body
        self.logger = logger
        self._slots = threading.BoundedSemaphore(max_pending)
        super().__init__(address, FunctionRequestHandler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "server busy: too many pending requests"}).encode()
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class FunctionRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "defectcam-serve"
    server: FunctionServer

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_POST
    do_GET = do_POST  # Nuclio hands every method to the handler

    def _dispatch(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send_json(411, {"error": "chunked bodies are not supported; send Content-Length"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send_json(400, {"error": "invalid Content-Length header"})
            return
        if length < 0:
            self._send_json(400, {"error": "invalid Content-Length header"})
            return
        if length > self.server.max_body:
            self._discard(length)
            self._send_json(
                413,
                {
                    "error": f"request body of {length} bytes exceeds the limit of "
                    f"{self.server.max_body} bytes (maxRequestBodySize)"
                },
            )
            return
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            self.close_connection = True  # client went away mid-body
            return
        worker = self.server.pool.acquire(self.server.worker_timeout)
        if worker is None:
            self._send_json(503, {"error": "no free worker; retry later"})
            return
        try:
            response = worker.call(self._event(raw))
        except Exception as exc:  # the wrapper answers a raising handler with 500
            self.server.logger.error_with("handler raised", traceback=traceback.format_exc())
            response = {
                "status_code": 500,
                "content_type": "text/plain",
                "headers": {},
                "body": f"Exception caught in handler - {type(exc).__name__}",
                "body_encoding": "text",
            }
        finally:
            self.server.pool.release(worker)
        self._send_response(response)

    def _discard(self, length: int) -> None:
        """Read (a bounded part of) a refused body so the client sees the answer, not a reset."""
        left = min(length, 4 * self.server.max_body)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _event(self, raw: bytes) -> nuclio_sdk.Event:
        content_type = self.headers.get("Content-Type", "")
        body: object = raw
        if content_type == "application/json":
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = raw  # the wrapper keeps the bytes when its parse fails
        return nuclio_sdk.Event(
            body=body,
            content_type=content_type,
            trigger=TRIGGER,
            headers=dict(self.headers.items()),
            _id=str(uuid.uuid4()),
            method=self.command,
            path=urlsplit(self.path).path,
            size=len(raw),
            timestamp=datetime.datetime.now(datetime.UTC),
            url=self.path,
        )

    def _send_response(self, response: dict) -> None:
        body = response.get("body", "")
        if response.get("body_encoding") == "base64":
            payload = base64.b64decode(body)
        else:
            payload = str(body).encode("utf-8")
        self.send_response(int(response.get("status_code", 200)))
        self.send_header("Content-Type", response.get("content_type") or "text/plain")
        for key, value in (response.get("headers") or {}).items():
            self.send_header(str(key), str(value))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, payload: dict) -> None:
        self.close_connection = True
        self._send_response(
            {
                "status_code": status,
                "content_type": "application/json",
                "headers": {"Connection": "close"},
                "body": json.dumps(payload),
            }
        )

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        self.server.logger.debug(f"{self.address_string()} {format % args}")
