"""Monitoring against a real (tiny) deployment: canary, reference profile, simulator, end-to-end check."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlops.chatbot import TravelChatbot
from mlops.config import PROJ_ROOT
from mlops.data import load_datasets
from mlops.deployment import deploy
from mlops.monitoring import alerts, canary, drift, simulate, stats
from mlops.monitoring.inference_log import feedback_table, read_log
from mlops.monitoring.prometheus import render
from mlops.training import run_training

from .conftest import restore_sigint
from .test_deployment import settings_for
from .test_monitoring_prometheus import samples

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("monitoring")
    settings = settings_for(root, tiny_data_dir)
    run_training(settings)
    deploy(settings)
    return settings


def cli_env(settings) -> dict:
    return {**os.environ, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}


def models_snapshot(settings) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(settings.models_dir.rglob("*"))}


def test_canary_scores_the_golden_queries_and_schedules_itself(deployed):
    bot = TravelChatbot.load(deployed.models_dir)
    data = load_datasets(deployed.data_dir)
    golden = data.intent_split("test")
    assert canary.due(deployed, now=T0)  # never ran on this deployment
    row = canary.run_canary(deployed, now=T0)
    predicted = np.array([label for label, _ in bot.intent_model.predict_with_confidence(list(golden["text"]))])
    assert row["accuracy"] == pytest.approx(float((predicted == golden["intent"].to_numpy()).mean()))
    assert row["n"] == len(golden) and row["n_retrieval"] == len(data.retrieval_split("test")) > 0
    assert 0.0 <= row["oos_recall"] <= 1.0 and 0.0 <= row["hit_at_3"] <= 1.0
    assert row["versions"] == bot.versions
    stored = canary.read_canary(deployed)
    assert list(stored["ts"]) == [T0] and stored["accuracy"].iloc[0] == row["accuracy"]
    assert canary.last_run(deployed)["versions"] == bot.versions
    assert not canary.due(deployed, now=T0 + 60)
    assert canary.due(deployed, now=T0 + deployed.monitoring.canary_interval_minutes * 60)
    assert read_log(deployed.inference_log_url).empty  # canary queries are not traffic


def test_reference_profile_is_cached_under_mlruns_keyed_by_the_deployment(deployed, tmp_path):
    before = models_snapshot(deployed)
    reference = drift.reference_profile(deployed)
    deployed_at = json.loads((deployed.models_dir / "manifest.json").read_text())["deployed_at"]
    path = drift.reference_path(deployed, deployed_at)
    assert path.is_file() and not path.is_relative_to(deployed.models_dir)
    assert reference["deployed_at"] == deployed_at and reference["n"] == len(
        load_datasets(deployed.data_dir).intents.query("split != 'train'")
    )
    assert sum(reference["intent_dist"].values()) == pytest.approx(1.0) and len(reference["mean_embedding"]) > 0
    assert "colombo" in reference["tokens"]  # knowledge-base names are vocabulary
    stamp = path.stat().st_mtime_ns
    assert drift.reference_profile(deployed) == reference and path.stat().st_mtime_ns == stamp  # from the cache
    assert models_snapshot(deployed) == before  # monitoring never writes models/

    inside = deployed.model_copy(
        update={"monitoring": deployed.monitoring.model_copy(update={"drift_reference_dir": str(deployed.models_dir)})}
    )
    with pytest.raises(ValueError, match="only deployment writes there"):
        drift.reference_profile(inside)


def test_simulated_traffic_is_logged_with_feedback_and_drift_shows(deployed, tmp_path):
    settings = deployed.model_copy(
        update={"monitoring": deployed.monitoring.model_copy(update={"inference_log": str(tmp_path / "sim.db")})}
    )
    normal = simulate.run(settings, qps=5000, duration=0.06, drift=False, feedback_rate=0.5, seed=1)
    assert normal.sent == 300 and not normal.interrupted
    rows = read_log(settings.inference_log_url)
    votes = read_log(settings.inference_log_url, table=feedback_table)
    assert len(rows) == 300 and len(votes) == normal.feedback and 100 < normal.feedback < 200
    assert set(votes["request_id"]) <= set(rows["request_id"])
    assert json.loads(rows["versions"].iloc[0]) == TravelChatbot.load(settings.models_dir).versions
    assert stats.live_accuracy(votes) > 0.6  # the deployed bot is mostly right, so thumbs are mostly up

    shifted = simulate.run(settings, qps=5000, duration=0.06, drift=True, feedback_rate=0.5, seed=2)
    after = read_log(settings.inference_log_url)
    normal_rows, drifted_rows = after.iloc[:300], after.iloc[300:]
    assert stats.oos_rate(drifted_rows) > stats.oos_rate(normal_rows) + 0.1  # the tiny model misses many
    reference = drift.reference_profile(settings)
    calm, loud = drift.drift_report(reference, normal_rows), drift.drift_report(reference, drifted_rows)
    assert loud.drifted
    # the signals --drift moves (the tiny model's confidence on its own training texts drifts either way)
    calm_rows, loud_rows = ({row["signal"]: row for row in report.rows} for report in (calm, loud))
    assert loud_rows["intent_psi"]["score"] > 2 * calm_rows["intent_psi"]["score"]
    assert loud_rows["oos_rate"]["score"] > 2 * calm_rows["oos_rate"]["score"]
    assert loud_rows["oov_rate"]["live"] > calm_rows["oov_rate"]["live"] + 0.1
    assert shifted.sent == 300


def test_simulate_cli_progress_ctrl_c_and_nothing_deployed(deployed, tmp_path, tiny_data_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops.monitoring.simulate", "--qps", "20", "--duration", "60"],
        env=cli_env(deployed), cwd=PROJ_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=restore_sigint,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(read_log(deployed.inference_log_url)) < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "interrupted" in err, err
    assert re.search(r"sent \d+ \([\d.]+ q/s\)", err)  # the progress line
    written = int(re.search(r"wrote (\d+) queries", out).group(1))
    assert written >= 10 and len(read_log(deployed.inference_log_url)) == written  # flushed before exit

    empty = settings_for(tmp_path / "empty", tiny_data_dir)
    command = [sys.executable, "-m", "mlops.monitoring.simulate", "--duration", "1"]
    nothing = subprocess.run(command, env=cli_env(empty), cwd=PROJ_ROOT, capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "nothing is deployed" in nothing.stderr


def test_check_collects_canary_and_drift_and_prometheus_names_the_versions(deployed, tmp_path):
    settings = deployed.model_copy(
        update={"monitoring": deployed.monitoring.model_copy(update={"inference_log": str(tmp_path / "check.db")})}
    )
    simulate.run(settings, qps=5000, duration=0.06, drift=True, feedback_rate=0.0, seed=3)
    sent: list = []
    now = time.time()
    results = {r.rule: r for r in alerts.check(settings, now=now, channels=[sent.append])}
    assert results["canary_accuracy"].n == 1 and results["canary_accuracy"].state in ("ok", "firing")
    assert results["canary_accuracy"].value == canary.last_run(settings)["accuracy"]
    assert results["drift_score"].n == 300 and results["drift_score"].state == "firing"
    assert "intent_psi" in results["drift_score"].detail
    assert "drift_score" in {event.rule for event in sent}
    assert not canary.due(settings, now=now + 1)  # the check ran it
    reference = drift.reference_profile(settings)
    with_encoder = drift.drift_report(reference, read_log(settings.inference_log_url), drift.deployed_encoder(settings))
    assert "embedding_shift" in {row["signal"] for row in with_encoder.rows}  # the alert rule sees it too
    assert results["drift_score"].value == pytest.approx(with_encoder.score)
    env = {**cli_env(settings), "MLOPS_INFERENCE_LOG": settings.inference_log_url}
    cli = subprocess.run([sys.executable, "-m", "mlops.monitoring", "drift"], env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "embedding_shift" in cli.stdout and "300 live queries" in cli.stdout, cli.stderr

    found = samples(render(settings, clock=lambda: now))
    bot = TravelChatbot.load(settings.models_dir)
    info = {labels: value for (name, labels), value in found.items() if name == "chatbot_model_info"}
    assert {dict(labels)["model"]: dict(labels)["version"] for labels in info} == bot.versions
    assert found[("chatbot_canary_accuracy", ())] == results["canary_accuracy"].value


def test_monitoring_imports_no_training_code(deployed, tmp_path):
    code = (
        "import sys\n"
        "from mlops.config import load_settings\n"
        "from mlops.monitoring import alerts, canary, drift, prometheus, simulate, stats, system\n"
        "import mlops.monitoring.__main__\n"
        "settings = load_settings()\n"
        "canary.run_canary(settings); drift.reference_profile(settings); prometheus.render(settings)\n"
        "heavy = ('torch', 'sentence_transformers', 'mlops.training', 'transformers', 'sklearn', 'mlflow')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJ_ROOT, env=cli_env(deployed), timeout=120)
