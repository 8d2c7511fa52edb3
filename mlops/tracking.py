"""The MLflow store: configuration, legacy migration, model logging/registration and comparison.

The default store is SQLite (``sqlite:///mlruns/mlflow.db``) with artifacts under ``mlruns/``.
MLflow 3 refuses a plain-folder store; one found in ``mlruns/`` is migrated with MLflow's own
``migrate-filestore`` code before anything else touches it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from mlops.config import Settings
from mlops.integrity import sha256_bytes, sha256_file
from mlops.processes import sqlite_creation_lock

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pkl"
SERVING_SUFFIX = ".serving.pkl"  # the serving twin logged beside each model's joblib file
SERVING_TAG = "serving_sha256"
PIP_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "joblib", "tokenizers")


def pip_requirements() -> list[str]:
    """Exact pins of what a logged model needs; inferring them costs seconds per model."""
    return [f"{name}=={version(name)}" for name in PIP_PACKAGES]


def _is_legacy_file_store(mlruns: Path) -> bool:
    if not mlruns.is_dir() or (mlruns / "mlflow.db").exists():
        return False
    return (
        any((child / "meta.yaml").is_file() for child in mlruns.iterdir() if child.is_dir())
        or (mlruns / "models").is_dir()
        and any((mlruns / "models").glob("*/meta.yaml"))
    )


def migrate_legacy_store(mlruns: Path, target_uri: str) -> bool:
    """Migrate a plain-folder MLflow store in ``mlruns`` into the SQLite database ``target_uri``.

    Returns:
        True when a migration ran, False when there was nothing to migrate.
    """
    if not target_uri.startswith("sqlite:///") or not _is_legacy_file_store(mlruns):
        return False
    from mlflow.store.fs2db import migrate

    logger.warning("Found a legacy folder store in %s; migrating it to %s", mlruns, target_uri)
    migrate(mlruns, target_uri, progress=False)
    return True


def experiment_artifact_location(settings: Settings) -> str | None:
    """Where a new experiment keeps its artifacts, or None to let the tracking server decide.

    A configured URI (``s3://...``, ``mlflow-artifacts:/...``) is used as is. A folder is used for a
    database store (SQLite, or PostgreSQL whose artifacts then go to a folder every host mounts). A
    tracking server (``http(s)://``) decides itself (``--serve-artifacts --artifacts-destination``):
    a folder of the client machine would be unreadable from every other host.
    """
    configured = settings.mlflow.artifact_location
    if "://" in configured or configured.startswith("mlflow-artifacts:"):
        return configured
    if settings.tracking_uri.startswith(("http://", "https://")):
        return None
    return settings.artifact_location


@dataclass(frozen=True)
class TrackingStore:
    tracking_uri: str
    registry_uri: str
    experiment_id: str
    experiment_name: str


def configure_tracking(settings: Settings) -> TrackingStore:
    """Point MLflow at the configured store, migrating a legacy one, and ensure the experiment.

    Raises:
        RuntimeError: The store cannot be reached or written.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = settings.tracking_uri
    registry = settings.mlflow.registry_uri or uri
    creation_lock = contextlib.nullcontext()
    if uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///") :])
        db_path.parent.mkdir(parents=True, exist_ok=True)
        migrate_legacy_store(db_path.parent, uri)
        # Two processes opening a new SQLite store at once both run MLflow's schema migrations, and the
        # loser fails ("duplicate column name: step"): opening the store is serialised (a few ms once
        # the schema exists).
        creation_lock = sqlite_creation_lock(db_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    try:
        with creation_lock:
            experiment = mlflow.get_experiment_by_name(settings.mlflow.experiment_name)
            if registry == uri:  # the registry's store object is initialised separately, on the same file
                mlflow.MlflowClient().search_registered_models(max_results=1)
        if experiment is None:
            experiment_id = _create_experiment(settings)
        else:
            experiment_id = experiment.experiment_id
    except Exception as exc:  # MLflow raises several unrelated types for an unreachable store
        raise RuntimeError(f"MLflow tracking store {uri} is not usable: {exc}") from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    return TrackingStore(uri, registry, experiment_id, settings.mlflow.experiment_name)


def _create_experiment(settings: Settings) -> str:
    """Create the experiment; if another process created it meanwhile, use theirs."""
    import mlflow

    name = settings.mlflow.experiment_name
    try:
        return mlflow.create_experiment(name, artifact_location=experiment_artifact_location(settings))
    except mlflow.exceptions.MlflowException:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


OWNER_TAGS = ("mlops.host", "mlops.pid", "mlops.process_started")
ORPHANED_TAG = "mlops.orphaned"


def owner_tags() -> dict[str, str]:
    """Tags naming the process that opens a run, so a run it never closed can be found later."""
    import socket

    import psutil

    return dict(
        zip(OWNER_TAGS, (socket.gethostname(), str(os.getpid()), f"{psutil.Process().create_time():.2f}"), strict=True)
    )


def _process_alive(pid: str, started: str) -> bool:
    """From a run's owner tags: the start time is written to 0.01 s, so it must match that closely."""
    from mlops.processes import process_alive

    try:
        return process_alive(int(pid), float(started), tolerance_s=0.01)
    except ValueError:  # a tag that is missing or not a number
        return False


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs this machine opened whose process is gone (SIGKILL, power loss, OOM).

    MLflow leaves such runs RUNNING for ever. Runs opened on other machines (a shared server) are
    left alone: whether their process lives cannot be told from here.

    Returns:
        The ids of the runs closed.
    """
    import socket

    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`mlops.host` = '{host}'",
        max_results=1000,
    )
    closed = []
    for run in running:
        pid, started = (run.data.tags.get(tag, "") for tag in OWNER_TAGS[1:])
        if _process_alive(pid, started):
            continue
        client.set_tag(run.info.run_id, ORPHANED_TAG, f"process {pid} on {host} ended without closing this run")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed:
        logger.warning("marked %d run(s) KILLED whose process had died: %s", len(closed), ", ".join(closed))
    return closed


def predict_any(model, texts: list[str]):
    """Uniform pyfunc output per model type: intents, vectors or ranked ids."""
    if hasattr(model, "predict_with_confidence"):
        pairs = model.predict_with_confidence(texts)
        return pd.DataFrame({"intent": [p[0] for p in pairs], "confidence": [p[1] for p in pairs]})
    if hasattr(model, "retrieve"):
        return pd.DataFrame({"ids": [";".join(hit["id"] for hit in model.retrieve(text, 3)) for text in texts]})
    result = model.predict(texts)
    return result.tolist() if hasattr(result, "tolist") else result


@contextmanager
def _quiet_model_logging():
    """Silence MLflow hints that do not apply: our signature is explicit and our inputs are text.

    (The bot is logged without an input example on purpose: MLflow would load and run it to check
    the example, half a second of every deployment.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        warnings.filterwarnings("ignore", message=".*An input example was not provided when logging the model")
        yield


def log_pickled_model(
    key: str,
    model_path: Path,
    example: list[str],
    register: bool,
    tags: dict[str, str] | None = None,
    serving_path: Path | None = None,
) -> dict:
    """Log a joblib-pickled model as a pyfunc in the active run and optionally register it.

    Args:
        key: Registered model name (one of the four model keys).
        model_path: The joblib file.
        example: A few raw queries used as input example and for the signature.
        register: Register a new version under ``key``.
        tags: Extra tags for the registered version (e.g. its input fingerprint).
        serving_path: The pickled numpy serving twin (what a deployment writes to ``models/``), logged
            beside the model with its sha256 as the tag ``serving_sha256``, so that deploying needs
            neither scikit-learn nor the training classes.

    Returns:
        ``{"model_uri", "version", "sha256"}`` (version is None when not registered).
    """
    import mlflow
    from mlflow.models import infer_signature

    digest = sha256_bytes(model_path.read_bytes())
    config = {"sha256": digest}
    if serving_path is not None:
        config["serving_sha256"] = sha256_bytes(serving_path.read_bytes())
    import joblib

    frame = pd.DataFrame({"text": example})
    output = predict_any(joblib.load(model_path), example)
    with _quiet_model_logging():
        info = mlflow.pyfunc.log_model(
            name=key,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            model_config=config,
            artifacts={"model": str(model_path), **({"serving": str(serving_path)} if serving_path else {})},
            signature=infer_signature(frame, output),
            input_example=frame,
            pip_requirements=pip_requirements(),
            registered_model_name=key if register else None,
            tags={"sha256": digest},
        )
    model_version = getattr(info, "registered_model_version", None)
    if register and model_version is not None:
        client = mlflow.MlflowClient()
        if serving_path is not None:
            tags = {**(tags or {}), SERVING_TAG: config["serving_sha256"]}
        for name, value in {"sha256": digest, **(tags or {})}.items():
            client.set_model_version_tag(key, str(model_version), name, value)
    return {
        "model_uri": info.model_uri,
        "version": None if model_version is None else str(model_version),
        "sha256": digest,
    }


def compare_runs(experiment_name: str, metrics: list[str] | None = None, max_results: int = 200) -> pd.DataFrame:
    """A table of the experiment's model runs and their metrics, newest first (the seed's ``compare_experiments``).

    Args:
        experiment_name: The MLflow experiment.
        metrics: Metric names to keep; all when None.
        max_results: Upper bound of runs returned.

    Returns:
        One row per nested model run with ``run_id``, ``model``, ``start_time`` and metric columns.
    """
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[experiment_name],
        filter_string="tags.model_key != ''",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "model", "start_time"])
    metric_cols = [col for col in runs.columns if col.startswith("metrics.")]
    if metrics is not None:
        metric_cols = [f"metrics.{name}" for name in metrics if f"metrics.{name}" in runs.columns]
    table = runs[["run_id", "tags.model_key", "start_time", *metric_cols]].rename(
        columns={"tags.model_key": "model", **{col: col.removeprefix("metrics.") for col in metric_cols}}
    )
    return table.reset_index(drop=True)


def latest_version(key: str):
    """The newest registered version of ``key``, or None when nothing is registered."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{key}'")
    except mlflow.exceptions.MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def _verified_artifact(key: str, model_version, dest: Path, serving: bool) -> Path:
    """Download a registered version into ``dest``; its joblib file (or serving twin), checked against its tag.

    Raises:
        ValueError: The file is missing or its sha256 differs from the one recorded when it was logged.
    """
    import mlflow

    uri = f"models:/{key}/{model_version.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    found = sorted(path for path in local.glob("artifacts/*.pkl") if path.name.endswith(SERVING_SUFFIX) == serving)
    if not found:
        if serving:
            raise ValueError(f"{uri} is tagged {SERVING_TAG} but holds no artifacts/*{SERVING_SUFFIX}")
        raise ValueError(f"{uri} holds no pickled model under artifacts/")
    expected = model_version.tags.get(SERVING_TAG if serving else "sha256")
    actual = sha256_file(found[0])
    if expected != actual:
        what = "serving twin sha256" if serving else "sha256"
        raise ValueError(f"{uri}: {what} {actual} differs from the logged {expected}")
    return found[0]


def download_registered_pickle(key: str, model_version, dest: Path) -> Path:
    """Download the joblib file of a registered version and verify it against its sha256 tag.

    Raises:
        ValueError: The file's sha256 differs from the one recorded when it was logged.
    """
    return _verified_artifact(key, model_version, dest, serving=False)


def registered_version(key: str, version: str | None = None):
    """The given registered version of ``key``, or its newest one; None when nothing is registered."""
    import mlflow

    return latest_version(key) if version is None else mlflow.MlflowClient().get_model_version(key, version)


def registered_serving_payload(key: str, model_version) -> bytes | None:
    """The pickled serving twin logged with a registered version, verified against its sha256 tag.

    Returns:
        The pickle's bytes, or None for a version logged before serving twins were (then the
        deployment converts the model itself).

    Raises:
        ValueError: The file is missing or its sha256 differs from the tag.
    """
    import tempfile

    if not model_version.tags.get(SERVING_TAG):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return _verified_artifact(key, model_version, Path(tmp), serving=True).read_bytes()


class IncompatibleModelError(ValueError):
    """A registered model was pickled by a version of this code that can no longer load it."""


def load_model_version(key: str, model_version):
    """Download, sha256-verify and unpickle one registered version.

    Raises:
        ValueError: The file's sha256 differs from the logged one.
        IncompatibleModelError: The pickle needs classes this version of the code no longer has.
    """
    import tempfile

    import joblib

    with tempfile.TemporaryDirectory() as tmp:
        path = download_registered_pickle(key, model_version, Path(tmp))
        try:
            return joblib.load(path)
        except (AttributeError, ModuleNotFoundError, ImportError) as exc:
            raise IncompatibleModelError(
                f"models:/{key}/{model_version.version} was trained by another version of this code ({exc}); "
                "retrain it: python mlops/scripts/train_chatbot_models.py"
            ) from None


def load_registered_pickle(key: str, version: str | None = None):
    """Load a registered version of ``key`` (the newest by default) after verifying its sha256.

    Returns:
        The model, or None when ``key`` has no registered version.
    """
    model_version = registered_version(key, version)
    return None if model_version is None else load_model_version(key, model_version)
