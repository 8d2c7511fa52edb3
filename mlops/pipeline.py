"""The steps the launchers chain: dependency and store checks, data validation, training, deployment.

Each step is a plain function that raises a clear error; ``run_pipeline`` runs them in order with a
progress callback and stops at the first failure, leaving whatever is deployed untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlops.config import PROJ_ROOT, Settings
from mlops.data import Datasets, load_datasets

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = PROJ_ROOT / "requirements.txt"


class DependencyError(RuntimeError):
    """A required package is missing or at an incompatible version."""


def pinned_requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """``{distribution: pinned version}`` from requirements.txt (comments and blanks skipped)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def check_dependencies(pins: dict[str, str] | None = None) -> dict[str, str]:
    """Check each pinned package is installed at its pinned version (local build tags ignored).

    Returns:
        ``{distribution: installed version}``.

    Raises:
        DependencyError: Naming every missing or mismatched package and the command that fixes it.
    """
    pins = pinned_requirements() if pins is None else pins
    installed, problems = {}, []
    for name, wanted in pins.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed (want {wanted})")
            continue
        installed[name] = have
        if have.split("+")[0] != wanted.split("+")[0]:
            problems.append(f"{name} {have} is installed, {wanted} is pinned")
    if problems:
        raise DependencyError(
            "; ".join(problems) + ". Fix with: .venv/bin/pip install -r requirements.txt (or `make setup`)"
        )
    return installed


def check_tracking_store(settings: Settings) -> str:
    """Make sure the configured MLflow store is reachable and writable (migrating a legacy one).

    Returns:
        The tracking URI in use.
    """
    import mlflow

    from mlops.tracking import configure_tracking

    store = configure_tracking(settings)
    client = mlflow.MlflowClient()
    client.set_experiment_tag(store.experiment_id, "last_store_check", "ok")  # proves we can write
    return store.tracking_uri


@dataclass
class PipelineResult:
    steps: dict[str, str] = field(default_factory=dict)
    training: dict | None = None
    data: Datasets | None = None
    deployment: object | None = None


def run_pipeline(
    settings: Settings, progress: Callable[[str], None], train_models: list[str] | None = None
) -> PipelineResult:
    """Dependency check → tracking store check → data validation → training and evaluation → deployment.

    Raises:
        DependencyError, RuntimeError, DataValidationError: The step that failed, with its reason.
        DeploymentRefused: The new models failed a gate; the last good deployment keeps serving.
    """
    from mlops.deployment import deploy
    from mlops.training import run_training

    result = PipelineResult()
    progress("Checking dependencies")
    result.steps["dependencies"] = f"{len(check_dependencies())} pinned packages OK"
    progress("Checking the MLflow tracking store")
    result.steps["tracking_store"] = check_tracking_store(settings)
    progress("Validating data")
    result.data = load_datasets(settings.data_dir)
    result.steps["data"] = f"fingerprint {result.data.fingerprint[:12]}"
    result.training = run_training(settings, train_models, progress=progress)
    result.steps["training"] = result.training["results_file"]
    result.deployment = deploy(settings, progress=progress, data=result.data)
    result.steps["deployment"] = f"{result.deployment.outcome}: {result.deployment.reason}"
    return result
