"""The interaction log: every answered request and its proposals, in SQLite (WAL mode).

The service is given one and writes each answer in one transaction committed before the answer
leaves the worker; the feedback loop reads it. Logging never breaks a request: storage errors
are reported (rate-limited) and the answer goes out. Durability and schema:
docs/feedback-loop.md.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from defectcam.config import LOG_SYNC_VALUES, log_path, log_sync
from defectcam.core.cvat import decode_cvat_mask_crop, mask_runs, runs_to_mask
from defectcam.core.postprocess import Proposal, polygon_to_mask

SCHEMA_VERSION = 1
#: ``params["kind"]`` of an interactor's request (one click or a few -> one mask); detector
#: requests carry no ``kind``. The interaction's points are ``params["pos_points"]``,
#: ``params["neg_points"]`` (frame pixels), its label ``params["label"]`` and the answered
#: mask its one proposal row.
INTERACTION_KIND = "interaction"
BUSY_TIMEOUT_MS = 2000
WARN_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time          TEXT    NOT NULL,  -- ISO 8601 UTC, when the answer was ready
    image_sha256  TEXT    NOT NULL,  -- of the image FILE bytes (as CVAT sent / exports them)
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    file_name     TEXT,              -- when the client sent one (CVAT does not)
    params        TEXT    NOT NULL,  -- JSON: threshold, output, labels, iterations, ...
    model_version TEXT    NOT NULL,  -- JSON: {label: sha256 of the weights file}
    seconds       REAL,              -- time spent answering
    worker        TEXT               -- host:pid
);
CREATE TABLE IF NOT EXISTS proposals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  INTEGER NOT NULL REFERENCES requests(id),
    idx         INTEGER NOT NULL,    -- position in the answer
    label       TEXT    NOT NULL,
    confidence  REAL,
    kind        TEXT    NOT NULL,    -- 'polygon' or 'mask': the geometry CVAT received
    polygon     TEXT    NOT NULL,    -- JSON flat [x1, y1, x2, y2, ...]
    x1 INTEGER, y1 INTEGER, x2 INTEGER, y2 INTEGER,  -- inclusive box
    area        INTEGER,
    mask_runs   BLOB                 -- uint32 little-endian run lengths over the box, row-major,
                                     -- starting with background (CVAT's mask RLE)
);
CREATE INDEX IF NOT EXISTS requests_sha ON requests(image_sha256);
CREATE INDEX IF NOT EXISTS requests_name ON requests(file_name);
CREATE INDEX IF NOT EXISTS proposals_request ON proposals(request_id);
"""


# --------------------------------------------------------------------------- records


@dataclass
class LoggedProposal:
    """One logged shape. ``region(h, w)`` is the pixel set CVAT received: the rasterised
    polygon for polygon answers, the mask for mask answers."""

    request_id: int
    index: int
    label: str
    confidence: float
    kind: str
    polygon: np.ndarray
    box: tuple[int, int, int, int]
    area: int
    mask: np.ndarray | None = None

    def region(self, height: int, width: int) -> np.ndarray:
        if self.kind == "mask" and self.mask is not None:
            out = np.zeros((height, width), dtype=bool)
            x1, y1, x2, y2 = self.box
            crop = self.mask[: max(0, height - y1), : max(0, width - x1)]
            out[y1 : y1 + crop.shape[0], x1 : x1 + crop.shape[1]] = crop
            return out
        return polygon_to_mask(self.polygon, height, width)


@dataclass
class LoggedRequest:
    """One logged request (see the schema); ``is_interaction``: an interactor's click."""

    id: int
    time: str
    image_sha256: str
    width: int
    height: int
    file_name: str | None
    params: dict
    model_version: dict
    seconds: float | None
    worker: str | None = None
    proposals: list[LoggedProposal] = field(default_factory=list)

    @property
    def is_interaction(self) -> bool:
        return self.params.get("kind") == INTERACTION_KIND


def _proposal_row(index: int, item: Proposal | Mapping, default_kind: str) -> tuple:
    """(idx, label, confidence, kind, polygon JSON, x1, y1, x2, y2, area, mask_runs)."""
    if isinstance(item, Proposal):
        mask = np.asarray(item.mask, dtype=bool)
        flat = [round(float(v), 2) for v in np.asarray(item.polygon).reshape(-1)]
        return (index, item.label, float(item.confidence), default_kind, json.dumps(flat),
                *(int(v) for v in item.box), int(item.area), mask_runs(mask))
    # A CVAT shape dict as the handler answers it (shared/docs/cvat-contract.md).
    points = [float(v) for v in item.get("points", [])]
    kind = str(item.get("type", default_kind))
    rle, area = None, None
    if kind == "mask" and item.get("mask"):
        crop, (x1, y1, x2, y2) = decode_cvat_mask_crop(item["mask"])
        rle, area = mask_runs(crop), int(crop.sum())
    else:
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x1, y1 = (int(np.floor(v)) for v in xy.min(0)) if len(xy) else (0, 0)
        x2, y2 = (int(np.ceil(v)) for v in xy.max(0)) if len(xy) else (0, 0)
    confidence = item.get("confidence")
    return (index, str(item["label"]), None if confidence is None else float(confidence), kind,
            json.dumps(points), x1, y1, x2, y2, area, rle)


# --------------------------------------------------------------------------- the store


class ProposalLog:
    """Append-only proposal log in one SQLite file, shared by any number of processes.

    The connection is opened lazily in the process that writes (Nuclio forks workers) and
    reopened after a fork. ``logger``: a :mod:`logging` logger or a Nuclio ``context.logger``.
    """

    def __init__(self, path: str | Path, logger: Any = None, *,
                 synchronous: str | None = None, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.logger = logger or logging.getLogger("defectcam.feedback")
        self.synchronous = (synchronous or log_sync()).upper()
        if self.synchronous not in LOG_SYNC_VALUES:
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.failures = 0
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._inherited: list[sqlite3.Connection] = []  # never closed in a forked child
        self._last_warning = -float("inf")
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_env(cls, logger: Any = None) -> ProposalLog | None:
        """The log ``DEFECTCAM_LOG_DB`` names, or ``None`` when logging is switched off."""
        path = log_path()
        return None if path is None else cls(path, logger)

    # -- connection

    def connect(self) -> sqlite3.Connection:
        """The open connection of this process (created with the schema when missing)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            # Closing a connection inherited over fork could release the parent's locks.
            self._inherited.append(self._conn)
            self._conn = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path} has schema version {version}; this defectcam writes "
                    f"{SCHEMA_VERSION} (upgrade defectcam)")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")  # two workers creating it: one waits
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- writing

    def log_request(
        self,
        *,
        image_sha256: str,
        width: int,
        height: int,
        proposals: Sequence[Proposal | Mapping],
        file_name: str | None = None,
        params: Mapping | None = None,
        model_version: Mapping | None = None,
        seconds: float | None = None,
    ) -> int | None:
        """Record one answered request and its proposals; returns the request id.

        Never raises: a storage problem is reported through ``self.logger`` (at most once a
        minute, with the count of lost records) and ``None`` is returned.
        """
        try:
            params = dict(params or {})
            default_kind = str(params.get("output") or "polygon")
            rows = [_proposal_row(i, p, default_kind) for i, p in enumerate(proposals)]
            when = datetime.now(UTC).isoformat(timespec="milliseconds")
            conn = self.connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO requests (time, image_sha256, width, height, file_name, "
                    "params, model_version, seconds, worker) VALUES (?,?,?,?,?,?,?,?,?)",
                    (when, image_sha256, int(width), int(height), file_name,
                     json.dumps(params, default=str, sort_keys=True),
                     json.dumps(dict(model_version or {}), sort_keys=True),
                     None if seconds is None else float(seconds), self._worker),
                )
                request_id = int(cur.lastrowid)
                conn.executemany(
                    "INSERT INTO proposals (request_id, idx, label, confidence, kind, polygon, "
                    "x1, y1, x2, y2, area, mask_runs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(request_id, *row) for row in rows],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return request_id
        except Exception as exc:  # noqa: BLE001 - the answer must go out whatever happens
            self.failures += 1
            self._report(exc)
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                    exc, sqlite3.OperationalError):
                self.close()  # a corrupt/foreign file: reopen next time rather than reuse
            return None

    def _report(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_INTERVAL_S:
            return
        self._last_warning = now
        message = (f"proposal log {self.path} not written ({type(exc).__name__}: {exc}); "
                   f"{self.failures} request(s) unlogged so far; the answers still went out")
        warn = getattr(self.logger, "warning", None) or getattr(self.logger, "warn", None)
        try:
            if warn is not None:
                warn(message)
        except Exception:  # noqa: BLE001 - a broken logger must not break the request either
            pass

    # -- reading

    def read(self, since: str | None = None) -> list[LoggedRequest]:
        """Every logged request (oldest first) with its proposals."""
        return read_log(self.path, since=since)


def read_log(path: str | Path, since: str | None = None) -> list[LoggedRequest]:
    """Read a log file (read-only; safe while workers are writing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposal log {path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: log schema version {version}, expected {SCHEMA_VERSION}")
        where, args = ("WHERE time >= ?", (since,)) if since else ("", ())
        requests: dict[int, LoggedRequest] = {}
        for row in conn.execute(
            "SELECT id, time, image_sha256, width, height, file_name, params, model_version, "
            f"seconds, worker FROM requests {where} ORDER BY id", args
        ):
            requests[row[0]] = LoggedRequest(row[0], row[1], row[2], row[3], row[4], row[5],
                                              json.loads(row[6]), json.loads(row[7]), row[8],
                                              row[9])
        for row in conn.execute(
            "SELECT request_id, idx, label, confidence, kind, polygon, x1, y1, x2, y2, area, "
            "mask_runs FROM proposals ORDER BY request_id, idx"
        ):
            request = requests.get(row[0])
            if request is None:
                continue
            x1, y1, x2, y2 = row[6:10]
            mask = None
            if row[11]:
                mask = runs_to_mask(row[11], x2 - x1 + 1, y2 - y1 + 1)
            polygon = np.asarray(json.loads(row[5]), dtype=np.float64).reshape(-1, 2)
            request.proposals.append(LoggedProposal(
                row[0], row[1], row[2], row[3] if row[3] is not None else float("nan"), row[4],
                polygon, (x1, y1, x2, y2), row[10] if row[10] is not None else -1, mask))
        return list(requests.values())
    finally:
        conn.close()


def model_version_of(proposer: Any) -> dict[str, str]:
    """``{label: sha256 of its weights file}`` of a ``DefectProposer``."""
    predictors = getattr(proposer, "predictors", {}) or {}
    return {label: getattr(p.metadata, "sha256", "") for label, p in predictors.items()}


def log_proposals(
    log: ProposalLog | None,
    image_sha256: str,
    size: tuple[int, int],
    name: str | None,
    params: Mapping | None,
    model_version: Mapping | None,
    proposals: Sequence[Proposal | Mapping],
    seconds: float | None,
) -> int | None:
    """What the handler calls once per answered request (``size`` is ``(width, height)``).

    ``log`` ``None`` (logging switched off) is a no-op; storage errors never propagate.
    """
    if log is None:
        return None
    try:
        width, height = size
        return log.log_request(image_sha256=image_sha256, width=width, height=height,
                               proposals=proposals, file_name=name, params=params,
                               model_version=model_version, seconds=seconds)
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed size: still never raise
        log.failures += 1
        log._report(exc)
        return None
