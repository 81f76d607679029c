"""``defectcam serve``: host the Nuclio function's ``main.handler`` over plain HTTP.

For development and integration tests without Docker or Nuclio. It does what Nuclio's HTTP
trigger and Python wrapper do: the request becomes a real ``nuclio_sdk.Event`` (a JSON body
arrives as a dict when the content type is ``application/json`` and it parses, as bytes
otherwise), the handler runs with a real ``nuclio_sdk.Context`` whose ``init_context`` ran
once, and its return value becomes status, content type and body through
``nuclio_sdk.Response.from_entrypoint_output``, the wrapper's own conversion.

Concurrency mirrors Nuclio workers: ``--workers N`` loads ``main.py`` N times (N module
instances, N contexts, N models), each serving one request at a time. A request waits at most
``--worker-timeout`` seconds for a free worker, then gets 503 (Nuclio's
``workerAvailabilityTimeoutMilliseconds``); connections beyond ``--max-pending`` are refused
with 503 at once, so threads and memory stay bounded. Bodies over ``--max-body-bytes``
(Nuclio's ``maxRequestBodySize``) get 413. Unlike Nuclio, a handler that runs past the
function's ``eventTimeout`` is not killed.

``main.py`` is loaded by file path (the package never imports the Nuclio face statically).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib.util
import json
import logging
import os
import queue
import signal
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

#: Same as ``maxRequestBodySize`` in function.yaml / function-gpu.yaml.
DEFAULT_MAX_BODY_BYTES = 134_217_728
MAX_BODY_ENV = "DEFECTCAM_MAX_BODY_BYTES"
TRIGGER = nuclio_sdk.event.TriggerInfo("http", "myHttpTrigger")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``serve`` on an argparse subparsers object (wired into ``defectcam.cli``)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the CVAT/Nuclio function (main.handler) over local HTTP",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--function-dir",
        type=Path,
        default=None,
        help="folder holding main.py and model_handler.py (default: the current directory "
        "if it has main.py, else the repository root)",
    )
    parser.add_argument("--workers", type=int, default=1, help="handler instances (default 1)")
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=10.0,
        help="seconds a request waits for a free worker before 503 (default 10)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="open connections allowed before refusing with 503 (default 4 x workers + 4)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help=f"largest request body (default ${MAX_BODY_ENV} or {DEFAULT_MAX_BODY_BYTES})",
    )
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """``defectcam.cli``'s convention: the ``serve`` parser with ``func`` set."""
    parser = add_serve_parser(subparsers)
    parser.set_defaults(func=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Load the function, serve until SIGINT/SIGTERM; returns the exit code."""
    logger = make_logger()
    try:
        function_dir = resolve_function_dir(args.function_dir)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        max_body = args.max_body_bytes or int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES))
        workers = [FunctionWorker(function_dir, i, logger) for i in range(args.workers)]
    except (ValueError, OSError, ImportError) as exc:  # the operator's to fix: one clear line
        print(f"defectcam serve: cannot start: {exc}", file=sys.stderr)
        return 2
    max_pending = args.max_pending or 4 * len(workers) + 4
    server = FunctionServer(
        (args.host, args.port),
        WorkerPool(workers),
        args.worker_timeout,
        max_body,
        max_pending,
        logger,
    )
    host, port = server.server_address[:2]
    print(
        f"defectcam serve: listening on http://{host}:{port} "
        f"({len(workers)} worker(s), function {function_dir / 'main.py'})",
        flush=True,
    )

    def stop(signum, frame):  # shutdown() blocks until serve_forever returns: other thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def make_logger(level: int = logging.INFO) -> nuclio_sdk.Logger:
    logger = nuclio_sdk.Logger(level, "defectcam")
    logger.set_handler("default", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
    return logger


def resolve_function_dir(function_dir: Path | None) -> Path:
    if function_dir is None:
        candidates = [Path.cwd(), Path(__file__).resolve().parents[1]]
    else:
        candidates = [Path(function_dir)]
    for candidate in candidates:
        if (candidate / "main.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no main.py in {', '.join(str(c) for c in candidates)} (use --function-dir)"
    )


def load_function_module(function_dir: Path, instance: int) -> ModuleType:
    """A fresh module object for ``function_dir/main.py`` (one per worker, like Nuclio)."""
    if str(function_dir) not in sys.path:
        sys.path.insert(0, str(function_dir))  # main.py imports model_handler next to it
    name = f"defectcam_function_main_{instance}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, function_dir / "main.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {function_dir / 'main.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


class FunctionWorker:
    """One handler instance: its own module, Context and ``init_context`` call."""

    def __init__(self, function_dir: Path, index: int, logger: nuclio_sdk.Logger) -> None:
        self.index = index
        self.module = load_function_module(function_dir, index)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m defectcam.serve ...`` (same options as ``defectcam serve``)."""
    parser = argparse.ArgumentParser(prog="python -m defectcam.serve")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return run_serve(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
