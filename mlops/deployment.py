"""Deployment behind quality gates: validate candidates, promote atomically, roll back, keep history.

Layout of ``models/`` (the only module that writes it is this one)::

    models/manifest.json          what is live; written last, atomically (temp file, fsync, rename)
    models/releases/<stamp>/      the model files of one deployment, never modified once written
    models/history.jsonl          one JSON line per deploy / rollback / refusal / no-op
    models/.lock                  held (flock) while a deployment or rollback runs

A crash at any moment leaves ``manifest.json`` pointing at one whole release: the old one until the
rename, the new one after it. The manifest also keeps the previous deployment, so ``rollback`` is
one more atomic manifest write.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.chatbot.bot import MANIFEST, DeploymentError, load_serving_model, read_manifest, verified_path
from mlops.cli import Refused
from mlops.config import MODEL_KEYS, Settings
from mlops.data import Datasets, load_datasets
from mlops.evaluation import GATE_METRICS, evaluate, latency_p95_ms, single_query_call
from mlops.integrity import sha256_bytes
from mlops.modeling.serving import to_serving

logger = logging.getLogger(__name__)

HISTORY = "history.jsonl"
RELEASES = "releases"
LOCK = ".lock"
CHATBOT_MODEL = "travel_chatbot"
SMOKE_QUERY = "Where can I see leopards in Sri Lanka?"
LATENCY_QUERIES = 200


class DeploymentRefused(Refused):
    """A candidate failed a gate or was worse than the champion; nothing deployed changed."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class DeploymentLocked(Refused):
    """Another deployment or rollback holds the lock."""


@dataclass
class Candidate:
    """A registered version's serving twin, what is deployed (``payload``: its pickle, ``model``: it loaded)."""

    key: str
    version: str
    run_id: str
    registered_sha256: str
    payload: bytes = b""  # the pickled serving twin written to models/
    model: Any = None  # that twin, loaded
    sha256: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    latency_p95_ms: float = 0.0


@dataclass
class DeployReport:
    outcome: str  # deployed | unchanged | dry_run | rolled_back
    manifest: dict | None
    candidates: dict[str, Candidate] = field(default_factory=dict)
    champion_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------------- file helpers
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temp file in the same folder, fsync it, rename it over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:  # a full disk, an interrupt: leave no half-written temp file behind
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def append_history(models_dir: Path, record: dict) -> None:
    """Append one line to the deployment history and fsync it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(models_dir: Path) -> list[dict]:
    """All history records, oldest first; a torn last line (crash mid-write) is skipped."""
    path = Path(models_dir) / HISTORY
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping an unreadable history line", path)
    return records


def live_at(models_dir: Path, when: datetime) -> dict | None:
    """The versions that were live at ``when`` (from the history), or None if nothing was."""
    live = None
    for record in read_history(models_dir):
        if record["outcome"] in ("deployed", "rolled_back") and datetime.fromisoformat(record["at"]) <= when:
            live = record
    return None if live is None else {"at": live["at"], "versions": live["versions"], "outcome": live["outcome"]}


@contextmanager
def deployment_lock(models_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``models/.lock``; released by the kernel if the process dies.

    Raises:
        DeploymentLocked: Another process holds it (its PID is named).
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise DeploymentLocked(f"another deployment is running (PID {holder}); try again when it ends") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_manifest(models_dir: Path) -> dict | None:
    try:
        return read_manifest(models_dir)
    except DeploymentError:
        if (Path(models_dir) / MANIFEST).exists():
            raise
        return None


# ------------------------------------------------------------------------------------ validation
def _gate_failures(candidate: Candidate, settings: Settings) -> list[str]:
    gates = settings.deployment.gates
    floors = {
        ("llm_model", "accuracy"): gates.min_accuracy,
        ("llm_model", "oos_recall"): gates.min_oos_recall,
        ("rag_model", "hit_at_3"): gates.min_hit_at_3,
        ("embedding_model", "triplet_accuracy"): gates.min_triplet_accuracy,
        ("few_shot_model", "accuracy"): gates.min_few_shot_accuracy,
    }
    failures = [
        f"{candidate.key} v{candidate.version}: {metric} {candidate.metrics[metric]:.3f} is below the gate {floor:.3f}"
        for (key, metric), floor in floors.items()
        if key == candidate.key and candidate.metrics[metric] < floor
    ]
    if candidate.latency_p95_ms > gates.max_p95_latency_ms:
        failures.append(
            f"{candidate.key} v{candidate.version}: p95 latency {candidate.latency_p95_ms:.2f} ms is above "
            f"the gate {gates.max_p95_latency_ms:.2f} ms"
        )
    return failures


def _comparison_failures(
    candidate: Candidate, champion: dict[str, float], champion_version: str, tol: float
) -> list[str]:
    return [
        f"{candidate.key} v{candidate.version}: {metric} {candidate.metrics[metric]:.3f} is worse than champion "
        f"v{champion_version}'s {champion[metric]:.3f} by more than the tolerance {tol:.3f}"
        for metric in GATE_METRICS[candidate.key]
        if candidate.metrics[metric] < champion[metric] - tol
    ]


def _score(key: str, model: Any, data: Datasets, settings: Settings) -> tuple[dict, float]:
    single_query_call(key, model)(SMOKE_QUERY)  # smoke prediction: raises if the artifact is broken
    metrics = evaluate(key, model, data, settings.training.seed, settings.training.embedding_model.triplet_samples)
    queries = list(data.intent_split("test")["text"])[:LATENCY_QUERIES]
    return metrics, latency_p95_ms(single_query_call(key, model), queries)


def _champion_metrics(key: str, champion: dict, models_dir: Path, data: Datasets, settings: Settings) -> dict | None:
    """Held-out metrics of the live champion, or None if this code cannot load it (an older format)."""
    ((relative, digest),) = champion["files"].items()
    path = verified_path(models_dir, relative, digest)  # integrity first: a tampered file always raises
    try:
        model = load_serving_model(path.read_bytes(), str(path), "it was deployed by an older version of the code")
        return evaluate(key, model, data, settings.training.seed, settings.training.embedding_model.triplet_samples)
    except (DeploymentError, AttributeError, ValueError, KeyError) as exc:
        logger.warning("%s: cannot evaluate the live champion %s: %s", key, path, exc)
        return None


def _unpickle_twin(key: str, version: str, payload: bytes) -> Any:
    """A (verified) serving twin, through the chatbot's restricted unpickler: only serving model classes."""
    return load_serving_model(
        payload,
        f"models:/{key}/{version} (serving twin)",
        "it was trained by another version of this code; retrain it: python mlops/scripts/train_chatbot_models.py",
    )


def fetch_candidates(keys: list[str], versions: dict[str, str] | None = None) -> dict[str, Candidate]:
    """Load (sha256-verified) the given or else the newest registered version of each model.

    Raises:
        DeploymentError: A model has no registered version, or one this code can no longer load.
    """
    from mlops.tracking import (
        IncompatibleModelError,
        load_model_version,
        registered_serving_payload,
        registered_version,
    )

    candidates = {}
    for key in keys:
        model_version = registered_version(key, (versions or {}).get(key))
        if model_version is None:
            raise DeploymentError(
                f"no registered version of {key}; train first (python mlops/scripts/train_chatbot_models.py)"
            )
        # Each file is verified against its sha256 tag before anything is unpickled.
        try:
            payload = registered_serving_payload(key, model_version)
            if payload is None:  # logged before serving twins were logged with the model: convert here
                payload = pickle.dumps(to_serving(load_model_version(key, model_version)), protocol=5)
            twin = _unpickle_twin(key, str(model_version.version), payload)  # exactly what serving will load
        except (IncompatibleModelError, ValueError) as exc:
            raise DeploymentError(str(exc)) from None
        candidate = Candidate(key, str(model_version.version), model_version.run_id, model_version.tags["sha256"])
        candidate.payload, candidate.model = payload, twin
        candidate.sha256 = sha256_bytes(candidate.payload)
        candidates[key] = candidate
    return candidates


# ------------------------------------------------------------------------------------- promotion
def current_registry_id() -> str:
    """A short fingerprint of the model registry in use (the URI itself may hold a password)."""
    import mlflow

    return sha256_bytes(mlflow.get_registry_uri().encode())[:16]


def _release_manifest(candidates: dict[str, Candidate], release: str, previous: dict | None) -> dict:
    manifest = {
        "deployed_at": datetime.now(UTC).isoformat(),
        "deployed_by": getpass.getuser(),
        "release": release,
        "registry_id": current_registry_id(),  # the versions below are numbered in this registry
        "models": {
            key: {
                "registered_model": key,
                "version": c.version,
                "run_id": c.run_id,
                "registered_sha256": c.registered_sha256,
                "files": {f"{RELEASES}/{release}/{key}.pkl": c.sha256},
                "metrics": c.metrics,
                "latency_p95_ms": c.latency_p95_ms,
            }
            for key, c in candidates.items()
        },
    }
    if previous:
        manifest["previous"] = {k: v for k, v in previous.items() if k != "previous"}
    return manifest


def _write_release(models_dir: Path, candidates: dict[str, Candidate]) -> str:
    release = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = models_dir / RELEASES / f".staging-{release}"
    staging.mkdir(parents=True)
    try:
        for key, candidate in candidates.items():
            with open(staging / f"{key}.pkl", "wb") as handle:
                handle.write(candidate.payload)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.rename(staging, models_dir / RELEASES / release)
    _fsync_dir(models_dir / RELEASES)
    return release


def _referenced_releases(manifest: dict | None) -> set[str]:
    found: set[str] = set()
    for entry in (manifest, (manifest or {}).get("previous")):
        if entry and entry.get("release"):
            found.add(entry["release"])
    return found


def prune_releases(models_dir: Path, manifest: dict | None) -> None:
    """Delete release folders (and abandoned staging folders) that neither the live nor the previous deployment uses."""
    keep = _referenced_releases(manifest)
    for folder in (models_dir / RELEASES).glob("*"):
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _versions(manifest: dict | None) -> dict[str, str]:
    return {key: str(entry["version"]) for key, entry in (manifest or {}).get("models", {}).items()}


def _history_record(action: str, outcome: str, manifest: dict | None, reason: str, extra: dict | None = None) -> dict:
    models = (manifest or {}).get("models", {})
    return {
        "at": datetime.now(UTC).isoformat(),
        "by": getpass.getuser(),
        "action": action,
        "outcome": outcome,
        "versions": _versions(manifest),
        "run_ids": {key: entry.get("run_id") for key, entry in models.items()},
        "metrics": {key: entry.get("metrics", {}) for key, entry in models.items()},
        "release": (manifest or {}).get("release"),
        "reason": reason,
        **(extra or {}),
    }


def set_aliases(manifest: dict) -> None:
    """Point ``champion`` at the live versions and ``previous`` at the ones before them.

    A deployment made with another registry (the tracking store was moved or replaced, the models
    folder kept) has version numbers that mean nothing here: its aliases are not set, and when it is
    the live one the ``champion`` aliases of this registry are removed, since nothing of this
    registry is serving. The manifest, not the aliases, decides what serves.
    """
    import mlflow

    from mlops.team import hide_password

    client = mlflow.MlflowClient()
    here = current_registry_id()
    previous = manifest.get("previous") or {}
    live_here = manifest.get("registry_id", here) == here
    previous_here = bool(previous) and previous.get("registry_id", here) == here
    for key, version in _versions(manifest).items():
        if live_here:
            _set_alias(client, key, "champion", version)
        else:
            _drop_alias(client, key, "champion")
        old = _versions(previous).get(key)
        if previous_here and old and old != version:
            _set_alias(client, key, "previous", old)
    for alias, entry, ours in (("champion", manifest, live_here), ("previous", previous, previous_here)):
        if ours and entry.get("travel_chatbot_version"):
            _set_alias(client, CHATBOT_MODEL, alias, str(entry["travel_chatbot_version"]))
        elif alias == "champion" and not ours:
            _drop_alias(client, CHATBOT_MODEL, alias)
    for name, entry, ours in (("live", manifest, live_here), ("previous", previous, previous_here)):
        if entry and not ours:
            logger.warning(
                "the %s deployment (release %s) was registered in another model registry; its aliases are "
                "not set in this one (%s)", name, entry.get("release"), hide_password(mlflow.get_registry_uri()),
            )  # fmt: skip


def _set_alias(client, name: str, alias: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        logger.warning("%s v%s is not in this model registry; alias '%s' not set", name, version, alias)


def _drop_alias(client, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def register_chatbot(models_dir: Path, manifest: dict) -> str:
    """Log and register the whole bot (the files of this release) as the ``travel_chatbot`` pyfunc."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from mlops.tracking import pip_requirements

    artifacts, hashes = {}, {}
    for key, entry in manifest["models"].items():
        ((relative, digest),) = entry["files"].items()
        artifacts[key], hashes[key] = str(models_dir / relative), digest
    example = pd.DataFrame({"text": [SMOKE_QUERY]})
    output = pd.DataFrame({"answer": ["..."], "intent": ["activities"], "confidence": [0.9], "sources": ["[]"]})
    from mlops.tracking import _quiet_model_logging, owner_tags

    with mlflow.start_run(run_name=f"deployment-{manifest['release']}", tags=owner_tags()), _quiet_model_logging():
        mlflow.set_tags({"action": "deploy", "release": manifest["release"]})
        mlflow.log_params({f"{key}_version": version for key, version in _versions(manifest).items()})
        info = mlflow.pyfunc.log_model(
            name=CHATBOT_MODEL,
            python_model=str(Path(__file__).parent / "chatbot" / "pyfunc.py"),
            artifacts=artifacts,
            model_config={"sha256": hashes, "versions": _versions(manifest)},
            signature=infer_signature(example, output),
            pip_requirements=pip_requirements(),
            registered_model_name=CHATBOT_MODEL,
        )
    return str(info.registered_model_version)


def _finish_promotion(models_dir: Path, live: dict) -> None:
    """Complete a promotion that was interrupted after its manifest went live (registry and aliases).

    The manifest swap is the commit point; registering ``travel_chatbot`` and moving the aliases come
    after it, so a crash there leaves the registry behind the manifest until this runs again.
    """
    if not live.get("travel_chatbot_version"):
        logger.warning("release %s went live without its registry update; finishing it now", live.get("release"))
        live["travel_chatbot_version"] = register_chatbot(models_dir, live)
        write_json_atomic(models_dir / MANIFEST, live)
    set_aliases(live)


def deploy(
    settings: Settings,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    data: Datasets | None = None,
    versions: dict[str, str] | None = None,
) -> DeployReport:
    """Validate the newest (or the given) registered version of every enabled model; promote them together.

    Args:
        settings: Validated configuration.
        force: Skip the comparison with the champion (never the integrity checks or the gates) and
            redeploy even when the registered versions are already live.
        dry_run: Validate and report, change nothing.
        progress: Called with a short message as each step starts.
        data: Already loaded datasets (loaded from ``settings`` when None).
        versions: Registered version to deploy per model key (default: the newest of each).

    Returns:
        What happened, with the candidates' metrics.

    Raises:
        DeploymentRefused: A gate or the champion comparison failed; nothing changed.
        DeploymentError: Nothing registered, or an artifact fails its integrity check.
        DeploymentLocked: Another deployment is running.
    """
    from mlops.tracking import close_orphaned_runs, configure_tracking

    say = progress or (lambda message: logger.info("%s", message))
    tic = time.perf_counter()
    models_dir = settings.models_dir
    keys = [key for key in MODEL_KEYS if settings.deployment.models[key].enabled]
    close_orphaned_runs(configure_tracking(settings).experiment_id)
    data = data or load_datasets(settings.data_dir)
    with deployment_lock(models_dir):
        live = current_manifest(models_dir)
        say("Fetching candidates from the model registry")
        candidates = fetch_candidates(keys, versions)
        if live and not force and _versions(live) == {key: c.version for key, c in candidates.items()}:
            reason = "the registered versions are already deployed"
            if not dry_run:  # a dry run changes nothing, not even the history
                _finish_promotion(models_dir, live)
                append_history(models_dir, _history_record("deploy", "unchanged", live, reason))
            return DeployReport("unchanged", live, candidates, reason=reason, seconds=time.perf_counter() - tic)
        failures: list[str] = []
        champion_metrics: dict[str, dict[str, float]] = {}
        for key, candidate in candidates.items():
            say(f"Validating {key} v{candidate.version}")
            candidate.metrics, candidate.latency_p95_ms = _score(key, candidate.model, data, settings)
            failures += _gate_failures(candidate, settings)
            champion = (live or {}).get("models", {}).get(key)
            if champion and str(champion["version"]) != candidate.version and not force:
                metrics = _champion_metrics(key, champion, models_dir, data, settings)
                if metrics is None:
                    failures.append(
                        f"{key}: the live champion v{champion['version']} cannot be evaluated by this version of the "
                        "code, so the candidate cannot be compared; deploy with --force to replace it"
                    )
                    continue
                champion_metrics[key] = metrics
                failures += _comparison_failures(
                    candidate, metrics, str(champion["version"]), settings.deployment.gates.tolerance
                )
        proposed = _release_manifest(candidates, "(dry run)", live)
        if failures:
            append_history(models_dir, _history_record("deploy", "refused", proposed, "; ".join(failures)))
            raise DeploymentRefused(failures)
        if dry_run:
            return DeployReport(
                "dry_run", proposed, candidates, champion_metrics, "all gates passed", time.perf_counter() - tic
            )
        say("Promoting: writing the release and the manifest")
        try:
            release = _write_release(models_dir, candidates)
            manifest = _release_manifest(candidates, release, live)
            write_json_atomic(models_dir / MANIFEST, manifest)
        except OSError as exc:  # typically a full disk: nothing live changed, say so
            prune_releases(models_dir, live)
            raise OSError(
                exc.errno,
                f"deployment aborted while writing to {models_dir} ({exc.strerror or exc}); "
                "the live deployment is unchanged",
            ) from exc
        reason = "forced past the champion comparison" if force else "passed all gates"
        append_history(models_dir, _history_record("deploy", "deployed", manifest, reason))
        say("Registering travel_chatbot and moving the aliases")
        manifest["travel_chatbot_version"] = register_chatbot(models_dir, manifest)
        write_json_atomic(models_dir / MANIFEST, manifest)
        set_aliases(manifest)
        prune_releases(models_dir, manifest)
    return DeployReport("deployed", manifest, candidates, champion_metrics, reason, time.perf_counter() - tic)


def rollback(settings: Settings, progress: Callable[[str], None] | None = None) -> DeployReport:
    """Return to the previous deployment (files, manifest and aliases) in one atomic manifest write.

    Raises:
        DeploymentError: Nothing deployed, no previous deployment, or its files fail verification.
        DeploymentLocked: Another deployment is running.
    """
    from mlops.tracking import configure_tracking

    say = progress or (lambda message: logger.info("%s", message))
    tic = time.perf_counter()
    models_dir = settings.models_dir
    configure_tracking(settings)
    with deployment_lock(models_dir):
        live = current_manifest(models_dir)
        if live is None:
            raise DeploymentError(f"nothing is deployed in {models_dir}; there is nothing to roll back")
        previous = live.get("previous")
        if not previous:
            raise DeploymentError("the live deployment has no previous deployment to roll back to")
        say(f"Verifying release {previous.get('release')}")
        for entry in previous["models"].values():
            ((relative, digest),) = entry["files"].items()
            verified_path(models_dir, relative, digest)
        manifest = {**previous, "previous": {k: v for k, v in live.items() if k != "previous"}}
        manifest["rolled_back_at"] = datetime.now(UTC).isoformat()
        write_json_atomic(models_dir / MANIFEST, manifest)
        append_history(
            models_dir,
            _history_record("rollback", "rolled_back", manifest, f"rolled back from release {live.get('release')}"),
        )
        say("Moving the aliases")
        set_aliases(manifest)
    return DeployReport("rolled_back", manifest, reason="rolled back", seconds=time.perf_counter() - tic)


def status_lines(models_dir: Path, history_rows: int = 10) -> list[str]:
    """What is live and the recent deployment history, as lines for the status views."""
    try:
        live = current_manifest(models_dir)
    except DeploymentError as exc:
        return [f"deployment: unreadable ({exc})"]
    if live is None:
        lines = [f"deployment: nothing deployed in {models_dir}"]
    else:
        lines = [
            f"deployment: release {live.get('release')} deployed {live.get('deployed_at')} by {live.get('deployed_by')}"
        ]
        for key, entry in live["models"].items():
            metrics = ", ".join(f"{name}={value:.3f}" for name, value in entry.get("metrics", {}).items())
            lines.append(f"  {key:<16} v{entry['version']:<4} run {str(entry.get('run_id'))[:8]}  {metrics}")
        if live.get("previous"):
            lines.append(f"  rollback target: release {live['previous'].get('release')}")
    history = read_history(models_dir)[-history_rows:]
    if history:
        lines.append(f"history (last {len(history)}):")
        for record in history:
            versions = " ".join(f"{key.split('_')[0]}=v{version}" for key, version in record["versions"].items())
            lines.append(
                f"  {record['at'][:19]}  {record['outcome']:<11} {record['by']:<8} {versions}  {record['reason'][:80]}"
            )
    return lines
