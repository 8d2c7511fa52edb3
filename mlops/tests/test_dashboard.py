"""The monitoring dashboard: AppTest for the logic (empty, populated, failing), headless Chromium for what renders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mlops.config import ENV_OVERRIDES, PROJ_ROOT
from mlops.deployment import deploy
from mlops.monitoring import alerts, canary, system
from mlops.monitoring.inference_log import InferenceLog
from mlops.training import run_training

from .conftest import READY, cli_env, free_port, launch_chromium, needs_chromium, wait_for_http
from .test_deployment import settings_for

PAGE = str(PROJ_ROOT / "mlops" / "dashboards" / "mlops_monitoring_dashboard.py")
ARTIFACTS = PROJ_ROOT / "mlops" / "tests" / "artifacts"
SECTIONS = ("Alerts", "Deployed models", "Live traffic", "Accuracy", "Drift", "System health", "Experiments")
HTML_QUERY = "<b>How</b> do I fix my <script>alert(1)</script> lawn mower?"
MACHINE = {"cpu_percent": 42.0, "memory_percent": 55.0, "disk_percent": 30.0, "serving_processes": 1,
           "serving_rss_mb": 120.0, "serving_cpu_percent": 7.0, "processes": []}  # fmt: skip


def isolated(root: Path) -> dict:
    """Monitoring's own relative paths, which the page would anchor at the project root, moved under ``root``."""
    folder = {"drift_reference_dir": str(root / "monitoring"), "alert_log": str(root / "alerts.log")}
    return {"monitoring_config.yaml": {"monitoring": folder}}


def page(config_dir: Path, monkeypatch) -> AppTest:
    for key in [key for key in os.environ if key.startswith("MLFLOW_") or key in ENV_OVERRIDES]:
        monkeypatch.delenv(key)  # e.g. MLFLOW_TRACKING_URI, exported by another test's mlflow.set_tracking_uri
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(config_dir))
    return AppTest.from_file(PAGE, default_timeout=60).run()


def texts(elements) -> list[str]:
    return [str(element.value) for element in elements]


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric '{label}' on the page; metrics: {[m.label for m in at.metric]}"
    return values[0]


def response(query: str, intent: str, latency_ms: float) -> dict:
    sources = [] if intent == "out_of_scope" else [{"name": "Kandy", "score": 0.8}]
    return {"query": query, "intent": intent, "confidence": 0.9, "latency_ms": latency_ms, "sources": sources}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("dashboard")
    settings = settings_for(root, tiny_data_dir, isolated(root))
    run_training(settings)
    deploy(settings)
    return settings


@pytest.fixture(scope="module")
def populated(deployed):
    """The deployed bot plus traffic written through the real InferenceLog: 40 queries in the last 10 minutes
    (10 out of scope, one of them HTML), 8 more 30 minutes ago, 4 votes (3 up), a system sample and an open alert."""
    now = time.time()
    log = InferenceLog(deployed.inference_log_url, {"llm_model": "1"}, clock=lambda: now - 600)
    ids = [log.record(response(f"Best time to visit Kandy {i}?", "best_time_to_visit", 5.0 + i)) for i in range(30)]
    for i in range(9):
        log.record(response(f"What is a good chess opening {i}?", "out_of_scope", 4.0))
    log.record(response(HTML_QUERY, "out_of_scope", 4.0))
    log.clock = lambda: now - 1800
    for i in range(8):
        log.record(response(f"Visa for Sri Lanka {i}?", "visa_requirements", 6.0))
    log.flush()
    log.clock = lambda: now - 590
    for request_id, vote in zip(ids, (1, 1, 1, -1), strict=False):
        log.feedback(request_id, vote)
    log.close()
    assert log.written == 48
    system.sample(deployed, now=now - 60, reader=lambda _settings: MACHINE)
    alerts.evaluate(deployed, {"oos_rate": alerts.Measurement(0.5, 40)}, now=now - 300, channels=[])
    return deployed


def test_empty_state_says_what_to_run_and_creates_nothing(tmp_path, tiny_data_dir, monkeypatch):
    settings = settings_for(tmp_path, tiny_data_dir, isolated(tmp_path))
    at = page(settings.root / "configs", monkeypatch)
    assert not at.exception
    assert not at.warning, texts(at.warning)
    assert [h.value for h in at.header][: len(SECTIONS)] == list(SECTIONS)
    infos = "\n".join(texts(at.info))
    assert "Nothing is deployed" in infos and "`make run`" in infos
    assert "python -m mlops.monitoring.simulate --qps 20 --duration 60" in infos
    assert f"No runs in the experiment '{settings.mlflow.experiment_name}'" in infos
    assert "python -m mlops.monitoring check --loop" in infos
    assert not at.get("vega_lite_chart")
    # monitoring reads: an empty state must not create the log, the MLflow store or models/
    assert not Path(settings.inference_log_url.removeprefix("sqlite:///")).exists()
    assert not Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()
    assert not settings.models_dir.exists()


def test_populated_state_shows_the_logged_numbers(populated, monkeypatch):
    at = page(populated.root / "configs", monkeypatch)
    assert not at.exception
    assert not at.warning, texts(at.warning)
    # the default window is one hour: all 48 queries, 10 of them out of scope
    assert metric(at, "Requests") == "48"
    assert metric(at, "Out-of-scope rate") == f"{10 / 48:.1%}"
    assert metric(at, "Unanswered") == "10"
    assert metric(at, "Live accuracy") == "75.0%"
    assert metric(at, "Open alerts") == "1"
    assert metric(at, "CPU") == "42 %"
    assert metric(at, "Serving memory") == "120 MB"
    assert float(metric(at, "Drift score")) >= 0
    frames = [frame.value for frame in at.dataframe]
    deployed_table = next(f for f in frames if "alias" in f.columns)
    assert sorted(deployed_table["model"]) == ["embedding_model", "few_shot_model", "llm_model", "rag_model"]
    assert set(deployed_table["alias"]) == {"champion"} and set(deployed_table["version"]) == {"1"}
    unanswered = next(f for f in frames if "last_seen" in f.columns)
    assert HTML_QUERY in list(unanswered["query"])  # kept verbatim as data, not rendered as markup
    alert_rows = next(f for f in frames if "severity" in f.columns)
    assert list(alert_rows["rule"]) == ["oos_rate"] and list(alert_rows["state"]) == ["open"]
    runs = next(f for f in frames if "run_name" in f.columns)
    assert set(runs["model"]) == {"embedding_model", "few_shot_model", "llm_model", "rag_model"}
    assert len(at.get("vega_lite_chart")) >= 8


def test_window_selector_reads_only_the_window(populated, monkeypatch):
    at = page(populated.root / "configs", monkeypatch)
    at.sidebar.selectbox[0].select("15 minutes").run()
    assert not at.exception
    assert metric(at, "Requests") == "40"  # the 8 queries of 30 minutes ago are outside
    assert metric(at, "Out-of-scope rate") == "25.0%"


def test_canary_button_runs_and_shows_the_evaluation(populated, monkeypatch):
    at = page(populated.root / "configs", monkeypatch)
    if canary.last_run(populated) is None:
        assert any("No canary run yet" in text for text in texts(at.info))
    at.button(key="run-canary").click().run()
    assert not at.exception and not at.warning, texts(at.warning)
    latest = canary.last_run(populated)
    assert latest is not None
    assert metric(at, "Canary accuracy") == f"{latest['accuracy']:.1%}"


def test_a_failing_source_is_a_warning_and_the_rest_still_renders(tmp_path, tiny_data_dir, monkeypatch):
    settings = settings_for(tmp_path, tiny_data_dir, isolated(tmp_path))
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "manifest.json").write_text("{not json")
    at = page(settings.root / "configs", monkeypatch)
    assert not at.exception
    assert any(w.startswith("Deployed models: could not be shown") and "not valid JSON" in w for w in texts(at.warning))
    assert [h.value for h in at.header][: len(SECTIONS)] == list(SECTIONS)
    assert any("No traffic in the last 1 hour" in text for text in texts(at.info))


@needs_chromium
def test_dashboard_in_a_real_browser(populated, tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = tmp_path / "streamlit.log"
    env = cli_env(populated)
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlops.dashboards.serve", "--server.address", "127.0.0.1", "--server.port",
             str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],  # as the launchers do
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", server, timeout=60, log=log)
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(READY, timeout=60_000)
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            charts.nth(7).wait_for(timeout=30_000)
            headers = page.locator('[data-testid="stHeading"]').all_inner_texts()
            for title in SECTIONS:
                assert any(title in header for header in headers), (title, headers)
            assert charts.count() >= 8
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "Out-of-scope rate" in page.inner_text('[data-testid="stMain"]')
            height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": max(1000, height)})
            page.wait_for_timeout(500)  # let Vega re-lay out the charts at the new size
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            browser.close()
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 50_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
