"""Alerting: rules from ``monitoring_config.yaml`` over the shared inference-log database.

One check measures every rule over its window, updates the ``alerts`` table and notifies:

* a breached rule without an open alert opens one and notifies (``firing``); within the rule's
  cooldown of its last notification it reopens the last alert silently, so a flapping value is one
  incident, not a flood;
* a breached rule with an open alert stays open; once the cooldown has passed it sends a reminder;
* an open alert whose value is back on the good side resolves (and says so, if its opening was sent);
* too few samples in the window is "no data": nothing changes.

Channels are callables taking an :class:`AlertEvent`: the alert log file, and a Slack-compatible
webhook whose URL comes from an environment variable and is never logged. The dashboard reads the
table. The database allows one open alert per rule, so concurrent checks cannot open two.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mlops.config import AlertRule, Settings
from mlops.monitoring import stats
from mlops.monitoring.inference_log import (
    alerts_table,
    canary_table,
    feedback_table,
    inference_table,
    make_engine,
    read_log,
    system_table,
)

logger = logging.getLogger(__name__)

BELOW = ("live_accuracy", "canary_accuracy")  # these fire when the value drops under the threshold
UNITS = {"p95_latency": " s", "cpu_percent": " %", "memory_percent": " %"}
OPEN, RESOLVED = "open", "resolved"
EXIT_OK, EXIT_ALERT_OPEN = 0, 1


@dataclass(frozen=True)
class Measurement:
    """A rule's value over its window (None: nothing to measure) and the samples behind it."""

    value: float | None
    n: int
    detail: str = ""


@dataclass(frozen=True)
class AlertEvent:
    """One notification: ``kind`` is ``firing``, ``reminder`` or ``resolved``."""

    kind: str
    rule: str
    severity: str
    value: float | None
    threshold: float
    window_minutes: int
    ts: float
    n: int = 0
    detail: str = ""

    def text(self) -> str:
        """One line for a human: what, how bad, compared with what."""
        side = "below" if self.rule in BELOW else "above"
        good = "above" if side == "below" else "below"
        value = _fmt(self.rule, self.value)
        threshold = _fmt(self.rule, self.threshold)
        if self.kind == "resolved":
            return f"[RESOLVED] {self.rule} = {value}, back {good} {threshold} (travel chatbot)"
        label = "FIRING" if self.kind == "firing" else "STILL FIRING"
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"[{label}] {self.severity} {self.rule} = {value}, {side} {threshold} "
            f"over the last {self.window_minutes} min (n={self.n}{extra}) (travel chatbot)"
        )


@dataclass(frozen=True)
class RuleResult:
    """What one check found for one rule.

    ``state``: ``ok``, ``firing`` (opened now), ``open``, ``resolved`` (now), ``no data`` or ``disabled``.
    """

    rule: str
    value: float | None
    threshold: float
    n: int
    state: str
    severity: str
    detail: str = ""

    @property
    def is_open(self) -> bool:
        return self.state in ("firing", "open")


Channel = Callable[[AlertEvent], object]


def _fmt(rule: str, value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}{UNITS.get(rule, '')}"


def breached(rule: str, value: float, threshold: float) -> bool:
    """Whether ``value`` is on the bad side of ``threshold`` for ``rule``."""
    return value < threshold if rule in BELOW else value > threshold


# ----------------------------------------------------------------------------- channels
class LogFileChannel:
    """Appends one line per notification to a file (``monitoring.alert_log``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __call__(self, event: AlertEvent) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(event.ts, UTC).isoformat(timespec="seconds")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {event.text()}\n")


class WebhookChannel:
    """POSTs ``{"text": ...}`` as JSON (Slack-compatible), retried with exponential back-off.

    The URL is a secret: no message, log line or exception text of this class contains it.

    Args:
        url: The webhook URL (http or https).
        timeout: Seconds per attempt.
        retries: Extra attempts after a failed one.
        backoff: Seconds before the first retry; doubled for each further one.
        sleep: Injectable for tests.

    Raises:
        ValueError: The URL is not http(s) (urllib would also open ``file://``).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("the alert webhook URL must start with http:// or https://")
        self._url = url
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.attempts = 0

    def __repr__(self) -> str:
        return "WebhookChannel(<url hidden>)"

    def _post(self, body: bytes) -> int:
        request = urllib.request.Request(
            self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # the scheme was checked in __init__
            return reply.status

    def __call__(self, event: AlertEvent) -> bool:
        """Send the event; True when the server accepted it, False after the last failed attempt."""
        body = json.dumps({"text": event.text()}).encode("utf-8")
        reason = ""
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                status = self._post(body)
                if 200 <= status < 300:
                    logger.info("webhook: sent %s %s", event.kind, event.rule)
                    return True
                reason = f"HTTP {status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    logger.error("webhook: refused with %s; not retrying (check the URL in the variable)", reason)
                    return False
            except (urllib.error.URLError, OSError) as exc:  # the str() of these may name the host: not logged
                cause = getattr(exc, "reason", None)
                reason = type(cause if isinstance(cause, BaseException) else exc).__name__
            if attempt < self.retries:
                delay = self.backoff * 2**attempt
                logger.warning("webhook: attempt %d failed (%s); retrying in %.1fs", attempt + 1, reason, delay)
                self.sleep(delay)
        logger.error("webhook: gave up on %s %s after %d attempts (%s)", event.kind, event.rule, attempt + 1, reason)
        return False


def default_channels(settings: Settings, env: Mapping[str, str] | None = None) -> list[Channel]:
    """The log file, plus the webhook when ``monitoring.webhook_url_env`` is set in ``env``."""
    env = os.environ if env is None else env
    channels: list[Channel] = [LogFileChannel(settings.path(settings.monitoring.alert_log))]
    url = env.get(settings.monitoring.webhook_url_env, "").strip()
    if url:
        m = settings.monitoring
        channels.append(WebhookChannel(url, m.webhook_timeout_s, m.webhook_retries, m.webhook_backoff_s))
    return channels


def notify(event: AlertEvent, channels: list[Channel]) -> None:
    """Send ``event`` to every channel; one failing channel does not stop the others."""
    log = logger.warning if event.kind != "resolved" else logger.info
    log("alert %s", event.text())
    for channel in channels:
        try:
            channel(event)
        except OSError as exc:  # a full disk or a closed pipe: the other channels still get it
            logger.error("alert channel %s failed: %s", type(channel).__name__, type(exc).__name__)


# ----------------------------------------------------------------------------- measuring
def _latest(frame: pd.DataFrame, column: str) -> float | None:
    return None if frame.empty else float(frame.sort_values("ts")[column].iloc[-1])


def _mean(frame: pd.DataFrame, column: str) -> float | None:
    return None if frame.empty else float(frame[column].mean())


def _drift(settings: Settings, frame: pd.DataFrame, rule: AlertRule) -> Measurement:
    from mlops.chatbot.bot import DeploymentError
    from mlops.data import DataValidationError
    from mlops.monitoring.drift import deployed_encoder, drift_report, reference_profile

    if len(frame) < rule.min_samples:
        return Measurement(None, len(frame))  # not worth loading the reference
    try:
        reference = reference_profile(settings)
    except (DeploymentError, DataValidationError, ValueError) as exc:
        logger.info("drift: no reference profile: %s", exc)
        return Measurement(None, len(frame), "no reference profile")
    report = drift_report(reference, frame, deployed_encoder(settings))  # the dashboard's signals, all of them
    worst = [row["signal"] for row in report.rows if row["drifted"]]
    return Measurement(report.score, len(frame), f"drifted: {', '.join(worst)}" if worst else "")


def measure(settings: Settings, now: float | None = None) -> dict[str, Measurement]:
    """Every enabled rule's value over its window, from the shared database.

    Args:
        settings: Rules and the inference-log database.
        now: End of the windows (epoch seconds); defaults to the wall clock.

    Returns:
        Rule name -> measurement (``value`` None when the window holds nothing to measure).
    """
    now = time.time() if now is None else now
    rules = {name: rule for name, rule in settings.monitoring.alert_rules.items() if rule.enabled}
    url = settings.inference_log_url

    def read(table, *names: str) -> pd.DataFrame:
        minutes = max((rules[name].window_minutes for name in names if name in rules), default=None)
        if minutes is None:
            return pd.DataFrame(columns=["ts"])
        return read_log(url, since=now - minutes * 60.0, table=table)

    def window(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return stats.window(frame, rules[name].window_minutes, now)

    traffic = read(inference_table, "p95_latency", "oos_rate", "drift_score")
    feedback = read(feedback_table, "live_accuracy")
    system = read(system_table, "cpu_percent", "memory_percent")
    canary = read(canary_table, "canary_accuracy")
    found: dict[str, Measurement] = {}
    for name in rules:
        if name == "live_accuracy":
            frame = window(feedback, name)
            found[name] = Measurement(stats.live_accuracy(frame), len(frame))
        elif name == "canary_accuracy":
            frame = window(canary, name)
            found[name] = Measurement(_latest(frame, "accuracy"), len(frame))
        elif name == "p95_latency":
            frame = window(traffic, name)
            p95 = stats.latency_quantile(frame, 0.95)
            found[name] = Measurement(None if p95 is None else p95 / 1000.0, len(frame))
        elif name in ("cpu_percent", "memory_percent"):
            frame = window(system, name)
            found[name] = Measurement(_mean(frame, name), len(frame))
        elif name == "oos_rate":
            frame = window(traffic, name)
            found[name] = Measurement(stats.oos_rate(frame), len(frame))
        elif name == "drift_score":
            found[name] = _drift(settings, window(traffic, name), rules[name])
    return found


# ----------------------------------------------------------------------------- the alert state
class AlertStore:
    """The ``alerts`` table: open, remind, reopen and resolve alerts; safe for concurrent checkers."""

    def __init__(self, location: str):
        self.engine = make_engine(location)

    def close(self) -> None:
        self.engine.dispose()

    def _one(self, query) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return dict(row) if row else None

    def open_alert(self, rule: str) -> dict | None:
        """The rule's open alert, or None."""
        return self._one(select(alerts_table).where(alerts_table.c.open_key == rule))

    def last_alert(self, rule: str) -> dict | None:
        """The rule's newest alert, open or resolved, or None."""
        return self._one(select(alerts_table).where(alerts_table.c.rule == rule).order_by(alerts_table.c.id.desc()))

    def _update(self, alert_id: int, guard, **values) -> bool:
        try:
            with self.engine.begin() as connection:
                result = connection.execute(update(alerts_table).where(alerts_table.c.id == alert_id, guard), values)
        except IntegrityError:  # another checker opened an alert for this rule a moment ago
            return False
        return result.rowcount == 1

    def open(self, rule: str, spec: AlertRule, m: Measurement, now: float) -> bool:
        """Open a new alert; False when another checker already holds the rule's open alert."""
        row = {
            "rule": rule, "severity": spec.severity, "state": OPEN, "open_key": rule, "ts": now,
            "resolved_at": None, "last_seen_at": now, "last_notified_at": now, "notifications": 1,
            "last_event": "firing", "value": m.value, "threshold": spec.threshold, "message": m.detail,
        }  # fmt: skip
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(alerts_table), [row])
        except IntegrityError:
            return False
        return True

    def reopen(self, alert: dict, m: Measurement, now: float) -> bool:
        """Open a resolved alert again (flapping within the cooldown); False if another checker was first."""
        return self._update(
            alert["id"], alerts_table.c.state == RESOLVED,
            state=OPEN, open_key=alert["rule"], resolved_at=None, last_seen_at=now, value=m.value,
        )  # fmt: skip

    def seen(self, alert: dict, m: Measurement, now: float, remind: bool) -> bool:
        """Record the latest value of an open alert; with ``remind``, claim the reminder (True if claimed)."""
        values = {"last_seen_at": now, "value": m.value}
        if not remind:
            self._update(alert["id"], alerts_table.c.state == OPEN, **values)
            return False
        values.update(last_notified_at=now, notifications=alert["notifications"] + 1, last_event="reminder")
        return self._update(alert["id"], alerts_table.c.last_notified_at == alert["last_notified_at"], **values)

    def resolve(self, alert: dict, m: Measurement, now: float, announce: bool) -> bool:
        """Resolve an open alert; True if this call resolved it (so this caller announces it)."""
        values = {"state": RESOLVED, "open_key": None, "resolved_at": now, "last_seen_at": now, "value": m.value}
        if announce:
            values["last_event"] = "resolved"
        return self._update(alert["id"], alerts_table.c.state == OPEN, **values)


def _step(store: AlertStore, name: str, spec: AlertRule, m: Measurement, now: float) -> tuple[str, str | None]:
    """Apply one rule's measurement to its alert. Returns ``(state, event kind to send or None)``."""
    alert = store.open_alert(name)
    if not spec.enabled:
        if alert:
            store.resolve(alert, m, now, announce=False)
        return "disabled", None
    if m.value is None or m.n < spec.min_samples:
        return ("open" if alert else "no data"), None
    cooldown = spec.cooldown_minutes * 60.0
    if breached(name, m.value, spec.threshold):
        if alert:
            claimed = store.seen(alert, m, now, remind=now - alert["last_notified_at"] >= cooldown)
            return "open", ("reminder" if claimed else None)
        last = store.last_alert(name)
        if last and now - last["last_notified_at"] < cooldown:
            store.reopen(last, m, now)  # flapping within the cooldown: the same incident, no new message
            return "open", None
        return ("firing", "firing") if store.open(name, spec, m, now) else ("open", None)
    if alert:
        announce = alert["last_event"] != "resolved"  # its reopening was silent: so is its end
        if store.resolve(alert, m, now, announce):
            return "resolved", ("resolved" if announce else None)
    return "ok", None


def evaluate(
    settings: Settings,
    measurements: Mapping[str, Measurement],
    now: float | None = None,
    channels: list[Channel] | None = None,
) -> list[RuleResult]:
    """Update the alerts table from ``measurements`` and notify the channels.

    Args:
        settings: The rules and the database.
        measurements: Rule name -> measurement (from :func:`measure`, or made up in tests).
        now: The time of the check (epoch seconds); defaults to the wall clock.
        channels: Where notifications go; defaults to :func:`default_channels`.

    Returns:
        One result per configured rule, in configuration order.
    """
    now = time.time() if now is None else now
    channels = default_channels(settings) if channels is None else channels
    store = AlertStore(settings.inference_log_url)
    results = []
    try:
        for name, spec in settings.monitoring.alert_rules.items():
            m = measurements.get(name) or Measurement(None, 0)
            state, kind = _step(store, name, spec, m, now)
            if kind is not None:
                event = AlertEvent(kind, name, spec.severity, m.value, spec.threshold, spec.window_minutes, now, m.n)
                notify(replace(event, detail=m.detail), channels)
            results.append(RuleResult(name, m.value, spec.threshold, m.n, state, spec.severity, m.detail))
    finally:
        store.close()
    return results


def collect(settings: Settings, now: float | None = None) -> None:
    """Take a system-health sample, apply the log's retention, run the canary if it is due.

    A missing deployment skips the canary.
    """
    from mlops.chatbot.bot import DeploymentError
    from mlops.data import DataValidationError
    from mlops.monitoring import canary, system
    from mlops.monitoring.inference_log import prune_log

    system.sample(settings, now=now)
    monitoring = settings.monitoring
    pruned = prune_log(settings.inference_log_url, monitoring.retention_days, monitoring.max_rows, now=now)
    if pruned:
        logger.info("inference log: removed %d rows past retention", pruned)
    if canary.due(settings, now=now):
        try:
            canary.run_canary(settings, now=now)
        except (DeploymentError, DataValidationError) as exc:
            logger.warning("canary skipped: %s", exc)


def check(
    settings: Settings,
    now: float | None = None,
    channels: list[Channel] | None = None,
    collect_first: bool = True,
) -> list[RuleResult]:
    """One monitoring cycle: optionally collect (system sample, due canary), measure, evaluate, notify.

    Args:
        settings: The rules and the database.
        now: The time of the check (epoch seconds); defaults to the wall clock.
        channels: Where notifications go; defaults to :func:`default_channels`.
        collect_first: Sample the machine and run a due canary before measuring.

    Returns:
        One result per rule; ``exit_code(results)`` is 1 when an alert is open.
    """
    now = time.time() if now is None else now
    if collect_first:
        collect(settings, now)
    return evaluate(settings, measure(settings, now), now, channels)


def exit_code(results: list[RuleResult]) -> int:
    """0 when no alert is open, 1 when one is."""
    return EXIT_ALERT_OPEN if any(result.is_open for result in results) else EXIT_OK


def format_results(results: list[RuleResult]) -> list[str]:
    """The check as a small table: rule, value, threshold, samples, state."""
    lines = [f"{'rule':<16} {'value':>10} {'threshold':>12} {'n':>7}  state"]
    for r in results:
        side = "<" if r.rule in BELOW else ">"
        threshold = f"{side} {_fmt(r.rule, r.threshold)}"
        state = r.state.upper() if r.is_open else r.state
        detail = f"  ({r.detail})" if r.detail else ""
        lines.append(f"{r.rule:<16} {_fmt(r.rule, r.value):>10} {threshold:>12} {r.n:>7}  {state}{detail}")
    return lines


def read_alerts(settings: Settings, since: float | None = None) -> pd.DataFrame:
    """Alerts opened since ``since`` (epoch seconds), oldest first, open and resolved."""
    return read_log(settings.inference_log_url, since=since, table=alerts_table)


def open_alerts(settings: Settings) -> pd.DataFrame:
    """The alerts open now."""
    frame = read_alerts(settings)
    return frame[frame["state"] == OPEN].reset_index(drop=True)


def loop(
    settings: Settings,
    stop: threading.Event | None = None,
    channels: list[Channel] | None = None,
    on_result: Callable[[list[RuleResult]], None] | None = None,
) -> None:
    """Check every ``monitoring.interval_seconds`` until ``stop`` is set (the launcher's background loop).

    A cycle that fails on the database (locked, unreachable) is logged and the next one runs.
    """
    stop = stop or threading.Event()
    channels = default_channels(settings) if channels is None else channels
    while not stop.is_set():
        try:
            results = check(settings, channels=channels)
            if on_result is not None:
                on_result(results)
        except (SQLAlchemyError, OSError) as exc:
            logger.error("monitoring check failed: %s: %s", type(exc).__name__, exc)
        stop.wait(settings.monitoring.interval_seconds)
