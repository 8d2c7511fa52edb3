"""Streamlit monitoring dashboard of the deployed travel chatbot, on 127.0.0.1:8502.

    streamlit run mlops/dashboards/mlops_monitoring_dashboard.py --server.address 127.0.0.1 --server.port 8502

Each section is a fragment that reruns itself every ``monitoring.interval_seconds`` (no page reload)
and is guarded: a failing data source shows a warning with the reason, never a traceback. Live data
is read with one SQL query per refresh, restricted to the selected window, and shared between the
sections through ``st.cache_data``. Nothing here writes ``models/``; user queries are only shown as
plain data (dataframes), never as markup.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pandas as pd
import streamlit as st

from mlops.config import ConfigError, Settings, load_settings
from mlops.dashboards import charts, sources
from mlops.team import hide_password

logger = logging.getLogger(__name__)

# label -> (minutes, chart bucket): charts stay at <= ~300 points whatever the window
WINDOWS = {
    "15 minutes": (15, "1min"),
    "1 hour": (60, "1min"),
    "6 hours": (360, "5min"),
    "24 hours": (1440, "10min"),
    "7 days": (10080, "1h"),
}
DEFAULT_WINDOW = "1 hour"
MLFLOW_TTL_S = 60
TRAIN = "`make run` (or `python mlops/scripts/train_chatbot_models.py`)"
SIMULATE = "`python -m mlops.monitoring.simulate --qps 20 --duration 60`"
MONITOR = "`python -m mlops.monitoring check --loop`"
DRIFT_SAMPLE = 5_000  # live rows compared with the reference; drift_report tokenises every query


@dataclass(frozen=True)
class Window:
    label: str
    minutes: int
    bucket: str
    refresh_s: int

    def since(self, now: float) -> float:
        """Start of the window; the end is 'now', rounded down to the refresh so refreshes share one read."""
        return (now // self.refresh_s) * self.refresh_s - self.minutes * 60


# ------------------------------------------------------------------------------ cached readers
@st.cache_resource(show_spinner=False)
def _engine(url: str):
    return sources.log_engine(url)


def log_engine(url: str):
    """A shared engine on the inference log; None (and nothing cached) while its file does not exist."""
    path = sources.sqlite_path(url)
    return None if path is not None and not path.is_file() else _engine(url)


@st.cache_data(ttl=120, max_entries=16, show_spinner=False)
def live_rows(url: str, since: float, feedback: bool = False) -> pd.DataFrame:
    return sources.read_window(log_engine(url), since, feedback)


@st.cache_resource(show_spinner=False, max_entries=2)
def deployed_bot(models_dir: Path, deployed_at: str):
    """The deployed bot (sha256-verified, read only), for the drift encoder; one per deployment."""
    from mlops.chatbot import TravelChatbot

    return TravelChatbot.load(models_dir)


@st.cache_data(show_spinner="Profiling the deployed models on the held-out data (once per deployment)...")
def reference_profile(_settings: Settings, deployed_at: str) -> dict:
    from mlops.monitoring.drift import reference_profile as build

    return build(_settings, bot=deployed_bot(_settings.models_dir, deployed_at))


@st.cache_data(ttl=120, max_entries=8, show_spinner=False)
def drift_of_window(_settings: Settings, url: str, since: float, deployed_at: str) -> tuple[object, dict[str, float]]:
    """The drift report of the window (on an even sample of at most DRIFT_SAMPLE rows) and its intent shares."""
    from mlops.monitoring.drift import drift_report

    rows = live_rows(url, since, False)  # the same arguments as window_rows, or the cache would miss
    sample = rows.iloc[:: -(-len(rows) // DRIFT_SAMPLE)]  # drift_report tokenises every query: bound the cost
    encoder = getattr(deployed_bot(_settings.models_dir, deployed_at).rag_model, "encoder", None)
    shares = sample["intent"].value_counts(normalize=True)
    return drift_report(reference_profile(_settings, deployed_at), sample, encoder), {
        str(intent): float(share) for intent, share in shares.items()
    }


def log_exists(settings: Settings) -> bool:
    """Whether the inference-log database exists (the backend's readers would create it)."""
    path = sources.sqlite_path(settings.inference_log_url)
    return path is None or path.is_file()


@st.cache_data(ttl=MLFLOW_TTL_S, show_spinner=False)
def mlflow_tables(tracking_uri: str, registry_uri: str | None, experiment: str) -> dict | None:
    client = sources.mlflow_client(tracking_uri, registry_uri)
    if client is None:
        return None
    runs = sources.model_runs(client, experiment)
    return {
        "runs": runs,
        "versions": sources.version_metrics(client, runs),
        "aliases": sources.registry_aliases(client),
    }


@st.cache_data(ttl=MLFLOW_TTL_S, show_spinner=False)
def run_details(tracking_uri: str, registry_uri: str | None, run_id: str) -> dict:
    return sources.run_details(sources.mlflow_client(tracking_uri, registry_uri), run_id)


def mlflow_data(settings: Settings) -> dict | None:
    return mlflow_tables(settings.tracking_uri, settings.mlflow.registry_uri, settings.mlflow.experiment_name)


# ------------------------------------------------------------------------------ page scaffolding
@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Show a failing section as a warning with its reason; st.stop/st.rerun are BaseExceptions and pass."""
    try:
        yield
    except Exception as exc:  # any data source may fail; the other sections must still render
        logger.exception("dashboard section %s failed", what)
        st.warning(f"{what}: could not be shown ({type(exc).__name__}: {exc})")


def backend(name: str) -> ModuleType | None:
    """``mlops.monitoring.<name>``, or None (with an info box) while that module does not exist."""
    module = f"mlops.monitoring.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        st.info(f"Not available yet: `{module}` is not installed in this checkout.")
        return None


def section(title: str, body: Callable[[Settings, Window], None], settings: Settings, window: Window) -> None:
    """A header and a self-refreshing, guarded fragment running ``body``."""
    st.header(title, divider="gray")

    @st.fragment(run_every=window.refresh_s)
    def live() -> None:
        tic = time.perf_counter()
        with guarded(title):
            body(settings, window)
        st.caption(f"updated {datetime.now(UTC):%H:%M:%S} UTC")
        logger.debug("section %s rendered in %.3f s", title, time.perf_counter() - tic)

    live()


def no_traffic(window: Window, settings: Settings) -> None:
    st.info(
        f"No traffic in the last {window.label}. Send some: {SIMULATE}, or chat at "
        f"http://{settings.deployment.chatbot_host}:{settings.deployment.chatbot_port}."
    )


def window_rows(settings: Settings, window: Window, feedback: bool = False) -> pd.DataFrame:
    return live_rows(settings.inference_log_url, window.since(time.time()), feedback)


def to_time(frame: pd.DataFrame, column: str = "ts") -> pd.DataFrame:
    """Epoch seconds in ``column`` as UTC datetimes (a copy)."""
    frame = frame.copy()
    frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def sidebar(settings: Settings) -> Window:
    st.sidebar.header("Monitoring")
    label = st.sidebar.selectbox("Time window", list(WINDOWS), index=list(WINDOWS).index(DEFAULT_WINDOW))
    every = settings.monitoring.interval_seconds
    st.sidebar.caption(
        f"Refreshes every {every} s (monitoring.interval_seconds) · page built {datetime.now(UTC):%H:%M:%S} UTC"
    )
    chat = f"http://{settings.deployment.chatbot_host}:{settings.deployment.chatbot_port}"
    ui = f"http://{settings.mlflow.ui_host}:{settings.mlflow.ui_port}"
    st.sidebar.link_button("Chatbot UI", chat)
    st.sidebar.caption(chat)
    st.sidebar.link_button("MLflow UI", ui)
    st.sidebar.caption(ui)
    st.sidebar.caption(f"Inference log: {hide_password(settings.inference_log_url)}")
    st.sidebar.caption(f"Models: {settings.models_dir}")
    return Window(label, *WINDOWS[label], every)


# ------------------------------------------------------------------------------ sections
def deployed_section(settings: Settings, window: Window) -> None:
    summary = sources.deployment_summary(settings.models_dir)
    if summary is None:
        st.info(f"Nothing is deployed in {settings.models_dir}. Train and deploy: `make run`.")
    else:
        rollback = f" · rolled back at {summary['rolled_back_at'][:19]}" if summary["rolled_back_at"] else ""
        st.caption(
            f"Release {summary['release']} deployed {str(summary['deployed_at'])[:19]} UTC by "
            f"{summary['deployed_by']}{rollback} · rollback target: {summary['previous_release'] or 'none'}"
        )
        aliases = None
        with guarded("Registry aliases"):
            tables = mlflow_data(settings)
            aliases = tables["aliases"] if tables else None
        st.dataframe(sources.deployed_models(settings.models_dir, aliases), hide_index=True, width="stretch")
    history = sources.deployment_history(settings.models_dir)
    if history.empty:
        st.caption("No deployment history yet (models/history.jsonl is written by every deploy and rollback).")
        return
    st.altair_chart(charts.deployment_timeline(history), width="stretch")
    st.dataframe(history, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(history)))


def traffic_section(settings: Settings, window: Window) -> None:
    rows = window_rows(settings, window)
    if rows.empty:
        no_traffic(window, settings)
        return
    stats = backend("stats")
    if stats is None:
        return
    freq = window.bucket
    per_minute = stats.traffic_per_minute(rows)
    if freq != "1min":  # keep charts to a few hundred points: mean requests/min per bucket
        per_minute = per_minute.resample(freq, on="ts")["requests"].mean().reset_index()
    p95 = stats.latency_quantile(rows, 0.95)
    cols = st.columns(6)
    cols[0].metric("Requests", f"{len(rows):,}", help=f"answered queries in the last {window.label}")
    cols[1].metric("Requests / min", f"{len(rows) / window.minutes:.1f}", help="mean over the window")
    cols[2].metric("p95 latency", f"{p95:.1f} ms")
    cols[3].metric("Out-of-scope rate", f"{stats.oos_rate(rows):.1%}")
    cols[4].metric("Mean confidence", f"{stats.mean_confidence(rows):.2f}")
    cols[5].metric("Unanswered", f"{int((~rows['answered']).sum()):,}")
    left, right = st.columns(2)
    left.altair_chart(charts.requests_per_minute(per_minute, freq), width="stretch")
    right.altair_chart(charts.latency_percentiles(stats.latency_over_time(rows, freq=freq), freq), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(charts.intent_mix(stats.intent_mix(rows)), width="stretch")
    with right:
        st.subheader("Top unanswered queries")
        top = stats.top_unanswered(rows, n=10)
        if top.empty:
            st.caption("Every query in the window was answered.")
        else:
            st.dataframe(top, hide_index=True, width="stretch")  # user text as data, never as markup


def accuracy_section(settings: Settings, window: Window) -> None:
    left, right = st.columns(2)
    with left, guarded("Live accuracy"):
        st.subheader("Live accuracy (user feedback)")
        live_accuracy_panel(settings, window)
    with right, guarded("Canary evaluation"):
        canary_panel(settings, window)
    with guarded("Offline metrics"):
        st.subheader("Offline metrics of each registered version (held-out test split)")
        tables = mlflow_data(settings)
        if tables is None or tables["versions"].empty:
            st.info(f"No registered model versions yet. Train and register them: {TRAIN}.")
        else:
            st.altair_chart(charts.offline_metrics(tables["versions"]))


def live_accuracy_panel(settings: Settings, window: Window) -> None:
    votes = window_rows(settings, window, feedback=True)
    if votes.empty:
        st.info(f"No thumbs up/down in the last {window.label}: answers are rated in the chat UI.")
        return
    stats = backend("stats")
    if stats is None:
        return
    up = int((votes["value"] > 0).sum())
    st.metric("Live accuracy", f"{stats.live_accuracy(votes):.1%}", help="thumbs up / all votes in the window")
    st.caption(f"{up} thumbs up · {len(votes) - up} thumbs down in the last {window.label}")
    if votes["ts"].max() - votes["ts"].min() >= 120:  # a line needs votes spread over a few buckets
        buckets = pd.to_datetime(votes["ts"], unit="s", utc=True).dt.floor(window.bucket)
        series = (votes["value"] > 0).groupby(buckets.to_numpy()).mean().rename("accuracy").rename_axis("ts")
        st.altair_chart(charts.rate_over_time(series.reset_index(), "accuracy", "Thumbs-up share"), width="stretch")


def canary_panel(settings: Settings, window: Window) -> None:
    st.subheader("Scheduled canary evaluation")
    canary = backend("canary")
    if canary is None:
        return
    nothing_deployed = sources.deployment_summary(settings.models_dir) is None
    help_text = (
        "nothing is deployed: `make run` first" if nothing_deployed else "the deployed bot answers the test queries"
    )
    if st.button("Run canary now", key="run-canary", help=help_text, disabled=nothing_deployed):
        with st.spinner("Evaluating the deployed bot on the golden test queries..."):
            canary.run_canary(settings)
    latest = canary.last_run(settings) if log_exists(settings) else None
    if latest is None:
        st.info(f"No canary run yet: press the button, or start the scheduler: {MONITOR}.")
        return
    cols = st.columns(3)
    cols[0].metric("Canary accuracy", f"{latest['accuracy']:.1%}")
    cols[1].metric("OOS recall", "–" if latest["oos_recall"] is None else f"{latest['oos_recall']:.1%}")
    cols[2].metric("Hit@3", "–" if latest["hit_at_3"] is None else f"{latest['hit_at_3']:.1%}")
    versions = " ".join(f"{key.split('_')[0]}=v{version}" for key, version in sorted(latest["versions"].items()))
    st.caption(
        f"Last run {datetime.fromtimestamp(latest['ts'], UTC):%Y-%m-%d %H:%M:%S} UTC on {latest['n']} intent + "
        f"{latest['n_retrieval']} retrieval queries · p95 {latest['p95_latency_ms']:.1f} ms · {versions}"
    )
    history = canary.read_canary(settings, since=window.since(time.time()))
    if len(history) > 1:
        st.altair_chart(charts.rate_over_time(to_time(history), "accuracy", "Canary accuracy"), width="stretch")


def drift_section(settings: Settings, window: Window) -> None:
    rows = window_rows(settings, window)
    if rows.empty:
        no_traffic(window, settings)
        return
    deployed_at = (sources.deployment_summary(settings.models_dir) or {}).get("deployed_at")
    if deployed_at is None:
        st.info(f"Nothing is deployed in {settings.models_dir}, so there is no reference to compare with: `make run`.")
        return
    if backend("drift") is None:
        return
    reference = reference_profile(settings, deployed_at)
    since = window.since(time.time())
    report, live_intents = drift_of_window(settings, settings.inference_log_url, since, deployed_at)
    table = report.frame()
    drifted = int(table["drifted"].sum())
    cols = st.columns(4)
    cols[0].metric("Drift score", f"{report.score:.2f}", help="worst signal score / its threshold; >= 1 is drift")
    cols[1].metric("Signals drifted", f"{drifted} of {len(table)}")
    cols[2].metric(
        "Live queries compared", f"{report.n_live:,}", help=f"an even sample of the {len(rows):,} in the window"
    )
    cols[3].metric("Reference queries", f"{report.n_reference:,}", help="held-out queries of the training data")
    left, right = st.columns([2, 3])
    left.altair_chart(charts.drift_scores(table.dropna(subset=["score"])), width="stretch")
    intents = pd.concat(
        [
            pd.DataFrame({"intent": list(dist), "share": list(dist.values()), "source": source})
            for source, dist in (("reference", reference["intent_dist"]), ("live", live_intents))
        ]
    )
    right.altair_chart(charts.reference_vs_live(intents, "intent", "Intent distribution"), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")


def system_section(settings: Settings, window: Window) -> None:
    system = backend("system")
    if system is None:
        return
    samples = system.read_system(settings, since=window.since(time.time())) if log_exists(settings) else None
    if samples is None or samples.empty:
        st.info(f"No system samples in the last {window.label}: start the monitor: {MONITOR}.")
        return
    samples = to_time(samples)
    last = samples.iloc[-1]
    cols = st.columns(6)
    cols[0].metric("CPU", f"{last['cpu_percent']:.0f} %")
    cols[1].metric("Memory", f"{last['memory_percent']:.0f} %")
    cols[2].metric("Disk", f"{last['disk_percent']:.0f} %")
    cols[3].metric("Serving processes", int(last["serving_processes"]))
    cols[4].metric("Serving CPU", f"{last['serving_cpu_percent']:.0f} %")
    cols[5].metric("Serving memory", f"{last['serving_rss_mb']:.0f} MB")
    step = -(-len(samples) // 500)  # at most ~500 points per line
    samples = samples.iloc[::step]
    usage = samples.melt(
        id_vars="ts",
        value_vars=["cpu_percent", "memory_percent", "disk_percent", "serving_cpu_percent"],
        var_name="series",
        value_name="percent",
    )
    usage["series"] = usage["series"].str.removesuffix("_percent").str.replace("_", " ")
    left, right = st.columns(2)
    left.altair_chart(charts.system_usage(usage, "Machine and serving CPU, memory, disk (%)"), width="stretch")
    memory = samples[["ts", "serving_rss_mb"]].rename(columns={"serving_rss_mb": "mb"}).assign(series="serving RSS")
    right.altair_chart(charts.memory_mb(memory), width="stretch")
    processes = pd.DataFrame(json.loads(last["processes"] or "[]"))
    if len(processes):
        st.caption(f"Serving processes at {last['ts']:%H:%M:%S} UTC")
        st.dataframe(processes, hide_index=True, width="stretch")


def experiments_section(settings: Settings, window: Window) -> None:
    tables = mlflow_data(settings)
    if tables is None or tables["runs"].empty:
        st.info(f"No runs in the experiment '{settings.mlflow.experiment_name}' yet: {TRAIN}.")
        return
    runs = tables["runs"]
    headline = [name for names in sources.HEADLINE_METRICS.values() for name in names if name in runs.columns]
    others = sorted(set(runs.columns) - {"run_id", "model", "run_name", "start_time", "status", *headline})
    st.dataframe(
        runs[["model", "start_time", *dict.fromkeys(headline), *others, "status", "run_name", "run_id"]],
        hide_index=True,
        width="stretch",
        height=min(420, 38 + 35 * len(runs)),
    )
    labels = {
        row.run_id: f"{row.model} · {row.start_time:%Y-%m-%d %H:%M:%S} · {row.run_id[:8]}" for row in runs.itertuples()
    }
    ids = list(labels)
    second = next((i for i, row in enumerate(runs.itertuples()) if i and row.model == runs["model"].iloc[0]), 0)
    left, right = st.columns(2)
    run_a = left.selectbox("Run A", ids, index=second, format_func=labels.get, key="run-a")
    run_b = right.selectbox("Run B", ids, index=0, format_func=labels.get, key="run-b")
    first = run_details(settings.tracking_uri, settings.mlflow.registry_uri, run_a)
    other = run_details(settings.tracking_uri, settings.mlflow.registry_uri, run_b)
    metrics, params = sources.compare_two(first, other)
    shared = metrics.dropna(subset=["run A", "run B"])
    shared = shared[~shared["metric"].str.endswith(("_time_s", "_std"))]
    left, right = st.columns([3, 2])
    if len(shared):
        long = shared.melt(id_vars="metric", value_vars=["run A", "run B"], var_name="run", value_name="value")
        left.altair_chart(charts.run_comparison(long), width="stretch")
    else:
        left.info("The two runs share no metric (they train different models).")
    right.dataframe(metrics, hide_index=True, width="stretch")
    right.caption("Params that differ" if len(params) else "Same params")
    if len(params):
        right.dataframe(params, hide_index=True, width="stretch")


def alerts_section(settings: Settings, window: Window) -> None:
    alerts = backend("alerts")
    if alerts is None:
        return
    if not log_exists(settings):
        st.success(f"No alerts: nothing has been checked yet. Rules are checked by {MONITOR}.")
        return
    since = window.since(time.time())
    open_now = alerts.open_alerts(settings)
    recent = alerts.read_alerts(settings, since=since)
    recent = recent[recent["state"] != "open"]
    cols = st.columns(4)
    cols[0].metric("Open alerts", len(open_now))
    cols[1].metric("Critical open", int((open_now["severity"] == "critical").sum()))
    cols[2].metric(f"Resolved in the last {window.label}", len(recent))
    cols[3].metric("Rules", len(settings.monitoring.alert_rules))
    if open_now.empty and recent.empty:
        st.success(f"No open alerts and none in the last {window.label}. Rules are checked by {MONITOR}.")
        return
    table = alert_table(pd.concat([open_now, recent], ignore_index=True))
    if len(table) > 1:
        st.altair_chart(charts.alert_timeline(table, since), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")  # messages quote values only, still shown as data


def alert_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Open alerts first, then newest first, with times as UTC datetimes."""
    frame = frame.rename(columns={"ts": "opened_at"})
    for column in ("opened_at", "resolved_at", "last_seen_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    frame = frame.sort_values(["state", "opened_at"], ascending=[True, False], key=_open_first)
    shown = ["state", "severity", "rule", "opened_at", "resolved_at", "value", "threshold", "message", "last_seen_at"]
    return frame[shown].reset_index(drop=True)


def _open_first(column: pd.Series) -> pd.Series:
    return column.map({"open": 0}).fillna(1) if column.name == "state" else column


SECTIONS: tuple[tuple[str, Callable[[Settings, Window], None]], ...] = (
    ("Alerts", alerts_section),
    ("Deployed models", deployed_section),
    ("Live traffic", traffic_section),
    ("Accuracy", accuracy_section),
    ("Drift", drift_section),
    ("System health", system_section),
    ("Experiments", experiments_section),
)


def main() -> None:
    st.set_page_config(page_title="MLOps monitoring", page_icon="📈", layout="wide")
    st.title("Travel chatbot · MLOps monitoring")
    try:
        settings = load_settings()
    except ConfigError as exc:
        st.error(str(exc))
        st.stop()
    window = sidebar(settings)
    for title, body in SECTIONS:
        section(title, body, settings, window)


main()
