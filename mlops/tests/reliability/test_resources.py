"""Resources: a full disk while writing the inference log or a deployment, and a log that would grow
without bound (retention).

A full disk is produced for real for the SQLite log (``PRAGMA max_page_count`` makes SQLite answer
SQLITE_FULL, "database or disk is full", exactly as on a full file system). For the deployment's own
files a non-root user cannot fill a file system, so ``os.fsync``/``os.replace`` on files under
``models/`` are made to raise ``OSError(ENOSPC)`` (the one stated exception to "no mocks").
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text

import mlops.deployment as deployment
from mlops.chatbot import TravelChatbot
from mlops.config import ConfigError
from mlops.monitoring.inference_log import InferenceLog, feedback_table, prune_log, read_log

from ..conftest import write_settings
from .conftest import manifest_bytes, sqlite_ok


def _row(query: str, intent: str = "weather") -> dict:
    return {"query": query, "intent": intent, "confidence": 0.9, "latency_ms": 1.0, "sources": []}


def test_a_full_disk_under_the_inference_log_loses_rows_loudly_and_corrupts_nothing(tmp_path, caplog):
    path = tmp_path / "log.db"
    log = InferenceLog(path, batch_size=100)
    for i in range(10):
        log.record(_row(f"before {i}"))
    log.flush()
    with log.engine.connect() as connection:
        pages = connection.execute(text("PRAGMA page_count")).scalar()

    def full(dbapi_connection, _record):
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    event.listen(log.engine, "connect", full)
    log.engine.dispose()  # new connections: the database cannot grow any more
    with caplog.at_level(logging.ERROR):
        for i in range(300):
            log.record(_row(f"while full {i} " + "x" * 900))
        log.flush(timeout=60)
    assert log.failed > 0 and "database or disk is full" in caplog.text and "lost in total" in caplog.text
    event.remove(log.engine, "connect", full)
    log.engine.dispose()  # space is back
    for i in range(10):
        log.record(_row(f"after {i}"))
    log.close()
    assert sqlite_ok(path)
    rows = read_log(path)
    assert {f"before {i}" for i in range(10)} | {f"after {i}" for i in range(10)} <= set(rows["query"])
    assert len(rows) == log.written and log.written + log.failed == 320  # every row accounted for


def _enospc_under(root: Path, real):
    by_path = real is os.replace  # os.replace(src, dst) names its target; os.fsync(fd) gets a descriptor

    def fake(*args):
        try:
            target = args[-1] if by_path else os.readlink(f"/proc/self/fd/{args[0]}")
        except OSError:  # another thread's descriptor, already closed: not ours
            target = ""
        if str(target).startswith(str(root)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    return fake


@pytest.mark.parametrize("where", ["release_files", "manifest"])
def test_a_full_disk_during_a_deployment_leaves_the_live_one_untouched(live, monkeypatch, where):
    before = manifest_bytes(live)
    releases = sorted(p.name for p in (live.models_dir / "releases").iterdir())
    if where == "release_files":
        monkeypatch.setattr(deployment.os, "fsync", _enospc_under(live.models_dir / "releases", os.fsync))
    else:
        monkeypatch.setattr(deployment.os, "replace", _enospc_under(live.models_dir / "manifest.json", os.replace))
    with pytest.raises(OSError, match="deployment aborted while writing to .*the live deployment is unchanged") as err:
        deployment.deploy(live, force=True)
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert manifest_bytes(live) == before
    assert sorted(p.name for p in (live.models_dir / "releases").iterdir()) == releases  # nothing half-written kept
    assert not list(live.models_dir.glob(".manifest.json.*"))  # no temp file left behind
    TravelChatbot.load(live.models_dir).process_query("hello")


def test_retention_deletes_old_rows_and_caps_the_row_count(tmp_path):
    now = time.time()
    clock = iter([now - 3 * 86_400] * 1500 + [now] * 1200)
    log = InferenceLog(tmp_path / "log.db", clock=lambda: next(clock))
    for i in range(1500):
        log.record(_row(f"old {i}"))
    for i in range(1200):
        log.record(_row(f"new {i}"))
    log.close()
    assert len(read_log(tmp_path / "log.db")) == 2700
    assert prune_log(tmp_path / "log.db", retention_days=1, max_rows=None, now=now) == 1500
    assert prune_log(tmp_path / "log.db", retention_days=1, max_rows=1000, now=now) == 200
    rows = read_log(tmp_path / "log.db")
    assert len(rows) == 1000 and set(rows["query"]) == {f"new {i}" for i in range(200, 1200)}


def test_the_writer_applies_the_configured_retention_by_itself(tmp_path):
    settings = write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {"max_rows": 1000}}})
    assert settings.monitoring.retention_days == 30 and settings.monitoring.max_rows == 1000
    log = InferenceLog.from_settings(settings, prune_interval_s=0.2)
    old = time.time() - 40 * 86_400
    log.clock = lambda: old
    log.record(_row("forty days ago"))
    log.flush()
    log.feedback("some-request", 1)
    log.clock = time.time
    for i in range(2500):
        log.record(_row(f"q{i}"))
    log.flush()
    deadline = time.monotonic() + 10
    while len(read_log(settings.inference_log_url)) > 1000 and time.monotonic() < deadline:
        log.record(_row("tick"))  # the writer prunes between batches
        time.sleep(0.1)
    log.close()
    rows = read_log(settings.inference_log_url)
    assert len(rows) <= 1000 and "forty days ago" not in set(rows["query"]) and log.pruned >= 1501
    assert len(read_log(settings.inference_log_url, table=feedback_table)) == 0  # its feedback went with it


@pytest.mark.parametrize(("key", "value"), [("retention_days", 0), ("retention_days", "a month"), ("max_rows", 10)])
def test_bad_retention_settings_are_refused(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"'monitoring.{key}'"):
        write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {key: value}}})
