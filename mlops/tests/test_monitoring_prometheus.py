"""Prometheus exposition: the numbers come from the shared log, so rows from two processes all count."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.config import PROJ_ROOT
from mlops.monitoring.alerts import Measurement, evaluate
from mlops.monitoring.inference_log import InferenceLog
from mlops.monitoring.prometheus import render, serve

from .conftest import free_port, write_settings

T0 = 1_800_000_000.0
WRITER = """
import sys
from mlops.monitoring.inference_log import InferenceLog
path, n, latency, intents = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
log = InferenceLog(path, {"llm_model": "7"}, clock=lambda: %r)
for i in range(n):
    log.record({"query": f"q{i}", "intent": intents[i %% len(intents)], "confidence": 0.9,
                "latency_ms": latency, "sources": []})
log.close()
assert log.written == n and log.failed == 0
""" % (T0 - 30)  # fmt: skip


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels) -> value`` of an exposition, parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode("utf-8"))
        for sample in family.samples
    }


def test_counts_from_two_processes_histogram_feedback_alerts(tmp_path):
    settings = write_settings(tmp_path)
    path = str(tmp_path / "inference_log.db")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, "300", "5", "weather,out_of_scope"], cwd=PROJ_ROOT),
        subprocess.Popen([sys.executable, "-c", WRITER, path, "200", "300", "weather,greeting"], cwd=PROJ_ROOT),
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    log = InferenceLog(path, clock=lambda: T0 - 10)
    for value in (1, 1, 1, -1):
        log.feedback("some-request", value)
    log.close()
    evaluate(settings, {"oos_rate": Measurement(0.9, 100)}, now=T0, channels=[])

    found = samples(render(settings, clock=lambda: T0))
    assert found[("chatbot_requests_total", (("intent", "weather"),))] == 150 + 100
    assert found[("chatbot_requests_total", (("intent", "out_of_scope"),))] == 150
    assert found[("chatbot_requests_total", (("intent", "greeting"),))] == 100
    assert found[("chatbot_request_latency_seconds_count", ())] == 500
    assert found[("chatbot_request_latency_seconds_bucket", (("le", "0.005"),))] == 300  # the 5 ms rows
    assert found[("chatbot_request_latency_seconds_bucket", (("le", "0.25"),))] == 300
    assert found[("chatbot_request_latency_seconds_bucket", (("le", "0.5"),))] == 500
    assert found[("chatbot_request_latency_seconds_sum", ())] == pytest.approx(300 * 0.005 + 200 * 0.3)
    assert found[("chatbot_oos_rate", ())] == pytest.approx(150 / 500)
    assert found[("chatbot_feedback_total", (("value", "up"),))] == 3
    assert found[("chatbot_live_accuracy", ())] == pytest.approx(0.75)
    assert found[("chatbot_alerts_open", (("severity", "warning"),))] == 1
    assert found[("chatbot_alerts_open", (("severity", "critical"),))] == 0
    assert not any(name == "chatbot_model_info" for name, _ in found)  # nothing deployed: no version info

    later = samples(render(settings, clock=lambda: T0 + 24 * 3600))  # the windowed gauges go quiet, counters stay
    assert ("chatbot_oos_rate", ()) not in later and ("chatbot_live_accuracy", ()) not in later
    assert later[("chatbot_request_latency_seconds_count", ())] == 500


def test_empty_log_renders_zero_counters_and_serve_answers_on_localhost(tmp_path):
    settings = write_settings(tmp_path)
    found = samples(render(settings))
    assert found[("chatbot_request_latency_seconds_count", ())] == 0
    assert found[("chatbot_feedback_total", (("value", "down"),))] == 0

    port = free_port()
    server, thread = serve(settings, port=port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body = reply.read()
        assert server.server_address[0] == "127.0.0.1"
        assert samples(body)[("chatbot_request_latency_seconds_count", ())] == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
