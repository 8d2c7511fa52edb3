"""Altair (Vega-Lite) charts of the monitoring dashboard; each takes a small, already aggregated frame."""

from __future__ import annotations

import altair as alt
import pandas as pd

HEIGHT = 220
TIME = alt.X("ts:T", title=None, axis=alt.Axis(format="%H:%M", labelAngle=0))  # tooltips carry the date


def requests_per_minute(frame: pd.DataFrame, bucket: str = "1min") -> alt.Chart:
    """Bars of requests per minute (``ts``, ``requests``), averaged per ``bucket``."""
    title = "Requests per minute" + ("" if bucket == "1min" else f" (mean per {bucket})")
    return (
        alt.Chart(frame, title=title, height=HEIGHT)
        .mark_bar(color="#4c78a8")
        .encode(
            x=TIME,
            y=alt.Y("requests:Q", title="requests / min"),
            tooltip=[alt.Tooltip("ts:T", format="%b %d %H:%M"), "requests:Q"],
        )
    )


def latency_percentiles(frame: pd.DataFrame, bucket: str = "1min") -> alt.Chart:
    """p50/p95/p99 latency lines (``ts``, ``p50``, ``p95``, ``p99``) per ``bucket``."""
    long = frame.melt(id_vars="ts", value_vars=["p50", "p95", "p99"], var_name="percentile", value_name="ms")
    return (
        alt.Chart(long, title=f"Latency percentiles per {bucket} (ms)", height=HEIGHT)
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=TIME,
            y=alt.Y("ms:Q", title="ms"),
            color=alt.Color("percentile:N", sort=["p50", "p95", "p99"], legend=alt.Legend(orient="top", title=None)),
            tooltip=[alt.Tooltip("ts:T", format="%b %d %H:%M"), "percentile:N", alt.Tooltip("ms:Q", format=".1f")],
        )
    )


def intent_mix(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of the share of each intent (``intent``, ``count``, ``share``)."""
    return (
        alt.Chart(frame, title="Intent mix", height=alt.Step(22))
        .mark_bar()
        .encode(
            y=alt.Y("intent:N", sort="-x", title=None),
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of requests"),
            color=alt.condition(alt.datum.intent == "out_of_scope", alt.value("#e45756"), alt.value("#4c78a8")),
            tooltip=["intent:N", "count:Q", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def rate_over_time(frame: pd.DataFrame, column: str, title: str) -> alt.Chart:
    """A line of one fraction over time (``ts``, ``column``)."""
    return (
        alt.Chart(frame, title=title, height=HEIGHT)
        .mark_line(point=alt.OverlayMarkDef(size=12), color="#f58518")
        .encode(
            x=TIME,
            y=alt.Y(f"{column}:Q", axis=alt.Axis(format="%"), title=None, scale=alt.Scale(domain=[0, 1])),
            tooltip=[alt.Tooltip("ts:T", format="%b %d %H:%M"), alt.Tooltip(f"{column}:Q", format=".1%")],
        )
    )


def offline_metrics(frame: pd.DataFrame) -> alt.Chart:
    """Headline metric of each registered version over time, one panel per model (long format)."""
    base = alt.Chart(frame).encode(
        x=alt.X(
            "registered_at:T",
            title="registered",
            axis=alt.Axis(format="%b %d %H:%M", labelAngle=-30, tickCount=4, labelOverlap="greedy"),
        ),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("metric:N", legend=alt.Legend(orient="top", title=None)),
        tooltip=["model:N", "version:N", "metric:N", alt.Tooltip("value:Q", format=".3f"), "registered_at:T"],
    )
    layered = base.mark_line() + base.mark_point(filled=True, size=50)
    return layered.properties(width=200, height=160).facet(facet=alt.Facet("model:N", title=None), columns=4)


def reference_vs_live(frame: pd.DataFrame, category: str, title: str) -> alt.Chart:
    """Grouped bars of a distribution in the reference and in the live window (``category``, ``source``, ``share``)."""
    return (
        alt.Chart(frame, title=title, height=alt.Step(12))
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", title=None),
            yOffset="source:N",
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share"),
            color=alt.Color("source:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=[f"{category}:N", "source:N", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def drift_scores(frame: pd.DataFrame) -> alt.Chart:
    """Bars of each drift signal's score with its threshold tick (``signal``, ``score``, ``threshold``, ``drifted``)."""
    base = alt.Chart(frame, title="Drift score against threshold")
    bars = base.mark_bar().encode(
        y=alt.Y("signal:N", title=None),
        x=alt.X("score:Q", title="score"),
        color=alt.Color("drifted:N", scale=alt.Scale(domain=[False, True], range=["#54a24b", "#e45756"]), legend=None),
        tooltip=["signal:N", alt.Tooltip("score:Q", format=".3f"), alt.Tooltip("threshold:Q", format=".3f")],
    )
    ticks = base.mark_tick(color="black", thickness=2, size=24).encode(y="signal:N", x="threshold:Q")
    return (bars + ticks).properties(height=alt.Step(32))


def system_usage(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Lines of percentages over time (``ts``, ``series``, ``percent``)."""
    return (
        alt.Chart(frame, title=title, height=HEIGHT)
        .mark_line(point=alt.OverlayMarkDef(size=14))
        .encode(
            x=TIME,
            y=alt.Y("percent:Q", title="%", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("series:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=[alt.Tooltip("ts:T", format="%b %d %H:%M:%S"), "series:N", alt.Tooltip("percent:Q", format=".1f")],
        )
    )


def memory_mb(frame: pd.DataFrame) -> alt.Chart:
    """Lines of resident memory in MB over time (``ts``, ``series``, ``mb``)."""
    return (
        alt.Chart(frame, title="Memory of serving processes (MB)", height=HEIGHT)
        .mark_line(point=alt.OverlayMarkDef(size=14))
        .encode(
            x=TIME,
            y=alt.Y("mb:Q", title="MB"),
            color=alt.Color("series:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=[alt.Tooltip("ts:T", format="%b %d %H:%M:%S"), "series:N", alt.Tooltip("mb:Q", format=".0f")],
        )
    )


def run_comparison(frame: pd.DataFrame) -> alt.Chart:
    """Grouped bars of the metrics two runs share (``metric``, ``run``, ``value``)."""
    return (
        alt.Chart(frame, title="Run A vs run B", height=alt.Step(12))
        .mark_bar()
        .encode(
            y=alt.Y("metric:N", title=None),
            yOffset="run:N",
            x=alt.X("value:Q", title=None),
            color=alt.Color("run:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=["metric:N", "run:N", alt.Tooltip("value:Q", format=".4f")],
        )
    )


def deployment_timeline(frame: pd.DataFrame) -> alt.Chart:
    """Points of deployment history events over time, coloured by outcome (``at``, ``outcome``, ...)."""
    return (
        alt.Chart(frame, title="Deployment history", height=120)
        .mark_point(filled=True, size=120)
        .encode(
            x=alt.X("at:T", title=None, axis=alt.Axis(format="%b %d %H:%M", labelAngle=0)),
            y=alt.Y("outcome:N", title=None),
            color=alt.Color("outcome:N", legend=None),
            tooltip=["at:T", "action:N", "outcome:N", "versions:N", "reason:N"],
        )
    )


def alert_timeline(frame: pd.DataFrame, since: float | None = None) -> alt.Chart:
    """Alert intervals per rule (``opened_at`` to ``resolved_at`` or now), coloured by severity.

    The time axis spans the selected window (from ``since``, epoch seconds) up to now, so an alert's
    bar shows when in the window it was open.
    """
    now = pd.Timestamp.now(tz="UTC")
    frame = frame.assign(until=frame["resolved_at"].fillna(now))
    start = pd.Timestamp(since, unit="s", tz="UTC") if since is not None else frame["opened_at"].min()
    frame = frame.assign(opened_at=frame["opened_at"].clip(lower=start))  # alerts opened before the window
    domain = [start.isoformat(), now.isoformat()]
    return (
        alt.Chart(frame, title="Alerts", height=alt.Step(28))
        .mark_bar(height=14, cornerRadius=3)
        .encode(
            x=alt.X(
                "opened_at:T", title=None, scale=alt.Scale(domain=domain), axis=alt.Axis(labelAngle=0, format="%H:%M")
            ),
            x2="until:T",
            y=alt.Y("rule:N", title=None),
            color=alt.Color(
                "severity:N",
                scale=alt.Scale(domain=["info", "warning", "critical"], range=["#4c78a8", "#f58518", "#e45756"]),
                legend=alt.Legend(orient="top", title=None),
            ),
            tooltip=["rule:N", "severity:N", "state:N", "opened_at:T", "resolved_at:T", "message:N"],
        )
    )
