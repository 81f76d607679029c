"""``defectcam serve``: host the Nuclio function's ``main.handler`` over plain HTTP.

For development and tests without Docker or Nuclio, doing what Nuclio's HTTP trigger and
Python wrapper do: real ``nuclio_sdk`` events and contexts, ``init_context`` once per worker,
answers through ``nuclio_sdk.Response.from_entrypoint_output``. Settings come from the
function's yaml where the environment sets none; docs/deploy.md, "Without Docker".
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import nuclio_sdk
import nuclio_sdk.json_encoder
import nuclio_sdk.logger
import yaml

from defectcam.config import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BODY_ENV,
    REQUEST_ENV,
    ConfigError,
    Settings,
    max_body_bytes,
)

DEFAULT_WORKER_TIMEOUT = 10.0
TRIGGER = nuclio_sdk.event.TriggerInfo("http", "myHttpTrigger")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``serve`` on an argparse subparsers object (wired into ``defectcam.cli``)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the CVAT/Nuclio function (main.handler) over local HTTP",
        description="Host the Nuclio function's main.handler over plain HTTP, with the "
        "settings of its yaml file, for development and tests without Docker or Nuclio.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--function-dir",
        type=Path,
        default=None,
        help="folder holding main.py and model_handler.py (default: the current directory "
        "if it has main.py, else the repository root)",
    )
    parser.add_argument(
        "--function-yaml",
        default=None,
        help="the function's yaml whose settings serve uses where the environment does not "
        "set them; 'none' for none (default: function.yaml in the function folder)",
    )
    parser.add_argument("--workers", type=int, default=1,
                        help="handler instances, one model each (default: %(default)s)")
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=None,
        help="seconds a request waits for a free worker before 503 (default: the yaml's "
        f"workerAvailabilityTimeoutMilliseconds, else {DEFAULT_WORKER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="open connections allowed before refusing with 503 (default: 4 x workers + 4)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help=f"largest request body (default: ${MAX_BODY_ENV}, else the yaml's "
        f"maxRequestBodySize, else {DEFAULT_MAX_BODY_BYTES})",
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
        _check_args(args)
        function_dir = resolve_function_dir(args.function_dir)
        config = FunctionConfig.read(_yaml_path(args.function_yaml, function_dir))
        origins = config.apply_request_env(os.environ)
        settings = Settings.from_env(origins=origins)
        max_body = args.max_body_bytes or max_body_bytes(
            default=config.max_body_bytes or DEFAULT_MAX_BODY_BYTES)
        worker_timeout = args.worker_timeout or config.worker_timeout or DEFAULT_WORKER_TIMEOUT
        print_settings(settings, config, max_body, worker_timeout, args)
        module = load_function_module(function_dir)
        workers = [FunctionWorker(module, i, logger) for i in range(args.workers)]
    except (ValueError, OSError, ImportError) as exc:  # the operator's to fix: one clear line
        print(f"defectcam serve: cannot start: {exc}", file=sys.stderr)
        return 2
    max_pending = args.max_pending or 4 * len(workers) + 4
    server = FunctionServer(
        (args.host, args.port),
        WorkerPool(workers),
        worker_timeout,
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


def _check_args(args: argparse.Namespace) -> None:
    """Out-of-range options, before any model loads."""
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be within 0..65535, got {args.port}")
    for name in ("worker_timeout", "max_pending", "max_body_bytes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _yaml_path(option: str | None, function_dir: Path) -> Path | None:
    if option is None:
        default = function_dir / "function.yaml"
        return default if default.is_file() else None
    if option.strip().lower() == "none":
        return None
    return Path(option)


@dataclass
class FunctionConfig:
    """What ``defectcam serve`` takes from a function yaml: the request limits among its
    ``spec.env`` and the HTTP trigger's body limit and worker timeout."""

    path: Path | None = None
    request_env: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int | None = None
    worker_timeout: float | None = None

    @classmethod
    def read(cls, path: Path | None) -> FunctionConfig:
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text())
            spec = data["spec"]
            env = {str(item["name"]): str(item["value"]) for item in spec.get("env") or []}
            trigger = next(iter((spec.get("triggers") or {}).values()), {}) or {}
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a Nuclio function yaml ({exc})") from exc
        attributes = trigger.get("attributes") or {}
        timeout_ms = trigger.get("workerAvailabilityTimeoutMilliseconds")
        body = attributes.get("maxRequestBodySize")
        return cls(
            path=Path(path),
            request_env={k: v for k, v in env.items() if k in REQUEST_ENV},
            max_body_bytes=int(body) if body else None,
            worker_timeout=float(timeout_ms) / 1000 if timeout_ms else None,
        )

    def apply_request_env(self, environ) -> dict[str, str]:
        """Put the yaml's request limits into ``environ`` where it has none (the workers'
        ``init_context`` reads them there); returns variable -> origin of what it set."""
        origins = {}
        for name, value in self.request_env.items():
            if not environ.get(name, "").strip():
                environ[name] = value
                origins[name] = self.path.name if self.path else name
        return origins


def print_settings(settings: Settings, config: FunctionConfig, max_body: int,
                   worker_timeout: float, args: argparse.Namespace) -> None:
    """What serve uses, and where each value came from, on stdout."""
    yaml_name = config.path.name if config.path else None
    body_origin = ("--max-body-bytes" if args.max_body_bytes else MAX_BODY_ENV
                   if os.environ.get(MAX_BODY_ENV, "").strip() else
                   yaml_name if config.max_body_bytes else "default")
    timeout_origin = ("--worker-timeout" if args.worker_timeout else
                      yaml_name if config.worker_timeout else "default")
    lines = [*settings.describe(), f"max_body_bytes = {max_body} ({body_origin})",
             f"worker_timeout = {worker_timeout:g} s ({timeout_origin})"]
    source = f"function yaml {config.path}" if config.path else "no function yaml"
    print(f"defectcam serve: settings ({source}):", *(f"  {line}" for line in lines),
          sep="\n", flush=True)


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


def main(argv: list[str] | None = None) -> int:
    """``python -m defectcam.serve ...`` (same options as ``defectcam serve``)."""
    parser = argparse.ArgumentParser(prog="python -m defectcam.serve")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return run_serve(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
