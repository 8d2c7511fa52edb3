"""The inference log: one row per answered query, written off the request path.

``InferenceLog.record`` only puts the response on a queue (microseconds); a background thread
writes batches in one transaction each. SQLAlchemy Core keeps the code the same for SQLite (the
default, in WAL mode so readers never block the writer) and PostgreSQL (team mode).

Retention: with ``retention_days`` and/or ``max_rows`` (``monitoring.retention_days`` and
``monitoring.max_rows`` in ``monitoring_config.yaml``) the writer thread deletes older rows when
it starts and every ``PRUNE_INTERVAL_S`` seconds after that, so the log cannot grow without bound.
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
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from mlops.processes import sqlite_creation_lock

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import Settings

logger = logging.getLogger(__name__)

MAX_LOGGED_QUERY_CHARS = 1000
PRUNE_INTERVAL_S = 60.0

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
    if url.startswith("sqlite"):
        engine = create_engine(url, future=True)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:  # a server database: a pooled connection may have died with a restart of the server
        engine = create_engine(url, future=True, pool_pre_ping=True)
    if url.startswith("sqlite:///"):
        # two processes creating a new SQLite file at once race on its first connection and tables
        with sqlite_creation_lock(Path(url[len("sqlite:///") :])):
            metadata.create_all(engine)
            upgrade_schema(engine)
        return engine
    try:
        metadata.create_all(engine)
    except (OperationalError, IntegrityError, ProgrammingError):
        # another process created the tables between the check and the CREATE (SQLite: "already
        # exists"; PostgreSQL: a duplicate pg_type row or relation)
        metadata.create_all(engine)
    upgrade_schema(engine)
    return engine


class LogSchemaError(RuntimeError):
    """An existing log lacks a column this version needs and cannot add by itself."""


def upgrade_schema(engine) -> list[str]:
    """Bring tables made by an older version up to date: add the nullable columns they lack.

    ``create_all`` creates missing tables but never touches existing ones. A missing nullable column
    is added (``ALTER TABLE … ADD COLUMN``, old rows get NULL); a missing required one cannot be
    filled in for old rows, so it is an error that names the table, the column and the fix.

    Returns:
        ``table.column`` of each column added.
    """
    inspector = inspect(engine)
    added = []
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise LogSchemaError(
                    f"{engine.url.render_as_string(hide_password=True)}: table '{table.name}' lacks the required "
                    f"column '{column.name}' (written by an older version); move the log aside to start a new one"
                )
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
            except (OperationalError, ProgrammingError):  # another process added it first (a shared server)
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise
                continue
            added.append(f"{table.name}.{column.name}")
    if added:
        logger.info("inference log schema upgraded: added %s", ", ".join(added))
    return added


class InferenceLog:
    """Append-only log of chatbot responses with a background batch writer.

    Args:
        location: A SQLAlchemy URL or a path to a SQLite file.
        versions: Deployed model versions stored with every row.
        batch_size: Most rows written in one transaction.
        clock: Wall clock in seconds since the epoch, injectable for tests.
        retention_days: Delete rows older than this many days (None: keep them).
        max_rows: Keep at most this many inference rows, deleting the oldest (None: no limit).
        prune_interval_s: Seconds between two prunes by the writer thread.
    """

    def __init__(
        self,
        location: str | Path,
        versions: dict[str, str] | None = None,
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
        retention_days: float | None = None,
        max_rows: int | None = None,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ):
        self.engine = make_engine(location)
        self.location = str(location)
        self.versions = json.dumps(versions or {}, sort_keys=True)
        self.batch_size = batch_size
        self.clock = clock
        self.retention_days, self.max_rows, self.prune_interval_s = retention_days, max_rows, prune_interval_s
        self._next_prune = 0.0
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.written = 0
        self.failed = 0
        self.pruned = 0
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def record(self, response: dict) -> str:
        """Queue one response (``query``, ``intent``, ``confidence``, ``sources``, ``latency_ms``).

        Returns:
            The request id the row is stored under (what :meth:`feedback` refers to).
        """
        sources = response.get("sources") or []
        request_id = uuid.uuid4().hex
        versions = response.get("versions")  # the versions that answered (the bot may have swapped models)
        self._queue.put(
            {
                "request_id": request_id,
                "ts": self.clock(),
                "query": storable_text(response.get("query", ""), MAX_LOGGED_QUERY_CHARS),
                "intent": response["intent"],
                "confidence": float(response["confidence"]),
                "latency_ms": float(response["latency_ms"]),
                "n_sources": len(sources),
                "top_source": storable_text(sources[0]["name"], 200) if sources else None,
                "answered": response["intent"] != "out_of_scope",
                "versions": self.versions if versions is None else json.dumps(versions, sort_keys=True),
                "pid": os.getpid(),
            }
        )
        return request_id

    __call__ = record

    @classmethod
    def from_settings(cls, settings: Settings, versions: dict[str, str] | None = None, **kwargs) -> InferenceLog:
        """The configured log (``monitoring.inference_log``) with the configured retention."""
        m = settings.monitoring
        return cls(settings.inference_log_url, versions, retention_days=m.retention_days, max_rows=m.max_rows, **kwargs)

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

    def _insert(self, rows: list[dict], attempts: int) -> Exception | None:
        error = None
        for attempt in range(attempts):
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(inference_table), rows)
                return None
            except Exception as exc:  # a locked or full database, a row the database refuses: retry
                error = exc
                if attempt + 1 < attempts:
                    time.sleep(0.05 * (attempt + 1))
        return error

    def _write(self, rows: list[dict]) -> None:
        error = self._insert(rows, attempts=3)
        if error is None:
            self.written += len(rows)
            return
        lost = len(rows)
        if len(rows) > 1:  # one row the database refuses must not cost the others theirs: one by one, once
            for row in rows:
                if self._insert([row], attempts=1) is None:
                    self.written += 1
                    lost -= 1
        if lost:
            self.failed += lost
            logger.error(
                "inference log %s: could not write %d of %d rows (%d lost in total): %s",
                self.location, lost, len(rows), self.failed, error,
            )  # fmt: skip

    def prune(self) -> int:
        """Apply the retention now. Returns the number of rows deleted (0 on a database error, which is logged)."""
        try:
            deleted = prune_log(self.engine, self.retention_days, self.max_rows, self.clock())
        except Exception as exc:  # pruning is housekeeping: never stop the writer for it
            logger.error("inference log %s: retention not applied: %s", self.location, exc)
            return 0
        self.pruned += deleted
        return deleted

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            if (self.retention_days or self.max_rows) and time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + self.prune_interval_s
                self.prune()
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


def storable_text(value: object, limit: int) -> str:
    """Text any database stores: at most ``limit`` characters, no NUL, no lone surrogates."""
    text = str(value)[:limit].replace("\x00", "\ufffd")
    return text.encode("utf-8", errors="replace").decode("utf-8")


def prune_log(engine_or_location, retention_days: float | None, max_rows: int | None, now: float | None = None) -> int:
    """Delete inference rows (and feedback) older than ``retention_days``, then all but the newest ``max_rows``.

    Args:
        engine_or_location: An engine from :func:`make_engine`, a SQLAlchemy URL or a SQLite path.
        retention_days: Age limit in days; None keeps every age.
        max_rows: Row limit of ``inference_log``; None keeps every row.
        now: Seconds since the epoch; defaults to the wall clock.

    Returns:
        How many rows were deleted.
    """
    engine = engine_or_location if hasattr(engine_or_location, "begin") else make_engine(engine_or_location)
    now = time.time() if now is None else now
    deleted = 0
    try:
        with engine.begin() as connection:
            if retention_days is not None:
                cutoff = now - retention_days * 86_400.0
                deleted += connection.execute(delete(inference_table).where(inference_table.c.ts < cutoff)).rowcount
                connection.execute(delete(feedback_table).where(feedback_table.c.ts < cutoff))
            if max_rows is not None:
                newest = connection.execute(select(func.max(inference_table.c.id))).scalar()
                if newest is not None and newest > max_rows:
                    oldest_kept = newest - max_rows  # ids only grow, so this keeps at most max_rows rows
                    deleted += connection.execute(
                        delete(inference_table).where(inference_table.c.id <= oldest_kept)
                    ).rowcount
    finally:
        if engine is not engine_or_location:
            engine.dispose()
    if deleted:
        logger.info("inference log: retention deleted %d rows", deleted)
    return deleted


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
