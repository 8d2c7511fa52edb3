"""Aggregates of live traffic over an inference-log frame (what ``read_log`` returns).

Every function is vectorised pandas, takes the frame as it comes from the log (``ts`` in seconds
since the epoch) and never raises on an empty frame: tables come back empty with their columns,
scalars come back as ``None`` ("no data", not zero).
"""

from __future__ import annotations

import time

import pandas as pd

from mlops.taxonomy import OUT_OF_SCOPE

LATENCY_QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def _empty(frame: pd.DataFrame | None) -> bool:
    return frame is None or len(frame) == 0


def _timestamps(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["ts"], unit="s", utc=True)


def window(frame: pd.DataFrame, minutes: float, now: float | None = None) -> pd.DataFrame:
    """Rows whose ``ts`` lies in ``(now - minutes, now]``.

    Args:
        frame: Rows with a ``ts`` column in seconds since the epoch.
        minutes: Length of the window.
        now: End of the window in seconds since the epoch; defaults to the wall clock.

    Returns:
        The rows inside the window (the frame itself when it is empty).
    """
    if _empty(frame):
        return frame if frame is not None else pd.DataFrame()
    now = time.time() if now is None else now
    ts = frame["ts"]
    return frame[(ts > now - minutes * 60.0) & (ts <= now)]


def traffic_per_minute(frame: pd.DataFrame) -> pd.DataFrame:
    """Requests per minute, with the quiet minutes in between as zeros.

    Returns:
        Columns ``ts`` (UTC minute) and ``requests``.
    """
    if _empty(frame):
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "requests": pd.Series(dtype="int64")})
    counts = _timestamps(frame).dt.floor("1min").value_counts().sort_index()
    full = pd.date_range(counts.index[0], counts.index[-1], freq="1min")
    counts = counts.reindex(full, fill_value=0)
    return pd.DataFrame({"ts": counts.index, "requests": counts.to_numpy(dtype="int64")})


def latency_over_time(frame: pd.DataFrame, freq: str = "1min") -> pd.DataFrame:
    """Latency percentiles per time bucket (buckets without traffic are left out).

    Args:
        frame: Inference-log rows.
        freq: A pandas frequency, e.g. ``"1min"`` or ``"5min"``.

    Returns:
        Columns ``ts`` (bucket start, UTC), ``p50``, ``p95``, ``p99`` in milliseconds.
    """
    columns = ["ts", *LATENCY_QUANTILES]
    if _empty(frame):
        empty = {column: pd.Series(dtype=float) for column in LATENCY_QUANTILES}
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), **empty})
    seconds = pd.Timedelta(freq).total_seconds()
    # integer bucket keys: grouping on tz-aware timestamps is ~40x slower
    buckets = (frame["ts"].to_numpy() // seconds).astype("int64")
    table = frame["latency_ms"].groupby(buckets).quantile(list(LATENCY_QUANTILES.values())).unstack()
    table.columns = list(LATENCY_QUANTILES)
    table.insert(0, "ts", pd.to_datetime(table.index.to_numpy() * seconds, unit="s", utc=True))
    return table.reset_index(drop=True)[columns]


def latency_quantile(frame: pd.DataFrame, q: float = 0.95) -> float | None:
    """The ``q`` quantile of ``latency_ms`` over the whole frame, or None without rows."""
    return None if _empty(frame) else float(frame["latency_ms"].quantile(q))


def intent_mix(frame: pd.DataFrame) -> pd.DataFrame:
    """How often each intent was predicted, most frequent first.

    Returns:
        Columns ``intent``, ``count`` and ``share`` (fractions summing to 1).
    """
    if _empty(frame):
        return pd.DataFrame({"intent": pd.Series(dtype=str), "count": pd.Series(dtype="int64"), "share": []})
    counts = frame["intent"].value_counts()
    return pd.DataFrame(
        {"intent": counts.index.astype(str), "count": counts.to_numpy(), "share": (counts / counts.sum()).to_numpy()}
    )


def oos_rate(frame: pd.DataFrame) -> float | None:
    """Share of queries answered ``out_of_scope``, or None without rows."""
    return None if _empty(frame) else float((frame["intent"] == OUT_OF_SCOPE).mean())


def mean_confidence(frame: pd.DataFrame) -> float | None:
    """Mean confidence of the intent model, or None without rows."""
    return None if _empty(frame) else float(frame["confidence"].mean())


def top_unanswered(frame: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The queries most often left unanswered (out of scope), case and spacing folded.

    Returns:
        Columns ``query`` (the latest spelling), ``count`` and ``last_seen`` (UTC), at most ``n`` rows.
    """
    columns = {"query": pd.Series(dtype=str), "count": pd.Series(dtype="int64"),
               "last_seen": pd.Series(dtype="datetime64[ns, UTC]")}  # fmt: skip
    if _empty(frame):
        return pd.DataFrame(columns)
    missed = frame.loc[~frame["answered"].astype(bool), ["query", "ts"]]
    if missed.empty:
        return pd.DataFrame(columns)
    key = missed["query"].str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
    grouped = missed.groupby(key.to_numpy())
    table = pd.DataFrame({"query": grouped["query"].last(), "count": grouped.size(), "ts": grouped["ts"].max()})
    table = table.sort_values(["count", "ts"], ascending=False).head(n)
    table["last_seen"] = pd.to_datetime(table["ts"], unit="s", utc=True)
    return table[["query", "count", "last_seen"]].reset_index(drop=True)


def live_accuracy(feedback: pd.DataFrame) -> float | None:
    """Share of thumbs-up (+1) among the feedback rows, or None without feedback."""
    return None if _empty(feedback) else float((feedback["value"] > 0).mean())
