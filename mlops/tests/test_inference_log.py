"""The inference log: every answered query becomes one row, from any thread, off the request path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from mlops.monitoring.inference_log import MAX_LOGGED_QUERY_CHARS, InferenceLog, read_log


def response(query: str, intent: str = "weather", sources=None) -> dict:
    return {"query": query, "intent": intent, "confidence": 0.9, "latency_ms": 1.5, "sources": sources or []}


def test_rows_from_many_threads_are_all_written(tmp_path):
    clock = iter(float(t) for t in range(10_000))
    log = InferenceLog(tmp_path / "log.db", {"llm_model": "3"}, clock=lambda: next(clock))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: log.record(response(f"query {i}")), range(400)))
    log.close()
    rows = read_log(tmp_path / "log.db")
    assert len(rows) == 400 and log.written == 400 and log.failed == 0
    assert set(rows["query"]) == {f"query {i}" for i in range(400)}
    assert rows["versions"].iloc[0] == '{"llm_model": "3"}'


def test_row_content_truncation_and_since_filter(tmp_path):
    times = iter([100.0, 200.0])
    log = InferenceLog(tmp_path / "log.db", clock=lambda: next(times))
    log.record(response("x" * 5000, "out_of_scope"))
    log.record(response("leopards?", "activities", [{"name": "Yala National Park", "score": 0.5}]))
    log.close()
    rows = read_log(tmp_path / "log.db")
    assert len(rows.loc[0, "query"]) == MAX_LOGGED_QUERY_CHARS and not rows.loc[0, "answered"]
    assert rows.loc[1, "top_source"] == "Yala National Park" and rows.loc[1, "n_sources"] == 1
    assert list(read_log(tmp_path / "log.db", since=150.0)["query"]) == ["leopards?"]


def test_a_log_written_by_an_older_version_is_upgraded_or_refused_clearly(tmp_path):
    import sqlite3

    import pytest

    from mlops.monitoring.inference_log import LogSchemaError

    old = tmp_path / "old.db"  # an older inference table: no top_source, no versions (both nullable now)
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE inference_log (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id VARCHAR(32) NOT NULL, "
            "ts FLOAT NOT NULL, query TEXT NOT NULL, intent VARCHAR(64) NOT NULL, confidence FLOAT NOT NULL, "
            "latency_ms FLOAT NOT NULL, n_sources INTEGER NOT NULL, answered BOOLEAN NOT NULL, pid INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO inference_log (request_id, ts, query, intent, confidence, latency_ms, n_sources, "
                   "answered, pid) VALUES ('r0', 1.0, 'old row', 'weather', 0.8, 2.0, 0, 0, 1)")  # fmt: skip
    log = InferenceLog(old, {"llm_model": "7"}, clock=lambda: 2.0)
    log.record(response("new row", "activities", [{"name": "Yala National Park", "score": 0.5}]))
    log.close()
    rows = read_log(old)
    assert list(rows["query"]) == ["old row", "new row"]  # nothing lost, the new columns filled from now on
    assert rows["top_source"].isna().iloc[0] and rows["top_source"].iloc[1] == "Yala National Park"

    broken = tmp_path / "broken.db"  # lacks a required column: old rows cannot be given a value
    with sqlite3.connect(broken) as db:
        db.execute(
            "CREATE TABLE inference_log (id INTEGER PRIMARY KEY, request_id VARCHAR(32) NOT NULL, ts FLOAT NOT NULL)"
        )
    with pytest.raises(
        LogSchemaError, match=r"broken\.db: table 'inference_log' lacks the required column 'query'.*aside"
    ):
        InferenceLog(broken)
