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
from mlops.team import describe_profile, hide_password

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


def check_tracking_store(settings: Settings):
    """Make sure the configured MLflow store is reachable and writable (migrating a legacy one).

    In the team profile the shared services are checked first, in seconds and with a clear error,
    before MLflow's own client would retry an unreachable server for minutes.

    Returns:
        The store in use (``tracking_uri``, ``experiment_id``...).

    Raises:
        RemoteServiceError: A shared service of the team profile is down or not writable.
    """
    import mlflow

    from mlops.team import check_remote_services
    from mlops.tracking import configure_tracking

    for line in check_remote_services(settings):
        logger.info("%s", line)
    store = configure_tracking(settings)
    client = mlflow.MlflowClient()
    # Proves we can write. Two pipelines checking the same new store at once race on inserting this
    # tag (MLflow's SQL store reads, then inserts); the loser's retry finds the row and updates it.
    for attempt in range(3):
        try:
            client.set_experiment_tag(store.experiment_id, "last_store_check", "ok")
            break
        except mlflow.exceptions.MlflowException as exc:
            if attempt == 2 or "UNIQUE constraint" not in str(exc):
                raise
    return store


@dataclass
class PipelineResult:
    steps: dict[str, str] = field(default_factory=dict)
    training: dict | None = None
    data: Datasets | None = None
    deployment: object | None = None
    experiment_id: str = ""


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
    store = check_tracking_store(settings)
    result.steps["profile"] = describe_profile(settings)
    result.steps["tracking_store"], result.experiment_id = hide_password(store.tracking_uri), store.experiment_id
    progress("Validating data")
    result.data = load_datasets(settings.data_dir)
    result.steps["data"] = f"fingerprint {result.data.fingerprint[:12]}"
    result.training = run_training(settings, train_models, progress=progress, data=result.data)
    result.steps["training"] = result.training["results_file"]
    result.deployment = deploy(settings, progress=progress, data=result.data)
    result.steps["deployment"] = f"{result.deployment.outcome}: {result.deployment.reason}"
    return result


@dataclass
class FastPathResult:
    reused: dict[str, str] = field(default_factory=dict)
    trained: dict[str, str] = field(default_factory=dict)
    training: dict | None = None
    deployment: object | None = None
    run_id: str = ""


def run_fast_path(settings: Settings, progress: Callable[[str], None], force: bool = False) -> FastPathResult:
    """Train only the models whose inputs changed, reuse the registered versions of the others, deploy.

    A model's inputs are its data files, its config section, the seed and the code that trains it
    (``mlops.fingerprint``). Reuse is recorded in MLflow: a ``fast-path`` run tagged with the
    version reused or trained for each model, so every deployment's lineage stays complete.

    Args:
        settings: Validated configuration.
        progress: Called with a short message as each step starts.
        force: Retrain every model.
    """
    import mlflow

    from mlops.deployment import deploy
    from mlops.fingerprint import cached_version, model_fingerprints
    from mlops.training import run_training

    progress("Checking the MLflow tracking store")
    check_tracking_store(settings)
    progress("Validating data and fingerprinting inputs")
    data = load_datasets(settings.data_dir)
    fingerprints = model_fingerprints(settings, data)
    result = FastPathResult()
    for key, fingerprint in fingerprints.items():
        hit = None if force else cached_version(key, fingerprint)
        if hit is not None:
            result.reused[key] = str(hit.version)
    changed = [key for key in fingerprints if key not in result.reused]
    if changed:
        result.training = run_training(
            settings, changed, progress, encoder_version=result.reused.get("embedding_model"), data=data
        )
        result.trained = {key: result.training["models"][key]["version"] for key in changed}
    with mlflow.start_run(run_name="fast-path") as run:
        result.run_id = run.info.run_id
        mlflow.set_tags(
            {"fast_path": "true", "data_fingerprint": data.fingerprint}
            | {f"reused.{key}": version for key, version in result.reused.items()}
            | {f"trained.{key}": version for key, version in result.trained.items()}
            | {f"fingerprint.{key}": fingerprint for key, fingerprint in fingerprints.items()}
        )
    result.deployment = deploy(settings, progress=progress, data=data, versions={**result.reused, **result.trained})
    return result
