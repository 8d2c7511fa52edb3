"""Shared fixtures: real project data, small copies of it, and settings isolated in tmp folders."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops.config import CONFIG_DIR, PROJ_ROOT, Settings, load_settings
from mlops.data import FILES, INTENTS

DATA_DIR = PROJ_ROOT / "data"


def write_settings(root: Path, overrides: dict | None = None, data_dir: Path | None = None) -> Settings:
    """Copy the real config files into ``root/configs`` with nested ``overrides`` merged in.

    Every path points inside ``root``: its own SQLite store, models folder and results folder.
    """
    config_dir = root / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "mlflow_config.yaml": {"mlflow": {"tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
                                          "artifact_location": str(root / "mlruns" / "artifacts")}},
        "training_config.yaml": {"training": {"data_dir": str(data_dir or DATA_DIR),
                                              "results_dir": str(root / "results")}},
        "deployment_config.yaml": {"deployment": {"models_dir": str(root / "models"),
                                                  "services_dir": str(root / "services")}},
        "monitoring_config.yaml": {"monitoring": {"inference_log": str(root / "inference_log.db"),
                                                  "alert_log": str(root / "alerts.log"),
                                                  "drift_reference_dir": str(root / "monitoring")}},
    }  # fmt: skip
    for name in base:
        data = yaml.safe_load((CONFIG_DIR / name).read_text())
        merge(data, base[name])
        merge(data, (overrides or {}).get(name, {}))
        (config_dir / name).write_text(yaml.safe_dump(data))
    return load_settings(config_dir, env={}, root=root)


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a launcher run by a test: its config folder, and no MLflow variables.

    ``mlflow.set_tracking_uri`` in the test process exports ``MLFLOW_TRACKING_URI``, which a child
    would take as the user's override of the configured store.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return {**env, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}


def merge(target: dict, extra: dict) -> None:
    """Merge nested dict ``extra`` into ``target`` in place."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


FAST_TRAINING = {
    "training_config.yaml": {
        "training": {
            "embedding_model": {"vocab_size": 1500, "embedding_dim": 32, "epochs": 1, "triplet_samples": 200},
            "llm_model": {"calibration_folds": 2},
            "few_shot_model": {"seeds": 1, "deploy_k": 4},
            "rag_model": {"dense_weights": [0.0, 0.5]},
        }
    }
}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A small, valid copy of the real data: 30 destinations, 20 Sri Lanka places, 8/3/3 examples per intent."""
    out = tmp_path_factory.mktemp("tiny_data")
    dest = pd.read_csv(DATA_DIR / FILES["destinations"], dtype=str, keep_default_na=False).head(30)
    sri = pd.read_csv(DATA_DIR / FILES["sri_lanka"], dtype=str, keep_default_na=False).head(20)
    intents = pd.read_csv(DATA_DIR / FILES["intents"], dtype=str, keep_default_na=False)
    parts = [
        intents[(intents["intent"] == intent) & (intents["split"] == split)].head(n)
        for intent in INTENTS
        for split, n in (("train", 8), ("val", 3), ("test", 3))
    ]
    retrieval = pd.read_csv(DATA_DIR / FILES["retrieval"], dtype=str, keep_default_na=False)
    known = set(dest["id"]) | set(sri["id"])
    retrieval = retrieval[retrieval["relevant_ids"].map(lambda v: set(v.split(";")) <= known)]
    dest.to_csv(out / FILES["destinations"], index=False)
    sri.to_csv(out / FILES["sri_lanka"], index=False)
    pd.concat(parts).to_csv(out / FILES["intents"], index=False)
    retrieval.to_csv(out / FILES["retrieval"], index=False)
    shutil.copy(DATA_DIR / FILES["courtesy"], out / FILES["courtesy"])
    return out


@pytest.fixture
def copy_data(tmp_path):
    """A writable copy of the real data folder, for tests that break it on purpose."""

    def _copy(source: Path = DATA_DIR) -> Path:
        target = tmp_path / "data"
        target.mkdir(exist_ok=True)
        for name in FILES.values():
            shutil.copy(source / name, target / name)
        return target

    return _copy


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, driven by playwright (no browser download)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
READY = '[data-testid="stApp"][data-test-connection-state="CONNECTED"][data-test-script-state="notRunning"]'
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def launch_chromium(playwright):
    """A headless Debian chromium for a test; close it when done."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            pytest.fail(f"{url} did not come up: {detail}")
        time.sleep(0.3)


def restore_sigint() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT.

    A test run started in the background of a shell without job control (``pytest &`` in a script)
    ignores SIGINT, every child inherits that, and Python then never raises KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
