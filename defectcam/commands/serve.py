"""``defectcam serve``: host the Nuclio function over plain HTTP (``defectcam.faces.http``),
settings from the function's yaml where the environment sets none; docs/deploy.md,
"Without Docker"."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defectcam.config import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BODY_ENV,
    REQUEST_ENV,
    ConfigError,
    Settings,
    max_body_bytes,
)
from defectcam.faces.http import (
    DEFAULT_WORKER_TIMEOUT,
    FunctionServer,
    FunctionWorker,
    WorkerPool,
    load_function_module,
    make_logger,
    resolve_function_dir,
)


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


def main(argv: list[str] | None = None) -> int:
    """``python -m defectcam.commands.serve ...`` (same options as ``defectcam serve``)."""
    parser = argparse.ArgumentParser(prog="python -m defectcam.commands.serve")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return run_serve(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
