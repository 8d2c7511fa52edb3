"""Shared set-up of the reliability suite: one real deployment (fast training on the tiny data) and helpers."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.config import PROJ_ROOT, Settings, load_settings
from mlops.deployment import deploy
from mlops.training import run_training

from ..conftest import cli_env
from ..test_deployment import settings_for

TRAIN_SCRIPT = str(PROJ_ROOT / "mlops" / "scripts" / "train_chatbot_models.py")
DEPLOY_SCRIPT = str(PROJ_ROOT / "mlops" / "scripts" / "deploy_chatbot_models.py")
SIMPLE = str(PROJ_ROOT / "simple_mlops.py")
# the make-test version kills twice per phase (plus one deterministic kill); RELIABILITY_KILLS=50 runs the long version
KILLS = int(os.environ.get("RELIABILITY_KILLS", "2"))
SEED = int(os.environ.get("RELIABILITY_SEED", "20261201"))


@pytest.fixture(scope="session")
def live(tmp_path_factory, tiny_data_dir) -> Settings:
    """A real deployment (v1 of the four models) with its own MLflow store, shared read-only by the suite."""
    root = tmp_path_factory.mktemp("reliability")
    settings = settings_for(root, tiny_data_dir)
    run_training(settings)
    deploy(settings)
    return settings


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


def manifest_bytes(settings: Settings) -> bytes:
    return (settings.models_dir / "manifest.json").read_bytes()


def run_cli(script: str, settings: Settings, *args: str, config_dir: Path | None = None, env: dict | None = None):
    """Run a launcher or script the way a user does; its config folder is the settings' own (or ``config_dir``)."""
    full_env = {**cli_env(settings), **(env or {})}
    if config_dir is not None:
        full_env["MLOPS_CONFIG_DIR"] = str(config_dir)
    return subprocess.run(
        [sys.executable, script, *args], env=full_env, cwd=PROJ_ROOT, capture_output=True, text=True, timeout=300
    )


def config_copy(settings: Settings, target: Path, edits: dict[str, dict] | None = None) -> Path:
    """A copy of the settings' config folder in ``target`` with nested ``edits`` per file (same store, same models)."""
    from ..conftest import merge

    shutil.copytree(settings.root / "configs", target)
    for name, extra in (edits or {}).items():
        data = yaml.safe_load((target / name).read_text())
        merge(data, extra)
        (target / name).write_text(yaml.safe_dump(data))
    return target


def store_snapshot(settings: Settings) -> dict:
    """What a refused command must leave alone: the manifest bytes, the history and the MLflow runs and versions."""
    db = settings.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        runs = connection.execute("select count(*) from runs").fetchone()[0]
        versions = connection.execute("select count(*) from model_versions").fetchone()[0]
    history = settings.models_dir / "history.jsonl"
    return {
        "manifest": manifest_bytes(settings),
        "history": history.read_bytes() if history.exists() else b"",
        "runs": runs,
        "versions": versions,
        "results": sorted(p.name for p in settings.results_dir.glob("*.json")),
    }


def sqlite_ok(path: str | Path) -> bool:
    with sqlite3.connect(str(path)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def reload_settings(settings: Settings) -> Settings:
    return load_settings(settings.root / "configs", env={}, root=settings.root)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
