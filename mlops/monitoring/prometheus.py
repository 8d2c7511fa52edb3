"""Prometheus text exposition of the chatbot's key metrics, derived from the shared inference log.

Several serving processes (the chat UI, the CLI, an API) write the same log, so counters kept in
one process's memory would each tell part of the story. :class:`InferenceLogCollector` instead runs
a few SQL aggregates at every scrape: the numbers are the log's, whichever process wrote a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from mlops.config import Settings
from mlops.monitoring.inference_log import (
    alerts_table,
    canary_table,
    feedback_table,
    inference_table,
    make_engine,
    system_table,
)
from mlops.taxonomy import OUT_OF_SCOPE

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
SEVERITIES = ("info", "warning", "critical")
PREFIX = "chatbot"


class InferenceLogCollector(Collector):
    """Collects the metrics from the inference-log database at every scrape.

    Args:
        settings: The database, the rule windows (OOS rate, live accuracy) and the models folder.
        clock: Wall clock in epoch seconds, injectable for tests.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.engine = make_engine(settings.inference_log_url)

    def collect(self) -> Iterator:
        now = self.clock()
        rules = self.settings.monitoring.alert_rules
        with self.engine.connect() as connection:
            yield self._requests(connection)
            yield self._latency(connection)
            yield self._feedback(connection)
            yield from self._oos_rate(connection, now - rules["oos_rate"].window_minutes * 60.0)
            yield from self._live_accuracy(connection, now - rules["live_accuracy"].window_minutes * 60.0)
            yield self._alerts(connection)
            yield from self._latest(connection)
        yield from self._model_info()

    @staticmethod
    def _requests(connection) -> CounterMetricFamily:
        family = CounterMetricFamily(
            f"{PREFIX}_requests", "Answered queries in the inference log, by predicted intent", labels=["intent"]
        )
        t = inference_table
        for intent, count in connection.execute(select(t.c.intent, func.count()).group_by(t.c.intent)):
            family.add_metric([intent], count)
        return family

    @staticmethod
    def _latency(connection) -> HistogramMetricFamily:
        t = inference_table
        columns = [func.count(), func.coalesce(func.sum(t.c.latency_ms), 0.0)]
        columns += [
            func.coalesce(func.sum(case((t.c.latency_ms <= le * 1000.0, 1), else_=0)), 0) for le in LATENCY_BUCKETS_S
        ]
        count, total_ms, *cumulative = connection.execute(select(*columns)).one()
        buckets = [(repr(le), int(n)) for le, n in zip(LATENCY_BUCKETS_S, cumulative, strict=True)]
        return HistogramMetricFamily(
            f"{PREFIX}_request_latency_seconds",
            "Time to answer a query (all rows of the inference log)",
            buckets=[*buckets, ("+Inf", int(count))],
            sum_value=float(total_ms) / 1000.0,
        )

    @staticmethod
    def _feedback(connection) -> CounterMetricFamily:
        family = CounterMetricFamily(f"{PREFIX}_feedback", "Thumbs from users, up or down", labels=["value"])
        t = feedback_table
        counts = dict(connection.execute(select(t.c.value, func.count()).group_by(t.c.value)).all())
        family.add_metric(["up"], counts.get(1, 0))
        family.add_metric(["down"], counts.get(-1, 0))
        return family

    @staticmethod
    def _oos_rate(connection, since: float) -> Iterator[GaugeMetricFamily]:
        t = inference_table
        is_oos = case((t.c.intent == OUT_OF_SCOPE, 1.0), else_=0.0)
        value = connection.execute(select(func.avg(is_oos)).where(t.c.ts > since)).scalar()
        if value is not None:  # no traffic in the window: no sample rather than a made-up 0
            yield GaugeMetricFamily(
                f"{PREFIX}_oos_rate", "Share of queries answered out_of_scope in the oos_rate rule's window", value
            )

    @staticmethod
    def _live_accuracy(connection, since: float) -> Iterator[GaugeMetricFamily]:
        t = feedback_table
        up = case((t.c.value > 0, 1.0), else_=0.0)
        value = connection.execute(select(func.avg(up)).where(t.c.ts > since)).scalar()
        if value is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_live_accuracy", "Share of thumbs-up in the live_accuracy rule's window", value
            )

    @staticmethod
    def _alerts(connection) -> GaugeMetricFamily:
        family = GaugeMetricFamily(f"{PREFIX}_alerts_open", "Open alerts by severity", labels=["severity"])
        t = alerts_table
        query = select(t.c.severity, func.count()).where(t.c.state == "open").group_by(t.c.severity)
        counts = dict(connection.execute(query).all())
        for severity in SEVERITIES:
            family.add_metric([severity], counts.get(severity, 0))
        return family

    @staticmethod
    def _latest(connection) -> Iterator[GaugeMetricFamily]:
        canary = connection.execute(select(canary_table).order_by(canary_table.c.ts.desc()).limit(1)).mappings().first()
        if canary is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_canary_accuracy",
                "Accuracy of the latest canary run on the golden queries",
                canary["accuracy"],
            )
        sample = connection.execute(select(system_table).order_by(system_table.c.ts.desc()).limit(1)).mappings().first()
        if sample is not None:
            for column in ("cpu_percent", "memory_percent", "serving_rss_mb"):
                yield GaugeMetricFamily(
                    f"{PREFIX}_system_{column}", f"Latest system-health sample: {column}", sample[column]
                )

    def _model_info(self) -> Iterator[InfoMetricFamily]:
        from mlops.chatbot.bot import DeploymentError, read_manifest

        try:
            manifest = read_manifest(self.settings.models_dir)
        except DeploymentError:
            return
        family = InfoMetricFamily(f"{PREFIX}_model", "Deployed model versions", labels=["model"])
        for key, entry in sorted(manifest["models"].items()):
            version = str(entry.get("version")) if isinstance(entry, dict) else "?"
            family.add_metric([key], {"version": version, "deployed_at": str(manifest.get("deployed_at", ""))})
        yield family

    def close(self) -> None:
        self.engine.dispose()


def registry_for(settings: Settings, clock: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry holding only the inference-log collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InferenceLogCollector(settings, clock))
    return registry


def render(settings: Settings, clock: Callable[[], float] = time.time) -> bytes:
    """The metrics in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    collector = InferenceLogCollector(settings, clock)
    registry.register(collector)
    try:
        return generate_latest(registry)
    finally:
        collector.close()


def serve(settings: Settings, port: int | None = None, host: str | None = None):
    """Serve ``/metrics`` on ``host:port`` (defaults: ``monitoring.metrics_host`` and ``metrics_port``).

    Returns:
        ``(server, thread)``; stop it with ``server.shutdown()``.
    """
    from prometheus_client import start_http_server

    host = host or settings.monitoring.metrics_host
    port = port or settings.monitoring.metrics_port
    server, thread = start_http_server(port, addr=host, registry=registry_for(settings))
    logger.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return server, thread
