"""The inference log: one row per answered query, written off the request path.

``InferenceLog.record`` only puts the response on a queue (microseconds); a background thread
writes batches in one transaction each. SQLAlchemy Core keeps the code the same for SQLite (the
default, in WAL mode so readers never block the writer) and PostgreSQL (team mode).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import OperationalError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

MAX_LOGGED_QUERY_CHARS = 1000

metadata = MetaData()
inference_table = Table(
    "inference_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(32), nullable=False, index=True),
    Column("ts", Float, nullable=False, index=True),
    Column("query", Text, nullable=False),
    Column("intent", String(64), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("n_sources", Integer, nullable=False),
    Column("top_source", String(200)),
    Column("answered", Boolean, nullable=False),
    Column("versions", Text),
    Column("pid", Integer, nullable=False),
)
feedback_table = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(32), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("value", Integer, nullable=False),  # +1 thumbs up, -1 thumbs down
)
alerts_table = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False, index=True),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # open | resolved
    # the rule's name while open, NULL once resolved: the database allows one open alert per rule,
    # even when the dashboard and the background loop check at the same moment
    Column("open_key", String(64), unique=True),
    Column("ts", Float, nullable=False, index=True),  # when it opened
    Column("resolved_at", Float),
    Column("last_seen_at", Float, nullable=False),
    Column("last_notified_at", Float, nullable=False),
    Column("notifications", Integer, nullable=False),
    Column("last_event", String(16), nullable=False),  # the last one sent: firing | reminder | resolved
    Column("value", Float),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
)
system_table = Table(
    "system_health",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("cpu_percent", Float, nullable=False),
    Column("memory_percent", Float, nullable=False),
    Column("disk_percent", Float, nullable=False),
    Column("serving_processes", Integer, nullable=False),
    Column("serving_rss_mb", Float, nullable=False),
    Column("serving_cpu_percent", Float, nullable=False),
    Column("processes", Text),  # JSON list of {pid, cmd, rss_mb, cpu_percent}
)
canary_table = Table(
    "canary_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("accuracy", Float, nullable=False),
    Column("oos_recall", Float),  # NULL when the golden set has no out_of_scope query
    Column("hit_at_3", Float),  # NULL when there is no retrieval query
    Column("n", Integer, nullable=False),
    Column("n_retrieval", Integer, nullable=False),
    Column("p95_latency_ms", Float, nullable=False),
    Column("versions", Text),
    Column("deployed_at", String(64)),
)


def database_url(location: str | Path) -> str:
    """A SQLAlchemy URL for a configured location: a URL is kept, a path becomes SQLite."""
    text = str(location)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(location: str | Path):
    url = database_url(location)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
    except OperationalError:  # another process created the tables between the check and the CREATE
        metadata.create_all(engine)
    return engine


class InferenceLog:
    """Append-only log of chatbot responses with a background batch writer.

    Args:
        location: A SQLAlchemy URL or a path to a SQLite file.
        versions: Deployed model versions stored with every row.
        batch_size: Most rows written in one transaction.
        clock: Wall clock in seconds since the epoch, injectable for tests.
    """

    def __init__(
        self,
        location: str | Path,
        versions: dict[str, str] | None = None,
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
    ):
        self.engine = make_engine(location)
        self.versions = json.dumps(versions or {}, sort_keys=True)
        self.batch_size = batch_size
        self.clock = clock
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def record(self, response: dict) -> str:
        """Queue one response (``query``, ``intent``, ``confidence``, ``sources``, ``latency_ms``).

        Returns:
            The request id the row is stored under (what :meth:`feedback` refers to).
        """
        sources = response.get("sources") or []
        request_id = uuid.uuid4().hex
        self._queue.put(
            {
                "request_id": request_id,
                "ts": self.clock(),
                "query": str(response.get("query", ""))[:MAX_LOGGED_QUERY_CHARS],
                "intent": response["intent"],
                "confidence": float(response["confidence"]),
                "latency_ms": float(response["latency_ms"]),
                "n_sources": len(sources),
                "top_source": sources[0]["name"] if sources else None,
                "answered": response["intent"] != "out_of_scope",
                "versions": self.versions,
                "pid": os.getpid(),
            }
        )
        return request_id

    __call__ = record

    def feedback(self, request_id: str, value: int) -> None:
        """Store a user's thumbs up (+1) or down (-1) for an answered request.

        Raises:
            ValueError: ``value`` is not +1 or -1.
        """
        if value not in (1, -1):
            raise ValueError(f"feedback must be +1 or -1, got {value!r}")
        with self.engine.begin() as connection:
            connection.execute(insert(feedback_table), [{"request_id": request_id, "ts": self.clock(), "value": value}])

    def _drain(self, first: dict) -> list[dict]:
        rows = [first]
        while len(rows) < self.batch_size:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def _write(self, rows: list[dict]) -> None:
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(inference_table), rows)
                self.written += len(rows)
                return
            except Exception:  # a locked or full database: retry, then count the loss loudly
                if attempt == 2:
                    self.failed += len(rows)
                    logger.exception("inference log: could not write %d rows", len(rows))
                    return
                time.sleep(0.05 * (attempt + 1))

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            rows = self._drain(first)
            self._write(rows)
            for _ in rows:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every queued row is written (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()


def read_log(
    location: str | Path, since: float | None = None, limit: int | None = None, table: Table = inference_table
) -> pd.DataFrame:
    """Rows of the inference log (or of ``feedback_table``), oldest first, optionally from ``since`` on."""
    import pandas as pd

    engine = make_engine(location)
    try:
        query = select(table).order_by(table.c.id)
        if since is not None:
            query = query.where(table.c.ts >= since)
        if limit is not None:
            query = query.limit(limit)
        with engine.connect() as connection:
            return pd.read_sql(query, connection)
    finally:
        engine.dispose()


def insert_rows(location: str | Path, table: Table, rows: list[dict]) -> None:
    """Write ``rows`` into ``table`` of the log database in one transaction (monitoring's own tables)."""
    engine = make_engine(location)
    try:
        with engine.begin() as connection:
            connection.execute(insert(table), rows)
    finally:
        engine.dispose()
