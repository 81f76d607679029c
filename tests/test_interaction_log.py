"""The proposal log: round trip, switched off, unwritable store, concurrent and killed writers."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from defectcam.config import LOG_DB_ENV
from defectcam.config import log_path as log_path_from_env
from defectcam.core.cvat import proposal_to_cvat_shape
from defectcam.core.postprocess import mask_to_proposals
from defectcam.serving.interaction_log import SCHEMA_VERSION, ProposalLog, log_proposals, read_log

SHA = "ab" * 32


def make_proposals(seed: int = 0, count: int = 3):
    """Real Proposal objects: blobs on a 96x128 canvas."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((96, 128), bool)
    for k in range(count):
        y, x = 10 + 25 * (k % 3), 10 + 40 * (k // 3) % 110
        h, w = rng.integers(5, 15, size=2)
        canvas[y : y + h, x : x + w] = True
        canvas[y + h // 2, x : x + w + 3] = True  # a non-rectangular outline
    return mask_to_proposals(canvas, "crack", min_area=4)


def write_many(path: str, worker: int, count: int) -> None:
    log = ProposalLog(path)
    for k in range(count):
        n = (worker + k) % 4
        assert log_proposals(log, f"{worker:032x}{k:032x}", (128, 96), f"w{worker}-{k}.jpg",
                             {"n": n}, {"crack": "x"}, make_proposals(k, n), 0.01) is not None


def write_forever(path: str, queue) -> None:
    log = ProposalLog(path)
    k = 0
    while True:
        request_id = log_proposals(log, f"{k:064x}", (128, 96), None, {"n": k % 4}, {},
                                   make_proposals(k, k % 4), None)
        queue.put(request_id)  # only after the commit: "answered"
        k += 1


def test_round_trip_proposals_and_cvat_shapes(tmp_path):
    log = ProposalLog(tmp_path / "log.sqlite")
    proposals = make_proposals(1, 4)
    assert len(proposals) >= 3
    first = log_proposals(log, SHA, (128, 96), "a.jpg", {"output": "polygon", "threshold": 0.5},
                          {"crack": "f00"}, proposals, 1.25)
    shapes = [proposal_to_cvat_shape(p, "mask") for p in proposals]
    second = log_proposals(log, SHA, (128, 96), None, {"output": "mask"}, {}, shapes, None)
    assert (first, second) == (1, 2)
    requests = read_log(log.path)
    assert [r.id for r in requests] == [1, 2]
    a, b = requests
    assert (a.file_name, a.width, a.height, a.image_sha256) == ("a.jpg", 128, 96, SHA)
    assert a.params == {"output": "polygon", "threshold": 0.5}
    assert a.model_version == {"crack": "f00"} and a.seconds == 1.25
    assert b.file_name is None and len(b.proposals) == len(proposals)
    for p, got_a, got_b in zip(proposals, a.proposals, b.proposals, strict=True):
        assert got_a.kind == "polygon" and got_b.kind == "mask"
        assert got_a.box == p.box and got_b.box == p.box and got_b.area == p.area
        assert np.allclose(got_a.polygon, np.round(p.polygon, 2))
        np.testing.assert_array_equal(got_b.mask, p.mask)
        np.testing.assert_array_equal(got_b.region(96, 128), p.full_mask(96, 128))
        assert got_a.confidence == pytest.approx(p.confidence)
    with sqlite3.connect(log.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_path_from_env(monkeypatch, tmp_path):
    for off in ("", "off", "OFF", " none "):
        assert log_path_from_env({LOG_DB_ENV: off}) is None
    assert log_path_from_env({LOG_DB_ENV: str(tmp_path / "x.sqlite")}) == tmp_path / "x.sqlite"
    assert log_path_from_env({}).name == "defectcam-log.sqlite"
    monkeypatch.setenv(LOG_DB_ENV, "off")
    assert ProposalLog.from_env() is None
    assert log_proposals(None, SHA, (1, 1), None, {}, {}, [], None) is None


@pytest.mark.parametrize("problem", ["directory is a file", "not a database"])
def test_unwritable_store_never_raises(tmp_path, caplog, problem):
    if problem == "directory is a file":
        (tmp_path / "blocker").write_text("x")
        path = tmp_path / "blocker" / "log.sqlite"
    else:
        path = tmp_path / "log.sqlite"
        path.write_bytes(b"this is not sqlite" * 100)
    log = ProposalLog(path, logging.getLogger("test.log"))
    with caplog.at_level(logging.WARNING, logger="test.log"):
        started = time.perf_counter()
        for _ in range(3):
            assert log_proposals(log, SHA, (128, 96), None, {}, {}, make_proposals(), 0.1) is None
        elapsed = time.perf_counter() - started
    assert log.failures == 3 and elapsed < 1.0
    warnings = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one report, not one per request
    assert "the answers still went out" in warnings[0].getMessage()


def test_nuclio_style_logger_and_bad_input(tmp_path):
    seen = []

    class NuclioLogger:  # nuclio_sdk.Logger has warn(), not warning()
        def warn(self, message, *args):
            seen.append(message)

    log = ProposalLog(tmp_path / "log.sqlite", NuclioLogger())
    assert log_proposals(log, SHA, "not a size", None, {}, {}, [], None) is None
    assert log_proposals(log, SHA, (8, 8), None, {}, {}, [{"no": "label"}], None) is None
    assert seen and log.failures == 2
    assert log_proposals(log, SHA, (8, 8), None, {}, {}, [], None) == 1  # still usable


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "log.sqlite")
    ctx = multiprocessing.get_context("fork")
    workers, count = 4, 40
    procs = [ctx.Process(target=write_many, args=(path, w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    requests = read_log(path)
    assert len(requests) == workers * count
    assert {r.file_name for r in requests} == {f"w{w}-{k}.jpg" for w in range(workers)
                                               for k in range(count)}
    for r in requests:  # every request complete: one transaction each
        assert len(r.proposals) == r.params["n"]


def test_killed_writer_loses_nothing_answered(tmp_path):
    path = str(tmp_path / "log.sqlite")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=write_forever, args=(path, queue))
    proc.start()
    answered = [queue.get(timeout=60) for _ in range(25)]
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through later writes
    proc.join(30)
    while not queue.empty():
        answered.append(queue.get())
    assert proc.exitcode == -signal.SIGKILL and None not in answered
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    requests = {r.id: r for r in read_log(path)}
    assert set(answered) <= set(requests)
    for r in requests.values():  # nothing half-written either
        assert len(r.proposals) == r.params["n"]


def test_fork_after_open_reopens(tmp_path):
    log = ProposalLog(tmp_path / "log.sqlite")
    assert log_proposals(log, SHA, (8, 8), "parent", {}, {}, [], None) == 1
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: os._exit(
        0 if log_proposals(log, SHA, (8, 8), "child", {}, {}, [], None) == 2 else 1))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert log_proposals(log, SHA, (8, 8), "parent again", {}, {}, [], None) == 3
    assert [r.file_name for r in read_log(log.path)] == ["parent", "child", "parent again"]


def test_since_filter_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "nope.sqlite")
    log = ProposalLog(Path(tmp_path / "log.sqlite"))
    log_proposals(log, SHA, (8, 8), None, {}, {}, [], None)
    assert read_log(log.path, since="2999-01-01") == []
    assert len(read_log(log.path, since="2000-01-01")) == 1
