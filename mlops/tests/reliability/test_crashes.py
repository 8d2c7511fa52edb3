"""SIGKILL at seeded random points of training, deployment and rollback: the previous deployment always
loads and answers, the MLflow store stays readable, and a re-run completes with the registry in step.

``make test`` kills a handful of times (RELIABILITY_KILLS, default 2 per phase); the long version is
``RELIABILITY_KILLS=50 .venv/bin/python -m pytest mlops/tests/reliability/test_crashes.py``.
See also mlops/tests/test_deployment.py::test_killing_a_deployment_at_any_moment_leaves_a_whole_deployment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from mlops.chatbot import TravelChatbot
from mlops.chatbot.bot import read_manifest
from mlops.config import PROJ_ROOT
from mlops.deployment import deploy, read_history, rollback
from mlops.tracking import configure_tracking
from mlops.training import run_training

from ..conftest import cli_env
from ..test_deployment import settings_for
from .conftest import DEPLOY_SCRIPT, KILLS, TRAIN_SCRIPT, manifest_bytes, sqlite_ok


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_data_dir):
    """Its own store: trained once, deployed twice (so there is a previous deployment to roll back to)."""
    settings = settings_for(tmp_path_factory.mktemp("crash"), tiny_data_dir)
    run_training(settings)
    deploy(settings)
    deploy(settings, force=True)
    return settings


def _start(settings, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=cli_env(settings), cwd=PROJ_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _wait_for_lock(settings, process: subprocess.Popen, timeout: float = 60) -> bool:
    """Until the child holds the deployment lock (its PID is in models/.lock): the critical section began."""
    lock = settings.models_dir / ".lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if lock.exists() and lock.read_text().strip() == str(process.pid):
            return True
        time.sleep(0.005)
    return False


def _assert_whole_and_serving(settings) -> None:
    bot = TravelChatbot.load(settings.models_dir)  # verifies every file of whatever manifest is live
    answer = bot.process_query("Where can I see leopards in Sri Lanka?")
    assert answer["answer"] and answer["intent"]
    assert sqlite_ok(settings.tracking_uri.removeprefix("sqlite:///"))
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment_name)
    client.search_runs([experiment.experiment_id], max_results=1000)
    client.search_registered_models()


def _assert_registry_matches_manifest(settings) -> None:
    manifest = read_manifest(settings.models_dir)
    configure_tracking(settings)
    client = mlflow.MlflowClient()
    for key, entry in manifest["models"].items():
        assert str(client.get_model_version_by_alias(key, "champion").version) == str(entry["version"]), key
    assert manifest.get("travel_chatbot_version"), "the promotion was never finished"
    champion = client.get_model_version_by_alias("travel_chatbot", "champion")
    assert str(champion.version) == str(manifest["travel_chatbot_version"])
    releases = settings.models_dir / "releases"
    assert not list(releases.glob(".staging-*"))
    assert {manifest["release"], (manifest.get("previous") or {}).get("release")} >= {
        p.name for p in releases.iterdir()
    }


def test_sigkill_during_training_leaves_the_deployment_and_the_store_usable(site, rng):
    before = manifest_bytes(site)
    for _ in range(KILLS):
        victim = _start(site, TRAIN_SCRIPT)
        time.sleep(rng.uniform(2.0, 14.0))  # imports, data, each model's training and MLflow logging
        _kill(victim)
        assert manifest_bytes(site) == before  # training never writes models/
        _assert_whole_and_serving(site)
    finished = subprocess.run([sys.executable, TRAIN_SCRIPT, "--models", "llm_model"], env=cli_env(site),
                              cwd=PROJ_ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    # the runs the killed processes left open were closed as KILLED by the next training
    client = mlflow.MlflowClient(site.tracking_uri)
    experiment = client.get_experiment_by_name(site.mlflow.experiment_name)
    statuses = {run.info.status for run in client.search_runs([experiment.experiment_id], max_results=1000)}
    assert statuses <= {"FINISHED", "KILLED"}, statuses


def test_sigkill_during_deployment_always_leaves_a_whole_deployment(site, rng):
    for attempt in range(KILLS + 1):
        before = read_manifest(site.models_dir)
        victim = _start(site, DEPLOY_SCRIPT, "--force")
        assert _wait_for_lock(site, victim), "the deployment never took the lock"
        if attempt == 0:  # deterministic: the instant the new manifest is live, before the registry follows it
            deadline = time.monotonic() + 60
            while read_manifest(site.models_dir)["release"] == before["release"] and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 3.0))  # inside the lock: scoring, writing, swapping, registering
        _kill(victim)
        _assert_whole_and_serving(site)
    report = deploy(site)  # what the next `make run` / simple_mlops.py does
    assert report.outcome in ("deployed", "unchanged")
    _assert_registry_matches_manifest(site)
    _assert_whole_and_serving(site)


def test_sigkill_during_rollback_always_leaves_a_whole_deployment(site, rng):
    for _ in range(KILLS):
        victim = _start(site, DEPLOY_SCRIPT, "--rollback")
        assert _wait_for_lock(site, victim), "the rollback never took the lock"
        time.sleep(rng.uniform(0.0, 0.6))  # a rollback holds the lock for well under a second
        _kill(victim)
        _assert_whole_and_serving(site)
    live = read_manifest(site.models_dir)["release"]
    back = rollback(site)
    assert back.outcome == "rolled_back" and back.manifest["release"] != live
    assert read_history(site.models_dir)[-1]["outcome"] == "rolled_back"
    deploy(site)  # re-syncs the registry with whatever is live
    _assert_registry_matches_manifest(site)
