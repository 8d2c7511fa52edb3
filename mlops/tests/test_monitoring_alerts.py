"""Alerting: rules over synthetic windows in a real SQLite log, the webhook against a real local
server, the rule configuration, and the exit codes of ``python -m mlops.monitoring check``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops.config import PROJ_ROOT, ConfigError
from mlops.monitoring import alerts
from mlops.monitoring.alerts import AlertEvent, Measurement, WebhookChannel
from mlops.monitoring.inference_log import (
    alerts_table,
    feedback_table,
    inference_table,
    insert_rows,
    read_log,
    system_table,
)

from .conftest import write_settings

T0 = 1_800_000_000.0
SECRET = "T00000/B00000/SECRET-TOKEN-abc123"


def add_traffic(settings, ts: float, n: int, latency_ms: float, intent: str = "weather") -> None:
    rows = [
        {"request_id": f"{ts}-{i}", "ts": ts, "query": "q", "intent": intent, "confidence": 0.9,
         "latency_ms": latency_ms, "n_sources": 0, "top_source": None, "answered": intent != "out_of_scope",
         "versions": "{}", "pid": 1}
        for i in range(n)
    ]  # fmt: skip
    insert_rows(settings.inference_log_url, inference_table, rows)


class Recorder(list):
    """An alert channel that keeps what it was sent."""

    def __call__(self, event: AlertEvent) -> None:
        self.append(event)

    @property
    def kinds(self) -> list[tuple[str, str]]:
        return [(event.kind, event.rule) for event in self]


@pytest.fixture
def settings(tmp_path):
    return write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {"alert_log": str(tmp_path / "a.log")}}})


def states(results) -> dict[str, str]:
    return {result.rule: result.state for result in results}


def test_latency_rule_fires_once_stays_quiet_in_cooldown_resolves_and_reminds(settings):
    sent = Recorder()

    def check(now: float) -> str:
        return states(alerts.check(settings, now=now, channels=[sent], collect_first=False))["p95_latency"]

    add_traffic(settings, T0 - 60, 30, latency_ms=3000.0)  # p95 3 s > 2 s, 30 >= min_samples 20
    assert check(T0) == "firing"
    assert check(T0 + 60) == "open"  # still slow: no second message
    add_traffic(settings, T0 + 300, 30, latency_ms=100.0)
    assert check(T0 + 400) == "resolved"  # the slow rows left the 5-minute window
    add_traffic(settings, T0 + 500, 30, latency_ms=3000.0)
    assert check(T0 + 510) == "open"  # flapping within the 30-minute cooldown: the same incident, reopened
    add_traffic(settings, T0 + 600, 30, latency_ms=100.0)
    assert check(T0 + 810) == "resolved"  # ...and its end is as silent as its reopening
    add_traffic(settings, T0 + 2000, 30, latency_ms=3000.0)
    assert check(T0 + 2010) == "firing"  # a new incident after the cooldown
    add_traffic(settings, T0 + 3850, 30, latency_ms=3000.0)
    assert check(T0 + 3860) == "open"  # reminder due (1850 s since the last message >= 1800 s)
    assert check(T0 + 3870) == "open"

    assert sent.kinds == [("firing", "p95_latency"), ("resolved", "p95_latency"),
                          ("firing", "p95_latency"), ("reminder", "p95_latency")]  # fmt: skip
    assert sent[0].value == pytest.approx(3.0) and sent[0].threshold == 2.0 and sent[0].n == 30
    rows = read_log(settings.inference_log_url, table=alerts_table)
    assert list(rows["state"]) == ["resolved", "open"] and list(rows["notifications"]) == [1, 2]
    assert not (settings.root / "a.log").exists()  # the channels were injected: the default file is untouched
    assert alerts.exit_code(alerts.check(settings, now=T0 + 3880, channels=[], collect_first=False)) == 1


def test_too_few_samples_is_no_data_and_changes_nothing(settings):
    add_traffic(settings, T0 - 10, 19, latency_ms=5000.0)  # one short of min_samples
    sent = Recorder()
    results = alerts.check(settings, now=T0, channels=[sent], collect_first=False)
    assert states(results)["p95_latency"] == "no data" and sent == []
    assert alerts.exit_code(results) == 0 and alerts.open_alerts(settings).empty


def test_accuracy_cpu_memory_oos_and_canary_rules_on_their_own_windows(settings):
    url = settings.inference_log_url
    insert_rows(url, feedback_table, [{"request_id": str(i), "ts": T0 - 100, "value": 1 if i < 6 else -1}
                                      for i in range(10)])  # fmt: skip
    insert_rows(url, system_table, [
        {"ts": T0 - 30, "host": "h", "cpu_percent": cpu, "memory_percent": 95.0, "disk_percent": 50.0,
         "serving_processes": 1, "serving_rss_mb": 100.0, "serving_cpu_percent": 5.0, "processes": "[]"}
        for cpu in (70.0, 95.0)
    ])  # fmt: skip
    insert_rows(
        url,
        system_table,
        [
            {
                "ts": T0 - 3600,
                "host": "h",
                "cpu_percent": 1.0,
                "memory_percent": 1.0,
                "disk_percent": 1.0,
                "serving_processes": 0,
                "serving_rss_mb": 0.0,
                "serving_cpu_percent": 0.0,
                "processes": "[]",
            }
        ],
    )  # out of the window
    add_traffic(settings, T0 - 60, 15, 10.0, "out_of_scope")
    add_traffic(settings, T0 - 60, 15, 10.0, "weather")
    from mlops.monitoring.inference_log import canary_table

    run = {"oos_recall": 0.9, "hit_at_3": 0.9, "n": 10, "n_retrieval": 5, "p95_latency_ms": 1.0, "versions": "{}"}
    insert_rows(url, canary_table, [{**run, "ts": T0 - 7000, "accuracy": 0.5, "deployed_at": "x"},
                                    {**run, "ts": T0 - 60, "accuracy": 0.95, "deployed_at": "x"}])  # fmt: skip
    found = alerts.measure(settings, now=T0)
    assert found["live_accuracy"] == Measurement(0.6, 10)
    assert found["cpu_percent"] == Measurement(82.5, 2) and found["memory_percent"].value == 95.0
    assert found["oos_rate"] == Measurement(0.5, 30)
    assert found["canary_accuracy"] == Measurement(0.95, 2)  # the latest run counts
    sent = Recorder()
    result = states(alerts.evaluate(settings, found, now=T0, channels=[sent]))
    assert result == {"live_accuracy": "firing", "canary_accuracy": "ok", "p95_latency": "ok",
                      "cpu_percent": "firing", "memory_percent": "firing", "oos_rate": "firing",
                      "drift_score": "no data"}  # fmt: skip
    assert {event.severity for event in sent if event.rule == "live_accuracy"} == {"critical"}


def test_disabling_a_rule_closes_its_open_alert_silently(tmp_path):
    def settings_with(enabled: bool):
        rules = {"oos_rate": {"enabled": enabled}}
        return write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {"rules": rules}}})

    on = settings_with(True)
    sent = Recorder()
    assert states(alerts.evaluate(on, {"oos_rate": Measurement(0.9, 100)}, T0, [sent]))["oos_rate"] == "firing"
    off = settings_with(False)
    assert states(alerts.evaluate(off, {"oos_rate": Measurement(0.9, 100)}, T0 + 1, [sent]))["oos_rate"] == "disabled"
    assert alerts.open_alerts(off).empty and len(sent) == 1


def test_concurrent_checks_open_one_alert_and_send_one_message(settings):
    sent = Recorder()
    barrier = threading.Barrier(6)

    def check():
        barrier.wait()
        alerts.evaluate(settings, {"oos_rate": Measurement(0.9, 100)}, T0, [sent])

    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent.kinds == [("firing", "oos_rate")]
    assert len(read_log(settings.inference_log_url, table=alerts_table)) == 1


# ----------------------------------------------------------------------------- the webhook
class Hook:
    """A real HTTP server on 127.0.0.1 answering with the queued status codes (then 200)."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    servers = []

    def start(statuses=None) -> Hook:
        servers.append(Hook(statuses))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


EVENT = AlertEvent("firing", "p95_latency", "warning", 3.2, 2.0, 5, T0, n=40)


def test_webhook_posts_slack_json(hook):
    server = hook()
    assert WebhookChannel(server.url)(EVENT) is True
    (body,) = server.bodies
    assert body["type"] == "application/json" and body["path"] == f"/services/{SECRET}"
    assert body["json"] == {"text": EVENT.text()}
    assert "p95_latency = 3.2 s, above 2 s over the last 5 min (n=40)" in body["json"]["text"]


def test_webhook_retries_a_failing_server_with_backoff_and_never_logs_the_url(hook, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    server = hook([500, 503, 500])
    waits: list[float] = []
    channel = WebhookChannel(server.url, timeout=2.0, retries=3, backoff=0.5, sleep=waits.append)
    assert channel(EVENT) is True  # the fourth attempt gets through
    assert len(server.bodies) == 4 and waits == [0.5, 1.0, 2.0]

    server = hook([500] * 10)
    channel = WebhookChannel(server.url, retries=2, backoff=0.0, sleep=waits.append)
    assert channel(EVENT) is False and len(server.bodies) == 3
    refused = hook([404])
    assert WebhookChannel(refused.url, retries=3, sleep=waits.append)(EVENT) is False
    assert len(refused.bodies) == 1  # a client error is not retried

    dead = Hook()
    dead_url = dead.url
    dead.stop()  # connection refused
    assert WebhookChannel(dead_url, retries=1, backoff=0.0)(EVENT) is False
    out = capsys.readouterr()
    assert "webhook" in caplog.text and "HTTP 500" in caplog.text and "ConnectionRefusedError" in caplog.text
    for text in (caplog.text, out.out, out.err, repr(channel)):
        assert "SECRET-TOKEN" not in text and "127.0.0.1:" not in text


def test_webhook_refuses_non_http_urls_without_echoing_them():
    with pytest.raises(ValueError, match="must start with http") as err:
        WebhookChannel(f"file:///etc/{SECRET}")
    assert "SECRET" not in str(err.value)


def test_default_channels_read_the_url_from_the_configured_variable(settings, hook, caplog):
    caplog.set_level(logging.DEBUG)
    server = hook()
    assert len(alerts.default_channels(settings, env={})) == 1  # the log file only
    channels = alerts.default_channels(settings, env={"MLOPS_ALERT_WEBHOOK_URL": server.url})
    alerts.evaluate(settings, {"oos_rate": Measurement(0.9, 100)}, T0, channels)
    assert [body["json"]["text"].split()[0] for body in server.bodies] == ["[FIRING]"]
    log_line = (settings.root / "a.log").read_text()
    assert "[FIRING] warning oos_rate = 0.9, above 0.3 over the last 30 min (n=100)" in log_line
    assert "SECRET" not in log_line and "SECRET" not in caplog.text


# ----------------------------------------------------------------------------- configuration
def test_rules_override_key_by_key_and_thresholds_default_to_the_legacy_keys(tmp_path):
    rules = {"p95_latency": {"window_minutes": 10}, "live_accuracy": {"threshold": 0.6}}
    monitoring = {"rules": rules, "max_response_time_s": 1.5}
    settings = write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": monitoring}})
    merged = settings.monitoring.alert_rules
    assert merged["p95_latency"].window_minutes == 10 and merged["p95_latency"].min_samples == 20  # defaults kept
    assert merged["p95_latency"].threshold == 1.5  # from max_response_time_s
    assert merged["live_accuracy"].threshold == 0.6 and merged["canary_accuracy"].threshold == 0.8
    assert merged["drift_score"].cooldown_minutes == 120


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"p95_latency": {"windw_minutes": 5}}, r"key 'monitoring.rules.p95_latency.windw_minutes'.*window_minutes"),
        ({"latency": {"threshold": 1}}, r"unknown key 'monitoring.rules.latency'.*p95_latency"),
        ({"oos_rate": {"threshold": 1.5}}, r"rule 'oos_rate': threshold must be between 0 and 1"),
        ({"cpu_percent": {"threshold": 150}}, r"rule 'cpu_percent': threshold must be between 0 and 100"),
        ({"drift_score": {"threshold": None}}, r"rule 'drift_score': threshold is required"),
        ({"oos_rate": {"severity": "urgent"}}, r"'monitoring.rules.oos_rate.severity'"),
        ({"oos_rate": {"cooldown_minutes": -1}}, r"'monitoring.rules.oos_rate.cooldown_minutes'"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_with_the_key(tmp_path, rules, expected):
    with pytest.raises(ConfigError, match=expected):
        write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {"rules": rules}}})


# ----------------------------------------------------------------------------- the CLI
def run_check(settings, *args, env_extra=None):
    env = {**os.environ, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}
    env.pop("MLOPS_ALERT_WEBHOOK_URL", None)  # a webhook of the machine running the tests is never called
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mlops.monitoring", *args, "check"], env=env, cwd=PROJ_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_check_cli_exit_codes_and_table(tmp_path, hook):
    no_machine_rules = {"cpu_percent": {"enabled": False}, "memory_percent": {"enabled": False}}  # CPU varies here
    settings = write_settings(tmp_path, {"monitoring_config.yaml": {"monitoring": {
        "rules": no_machine_rules, "webhook_retries": 1, "webhook_backoff_s": 0.0}}})  # fmt: skip
    quiet = run_check(settings)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[0].split() == ["rule", "value", "threshold", "n", "state"]
    assert "cpu_percent" in quiet.stdout and "disabled" in quiet.stdout
    assert len(read_log(settings.inference_log_url, table=system_table)) == 1  # check collected a sample

    add_traffic(settings, time.time() - 5, 25, latency_ms=4000.0)
    failing = hook([500, 500])
    loud = run_check(settings, "--log-level", "DEBUG", env_extra={"MLOPS_ALERT_WEBHOOK_URL": failing.url})
    assert loud.returncode == 1, loud.stderr
    line = next(line for line in loud.stdout.splitlines() if line.startswith("p95_latency"))
    assert line.split()[1:3] == ["4", "s"] and line.endswith("FIRING")
    assert len(failing.bodies) == 2  # one attempt and one retry, then gave up
    assert "webhook: gave up" in loud.stderr
    assert "SECRET" not in loud.stdout + loud.stderr and failing.url not in loud.stdout + loud.stderr
    assert run_check(settings).returncode == 1  # still open

    config = settings.root / "configs" / "monitoring_config.yaml"
    config.write_text(config.read_text().replace("interval_seconds: 30", "interval_seconds: often"))
    bad = run_check(settings)
    assert bad.returncode == 2 and "'monitoring.interval_seconds'" in bad.stderr


def test_loop_checks_until_stopped(settings):
    stop = threading.Event()
    seen: list[list] = []

    def on_result(results):
        seen.append(results)
        stop.set()

    worker = threading.Thread(target=alerts.loop, args=(settings, stop, []), kwargs={"on_result": on_result})
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(seen) == 1
    assert [r.rule for r in seen[0]] == list(settings.monitoring.alert_rules)


def test_check_loop_cli_stops_cleanly_on_sigterm(settings):
    import signal

    env = {**os.environ, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}
    env.pop("MLOPS_ALERT_WEBHOOK_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "mlops.monitoring", "check", "--loop"], env=env, cwd=PROJ_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = process.stdout.readline()  # the "== <time>" header of the first cycle
        assert first.startswith("== "), process.stderr.read() if process.poll() is not None else first
        assert process.stdout.readline().split() == ["rule", "value", "threshold", "n", "state"]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "stopped" in err


def test_check_cli_exits_4_when_the_database_cannot_be_opened(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    broken = {"monitoring_config.yaml": {"monitoring": {"inference_log": str(tmp_path / "a-file" / "log.db")}}}
    result = run_check(write_settings(tmp_path, broken), "--log-level", "ERROR")
    assert result.returncode == 4 and "check failed" in result.stderr, result.stderr


def test_the_monitor_cycle_applies_the_log_retention(tmp_path):
    settings = write_settings(
        tmp_path, {"monitoring_config.yaml": {"monitoring": {"retention_days": 30, "max_rows": None}}}
    )
    add_traffic(settings, T0 - 31 * 86_400, 5, 1.0)  # past retention
    add_traffic(settings, T0 - 29 * 86_400, 3, 1.0)  # kept
    alerts.collect(settings, now=T0)
    assert sorted(read_log(settings.inference_log_url)["ts"].unique()) == [T0 - 29 * 86_400]
