"""Team mode: the same toolkit on shared services, and the move from a laptop to them.

The profile is derived from the configured URIs, never from a flag: an ``http(s)://`` tracking URI
(an ``mlflow server``), a database tracking URI (PostgreSQL) or a non-SQLite inference log make it
``team``; SQLite files make it ``local``. ``mlops/profiles/team/`` (``MLOPS_CONFIG_DIR``) is the
documented overlay; ``docs/TEAM.md`` walks through it.

- :func:`check_remote_services` asks each shared service for its version and proves it can be
  written, with a short timeout and no MLflow retry loop, so a server that is down is reported in
  seconds with its URL (password hidden), what failed and what to check.
- ``python -m mlops.team migrate`` copies the local MLflow store (experiments, runs with their full
  metric history, params, tags, dataset inputs and artifacts, logged models, registered models with
  versions, tags and aliases) and the local inference log (all tables) into the team stores, then
  compares counts and digests of both sides. Copied runs, logged models and versions carry the
  source's id in the ``mlops.migrated_from`` tag and log rows are matched by a natural key, so a
  second run copies nothing twice.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sqlalchemy import Table

    from mlops.config import Settings

logger = logging.getLogger(__name__)

LOCAL, TEAM = "local", "team"
CHECK_TIMEOUT_S = 5.0
MARKER = "mlops.migrated_from"  # on a copied run, logged model or model version: the source's id
COMPLETE = "mlops.migration_complete"  # on a copied run once everything of it was copied
STORE_CHECK_TAG = "last_store_check"  # the experiment tag the pipeline's store check writes too
_SKIPPED_TAGS = (MARKER, COMPLETE, STORE_CHECK_TAG, "mlflow.modelVersions")  # set by the copy or the server


class RemoteServiceError(ValueError):
    """A shared service of the team profile cannot be used (exit code 2: the configuration points at it).

    Attributes:
        problems: One line per unusable service: its URL (password hidden), what failed, what to check.
    """

    def __init__(self, problems: list[str]):
        self.problems = problems
        noun = "service is" if len(problems) == 1 else "services are"
        super().__init__(f"team profile: {len(problems)} shared {noun} not usable:\n  " + "\n  ".join(problems))


class MigrationMismatch(RuntimeError):
    """The team stores do not hold what the local stores hold after a migration (exit code 1)."""


class _Unusable(Exception):
    """One service failed its check; :func:`check_remote_services` gathers them into one error."""


# ---------------------------------------------------------------------------------------- profile
def is_server_uri(uri: str) -> bool:
    """Whether ``uri`` names an MLflow tracking server (``http(s)://``)."""
    return uri.startswith(("http://", "https://"))


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine only (a SQLite file or a plain folder)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def active_profile(settings: Settings) -> str:
    """``"team"`` when the MLflow store or the inference log is shared (a server or a database), else ``"local"``."""
    shared = not is_local_uri(settings.tracking_uri) or not is_local_uri(settings.inference_log_url)
    return TEAM if shared else LOCAL


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print and log)."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _kind(uri: str, tracking: bool) -> str:
    if is_server_uri(uri):
        return "MLflow tracking server"
    if is_local_uri(uri):
        return "local SQLite file" if uri.startswith("sqlite") else "local folder"
    scheme = uri.split("://", 1)[0].split("+", 1)[0]
    return {"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(scheme, scheme) + (" (no server)" if tracking else "")


def describe_profile(settings: Settings) -> str:
    """One line: the active profile and where runs and the inference log live (no network)."""
    tracking, log = settings.tracking_uri, settings.inference_log_url
    return (
        f"{active_profile(settings)}: MLflow at {hide_password(tracking)} ({_kind(tracking, True)}), "
        f"inference log at {hide_password(log)} ({_kind(log, False)})"
    )


# ------------------------------------------------------------------------------ service checks
def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without user:password and the Authorization header they, or MLFLOW_TRACKING_*, give."""
    parts = urllib.parse.urlsplit(url)
    user, password = parts.username, parts.password
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/")
    user = user or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return bare, {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return bare, {"Authorization": f"Basic {token}"}
    return bare, {}


def _http(url: str, headers: dict[str, str], method: str = "GET", body: bytes | dict | None = None) -> bytes:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
    if isinstance(body, dict):
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_S) as reply:
        return reply.read()


def _http_reason(exc: OSError) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        detail = exc.read(300).decode("utf-8", "replace").strip()
        hint = {
            401: " (set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)",
            403: " (a server outside localhost must allow this Host header: mlflow server --allowed-hosts ...)",
        }.get(exc.code, "")
        return f"it answered HTTP {exc.code} {exc.reason}{hint}" + (f": {detail[:200]}" if detail else "")
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing listens on that host and port)"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
    return str(reason)


def check_tracking_server(uri: str, experiment_name: str) -> list[str]:
    """Ask an MLflow tracking server for its version, then write an experiment tag and an artifact.

    Args:
        uri: The server's ``http(s)://`` URL.
        experiment_name: The experiment to tag (the server's Default experiment while it does not exist).

    Returns:
        What was checked, one line, and a warning line when the experiment keeps artifacts on clients.

    Raises:
        _Unusable: The server cannot be reached, or its store or artifact store cannot be written.
    """
    base, headers = _split_credentials(uri)
    shown = f"MLflow tracking server {hide_password(uri)}"
    try:
        version = _http(f"{base}/version", headers).decode().strip()
    except OSError as exc:
        raise _Unusable(
            f"{shown}: not reachable: {_http_reason(exc)}. Check that `mlflow server` runs there "
            "(docs/TEAM.md) and the URL (mlflow.tracking_uri in mlflow_config.yaml, or MLFLOW_TRACKING_URI)"
        ) from None
    api = f"{base}/api/2.0/mlflow"
    lines, experiment_id = [], "0"
    try:
        query = urllib.parse.urlencode({"experiment_name": experiment_name})
        experiment = json.loads(_http(f"{api}/experiments/get-by-name?{query}", headers))["experiment"]
        experiment_id = experiment["experiment_id"]
        location = experiment.get("artifact_location", "")
        if location.startswith(("file:", "/")):
            lines.append(
                f"warning: experiment '{experiment_name}' keeps its artifacts at {location}, a folder of the "
                "machine that created it; other hosts cannot read them (docs/TEAM.md: artifacts)"
            )
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise _Unusable(f"{shown} (MLflow {version}): cannot read experiments: {_http_reason(exc)}") from None
    except OSError as exc:
        raise _Unusable(f"{shown} (MLflow {version}): cannot read experiments: {_http_reason(exc)}") from None
    try:
        tag = {"experiment_id": experiment_id, "key": STORE_CHECK_TAG, "value": "ok"}
        _http(f"{api}/experiments/set-experiment-tag", headers, "POST", tag)
    except OSError as exc:
        raise _Unusable(
            f"{shown} (MLflow {version}): reachable but its tracking store is not writable: {_http_reason(exc)}. "
            "Check the server's log and its --backend-store-uri database"
        ) from None
    lines.insert(0, f"{shown}: MLflow {version}, tracking store writable, " + _check_artifacts(base, headers, shown))
    return lines


def _check_artifacts(base: str, headers: dict[str, str], shown: str) -> str:
    probe = f"{base}/api/2.0/mlflow-artifacts/artifacts/mlops-write-check/{socket.gethostname()}-{uuid.uuid4().hex}"
    try:
        _http(probe, headers, "PUT", b"ok")
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 503):  # started with --no-serve-artifacts: clients write to the store themselves
            return "artifacts not served by the server (clients write to the experiment's artifact location)"
        raise _Unusable(
            f"{shown}: its artifact store is not writable: {_http_reason(exc)}. "
            "Check the --artifacts-destination folder or bucket and its permissions"
        ) from None
    except OSError as exc:
        raise _Unusable(f"{shown}: artifact upload failed: {_http_reason(exc)}") from None
    try:
        _http(probe, headers, "DELETE")
    except OSError:
        logger.debug("could not delete the write-check artifact %s", probe)
    return "artifact store writable"


def _database_hint(message: str, url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    host, port, user, database = parsed.host or "localhost", parsed.port or 5432, parsed.username, parsed.database
    lowered = message.lower()
    if "refused" in lowered or "could not connect" in lowered or "no such file" in lowered:
        return f"is PostgreSQL running and listening on {host}:{port}? (pg_isready -h {host} -p {port})"
    if "does not exist" in lowered and "database" in lowered:
        return f"create the database: createdb -h {host} -p {port} -U {user or 'postgres'} {database}"
    if "password" in lowered or "authentication" in lowered:
        return "check the user and its password (PGPASSWORD or ~/.pgpass on this machine; keep it out of the YAML)"
    if "timeout" in lowered or "timed out" in lowered or "translate host name" in lowered:
        return "check the host name, the port and the firewall between this machine and the database"
    if "read-only" in lowered:
        return "the server only reads (a standby?): point the URL at the primary"
    if "permission denied" in lowered:
        return f"grant {user} CREATE and INSERT on the database's public schema"
    return "check the URL"


def _first_line(exc: BaseException, url: str) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = message[0] if message else type(exc).__name__
    password = urllib.parse.urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


def check_database(url: str, what: str, inference_log: bool = False) -> list[str]:
    """Connect to a database, read its server version and, for the inference log, prove it takes rows.

    The write check creates the log's tables when missing and inserts a row in a transaction that is
    rolled back, so a read-only server or a missing privilege is caught before a chatbot loses rows.

    Raises:
        _Unusable: With the URL (password hidden), the driver's reason and what to check.
    """
    from sqlalchemy import create_engine, insert, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    shown = f"{what} {hide_password(url)}"
    connect_args = {"connect_timeout": int(CHECK_TIMEOUT_S)} if url.startswith("postgresql") else {}
    try:
        engine = create_engine(url, connect_args=connect_args, poolclass=NullPool)
    except (SQLAlchemyError, ImportError) as exc:
        raise _Unusable(
            f"{shown}: {_first_line(exc, url)}. Install the pinned driver: .venv/bin/pip install -r requirements.txt"
        ) from None
    try:
        with engine.connect() as connection:
            query = {"postgresql": "SHOW server_version", "mysql": "SELECT VERSION()"}.get(engine.dialect.name)
            version = connection.execute(text(query)).scalar() if query else "?"
            if engine.dialect.name == "postgresql":
                size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar()
                version += f", database {size / 2**20:.1f} MB"
        label = {"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(engine.dialect.name, engine.dialect.name)
        if not inference_log:
            return [f"{shown}: {label} {version}, reachable"]
        from mlops.monitoring.inference_log import inference_table, make_engine

        make_engine(url).dispose()  # the tables, created the way every writer creates them
        with engine.connect() as connection:
            transaction = connection.begin()
            probe = {
                "request_id": "write-check",
                "ts": time.time(),
                "query": "",
                "intent": "greeting",
                "confidence": 1.0,
                "latency_ms": 0.0,
                "n_sources": 0,
                "answered": True,
                "pid": os.getpid(),
            }
            connection.execute(insert(inference_table), [probe])
            transaction.rollback()
        return [f"{shown}: {label} {version}, tables present, writable"]
    except SQLAlchemyError as exc:
        reason = _first_line(exc, url)
        raise _Unusable(f"{shown}: {reason}. Check: {_database_hint(reason, url)}") from None
    finally:
        engine.dispose()


def check_remote_services(settings: Settings) -> list[str]:
    """Check every shared service of the active profile (nothing to check in the local profile).

    Args:
        settings: The configuration whose tracking URI and inference log are checked.

    Returns:
        The profile line, then one line per service with its version and what was proven.

    Raises:
        RemoteServiceError: Naming every unusable service, what failed and what to check.
    """
    lines = [f"profile {describe_profile(settings)}"]
    if active_profile(settings) == LOCAL:
        return lines
    tracking, log = settings.tracking_uri, settings.inference_log_url
    checks: list[Callable[[], list[str]]] = []
    if is_server_uri(tracking):
        checks.append(lambda: check_tracking_server(tracking, settings.mlflow.experiment_name))
    elif not is_local_uri(tracking):
        checks.append(lambda: check_database(tracking, "MLflow backend store"))
    else:
        lines.append(f"note: runs and models stay in {hide_password(tracking)}, on this machine only")
    if not is_local_uri(log):
        checks.append(lambda: check_database(log, "inference log", inference_log=True))
    else:
        lines.append(f"note: the inference log is {log}: chatbots on other hosts do not write to it")
    problems = []
    for check in checks:
        try:
            lines.extend(check())
        except _Unusable as exc:
            problems.append(str(exc))
    if problems:
        raise RemoteServiceError(problems)
    return lines


def status_lines(settings: Settings) -> list[str]:
    """The "== Profile" section of the status view: the profile and each shared service's check."""
    try:
        return check_remote_services(settings)
    except RemoteServiceError as exc:
        return [f"profile {describe_profile(settings)}", *(f"NOT USABLE: {problem}" for problem in exc.problems)]


# ------------------------------------------------------------------------------ migration: common
def _digest(records: Iterable[Any]) -> str:
    canonical = sorted(json.dumps(record, sort_keys=True, default=str) for record in records)
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()


def _files_digest(folder: Path) -> list[tuple[str, str]]:
    return sorted(
        (path.relative_to(folder).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
        for path in folder.rglob("*")
        if path.is_file()
    )


@dataclass
class Tally:
    """One row of the verification table: a kind of thing, counted and digested on both sides."""

    item: str
    source: int
    target: int
    source_digest: str
    target_digest: str

    @property
    def ok(self) -> bool:
        return self.source == self.target and self.source_digest == self.target_digest


def _tally(item: str, source: list, target: list) -> Tally:
    return Tally(item, len(source), len(target), _digest(source), _digest(target))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _paged(search: Callable[..., Any], **kwargs) -> list:
    found, token = [], None
    while True:
        page = search(**kwargs, page_token=token)
        found.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return found


def _clean_tags(tags: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in tags.items() if key not in _SKIPPED_TAGS}


# ---------------------------------------------------------------------------- migration: MLflow
@dataclass
class TrackingCopy:
    """What a migration of the MLflow store found and did (or, in a dry run, would do)."""

    experiments: int = 0
    runs: int = 0
    runs_present: int = 0
    logged_models: int = 0
    models_present: int = 0
    model_versions: int = 0
    versions_present: int = 0
    aliases: int = 0
    aliases_present: int = 0
    run_map: dict[str, str] = field(default_factory=dict)  # source run id -> team run id
    model_map: dict[str, str] = field(default_factory=dict)  # source logged model id -> team id


class TrackingMigration:
    """Copies one MLflow store into another through :class:`mlflow.MlflowClient` (no database access).

    Args:
        source_uri: The local store (``sqlite:///.../mlflow.db``).
        target_uri: The team's tracking server (or database).
        dry_run: Read both sides and count what would be copied; write nothing.
        progress: Called with a short line as each experiment and registered model is handled.
    """

    def __init__(self, source_uri: str, target_uri: str, dry_run: bool = False, progress=logger.info):
        from mlflow import MlflowClient

        self.src: MlflowClient = MlflowClient(tracking_uri=source_uri, registry_uri=source_uri)
        self.dst: MlflowClient = MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
        self.source_uri, self.target_uri, self.dry_run, self.progress = source_uri, target_uri, dry_run, progress
        self.copy = TrackingCopy()

    # -- reading
    def experiments(self) -> list:
        """The source's active experiments that hold runs or logged models."""
        kept = []
        for experiment in _paged(self.src.search_experiments, max_results=1000):
            if self._runs(self.src, experiment.experiment_id) or self._logged_models(
                self.src, experiment.experiment_id
            ):
                kept.append(experiment)
        return kept

    @staticmethod
    def _runs(client, experiment_id: str) -> list:
        return _paged(
            client.search_runs, experiment_ids=[experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]
        )

    @staticmethod
    def _logged_models(client, experiment_id: str) -> list:
        return _paged(client.search_logged_models, experiment_ids=[experiment_id], max_results=100)

    def _copied(self, experiment_id: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """Team runs and logged models carrying a marker, by source id.

        A run whose copy was interrupted (no ``mlops.migration_complete`` tag) is deleted with its
        logged models, so it is copied again from the start.
        """
        if experiment_id is None:
            return {}, {}
        runs, interrupted = {}, set()
        for run in self._runs(self.dst, experiment_id):
            source_id = run.data.tags.get(MARKER)
            if source_id is not None and run.data.tags.get(COMPLETE) == "true":
                runs[source_id] = run
            elif source_id is not None:
                interrupted.add(run.info.run_id)
        models = {}
        for model in self._logged_models(self.dst, experiment_id):
            if model.source_run_id in interrupted and not self.dry_run:
                self.dst.delete_logged_model(model.model_id)
            elif MARKER in model.tags and model.source_run_id not in interrupted:
                models[model.tags[MARKER]] = model.model_id
        for run_id in interrupted if not self.dry_run else ():
            logger.warning("deleting run %s: its copy was interrupted; copying it again", run_id)
            self.dst.delete_run(run_id)
        return runs, models

    # -- writing
    def run(self) -> TrackingCopy:
        """Copy every experiment, then the registry; returns what was (or would be) copied."""
        for experiment in self.experiments():
            self.progress(f"MLflow experiment '{experiment.name}'")
            self._experiment(experiment)
        for model in _paged(self.src.search_registered_models, max_results=1000):
            self.progress(f"registered model '{model.name}'")
            self._registered_model(model)
        return self.copy

    def _experiment(self, experiment) -> None:
        target = self.dst.get_experiment_by_name(experiment.name)
        if target is None and not self.dry_run:
            # no artifact_location: the tracking server decides where the team's artifacts go
            target_id = self.dst.create_experiment(experiment.name, tags=_clean_tags(experiment.tags))
            self.copy.experiments += 1
        elif target is None:
            target_id = None
            self.copy.experiments += 1
        else:
            target_id = target.experiment_id
        copied, present_models = self._copied(target_id)
        source_models = self._logged_models(self.src, experiment.experiment_id)
        for run in _parents_first(self._runs(self.src, experiment.experiment_id)):
            source_id = run.info.run_id
            if source_id in copied:
                self.copy.runs_present += 1
                self.copy.run_map[source_id] = copied[source_id].info.run_id
                continue
            self.copy.runs += 1
            models = [m for m in source_models if m.source_run_id == source_id]
            if not self.dry_run:
                self._copy_run(run, target_id, models)
        self.copy.model_map.update({k: v for k, v in present_models.items() if k not in self.copy.model_map})
        self.copy.models_present += sum(model.model_id in present_models for model in source_models)
        for model in source_models:  # logged models no copied run produced
            if model.model_id not in self.copy.model_map:
                self.copy.logged_models += 1
                if not self.dry_run:
                    self._copy_logged_model(model, target_id, self.copy.run_map.get(model.source_run_id))

    def _copy_run(self, run, experiment_id: str, models: list) -> None:
        from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag

        source_id = run.info.run_id
        tags = dict(run.data.tags)
        parent = tags.get("mlflow.parentRunId")
        if parent in self.copy.run_map:
            tags["mlflow.parentRunId"] = self.copy.run_map[parent]
        tags[MARKER] = source_id
        tags.pop(COMPLETE, None)
        created = self.dst.create_run(
            experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
        )
        run_id = created.info.run_id
        self.copy.run_map[source_id] = run_id
        for model in models:
            self.copy.logged_models += 1
            self._copy_logged_model(model, experiment_id, run_id)
        params = [Param(key, value) for key, value in run.data.params.items()]
        for chunk in _chunks(params, 100):
            self.dst.log_batch(run_id, params=chunk)
        # the history does not say which points were logged for a model; the model's own metrics do
        linked = {
            (m.key, m.value, m.timestamp, m.step): model.model_id for model in models for m in model.metrics or []
        }
        metrics = [
            Metric(
                point.key,
                point.value,
                point.timestamp,
                point.step,
                dataset_name=point.dataset_name,
                model_id=self.copy.model_map.get(linked.get((point.key, point.value, point.timestamp, point.step))),
                dataset_digest=point.dataset_digest,
            )
            for key in run.data.metrics
            for point in self.src.get_metric_history(source_id, key)
        ]
        for chunk in _chunks(metrics, 1000):
            self.dst.log_batch(run_id, metrics=chunk)
        if run.inputs and run.inputs.dataset_inputs:
            self.dst.log_inputs(run_id, datasets=list(run.inputs.dataset_inputs))
        outputs = [
            LoggedModelOutput(self.copy.model_map[output.model_id], output.step)
            for output in (run.outputs.model_outputs if run.outputs else [])
            if output.model_id in self.copy.model_map
        ]
        if outputs:
            self.dst.log_outputs(run_id, outputs)
        with tempfile.TemporaryDirectory() as tmp:
            self.src.download_artifacts(source_id, "", tmp)
            if any(Path(tmp).iterdir()):
                self.dst.log_artifacts(run_id, tmp)
        self.dst.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
        self.dst.log_batch(run_id, tags=[RunTag(COMPLETE, "true")])

    def _copy_logged_model(self, model, experiment_id: str, run_id: str | None) -> None:
        import mlflow

        tags = {**_clean_tags(model.tags), MARKER: model.model_id}
        created = self.dst.create_logged_model(
            experiment_id,
            name=model.name,
            source_run_id=run_id,
            tags=tags,
            params=model.params or None,
            model_type=model.model_type,
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model.artifact_location, dst_path=tmp, tracking_uri=self.source_uri
            )
            self.dst.log_model_artifacts(created.model_id, local)
        self.dst.finalize_logged_model(created.model_id, model.status)
        self.copy.model_map[model.model_id] = created.model_id

    def _registered_model(self, model) -> None:
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.dst.get_registered_model(model.name).aliases or {}
            present = _paged(self.dst.search_model_versions, filter_string=f"name='{model.name}'", max_results=1000)
        except MlflowException:
            aliases, present = {}, []
            if not self.dry_run:
                self.dst.create_registered_model(model.name, tags=dict(model.tags), description=model.description)
        by_marker = {version.tags[MARKER]: str(version.version) for version in present if MARKER in version.tags}
        versions: dict[str, str | None] = {}
        source_versions = _paged(self.src.search_model_versions, filter_string=f"name='{model.name}'", max_results=1000)
        for version in sorted(source_versions, key=lambda v: int(v.version)):
            marker = _version_marker(version)
            if marker in by_marker:
                self.copy.versions_present += 1
                versions[str(version.version)] = by_marker[marker]
                continue
            self.copy.model_versions += 1
            versions[str(version.version)] = None if self.dry_run else self._copy_version(version, marker)
        for alias, number in (model.aliases or {}).items():
            wanted = versions.get(str(number))
            if wanted is not None and str(aliases.get(alias)) == wanted:
                self.copy.aliases_present += 1
                continue
            self.copy.aliases += 1
            if not self.dry_run and wanted:
                self.dst.set_registered_model_alias(model.name, alias, wanted)

    def _copy_version(self, version, marker: str) -> str:
        source, model_id = version.source, None
        if source.startswith("models:/m-"):
            model_id = self.copy.model_map.get(source.removeprefix("models:/").split("/", 1)[0])
            if model_id is None:
                raise ValueError(f"{version.name} v{version.version}: its logged model {source} was not copied")
            source = f"models:/{model_id}"
        elif source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            source = f"runs:/{self.copy.run_map[run_id]}/{path}"
        else:
            raise ValueError(f"{version.name} v{version.version}: cannot migrate a version whose source is {source}")
        tags = {**_clean_tags(version.tags), MARKER: marker}
        created = self.dst.create_model_version(
            version.name,
            source,
            run_id=self.copy.run_map.get(version.run_id),
            tags=tags,
            description=version.description,
            model_id=model_id,
        )
        return str(created.version)


def _version_marker(version) -> str:
    """A version's identity across stores: its logged model id (unique everywhere) or its source."""
    return version.source.removeprefix("models:/") if version.source.startswith("models:/m-") else version.source


def _parents_first(runs: list) -> list:
    """Runs ordered so a parent is copied before its nested runs (their tag names the parent's new id)."""
    ids = {run.info.run_id for run in runs}
    ordered, placed, pending = [], set(), list(runs)
    while pending:
        ready = [r for r in pending if r.data.tags.get("mlflow.parentRunId") not in ids - placed]
        ready = ready or pending  # a cycle cannot happen; never loop forever anyway
        for run in ready:
            ordered.append(run)
            placed.add(run.info.run_id)
        pending = [r for r in pending if r.info.run_id not in placed]
    return ordered


# ------------------------------------------------------------------ migration: verifying MLflow
TRACKING_ITEMS = ("experiments", "runs", "params", "metrics", "tags", "dataset inputs", "run artifact files",
                  "logged models", "logged model files", "registered models", "model versions", "aliases")  # fmt: skip


@dataclass
class _Side:
    """One side of the comparison. On the team side every entity is named by its source's id (its marker)."""

    client: Any
    uri: str
    copied: bool
    records: dict[str, list] = field(default_factory=lambda: {item: [] for item in TRACKING_ITEMS})

    def run_id(self, run) -> str:
        return run.data.tags[MARKER] if self.copied else run.info.run_id

    def model_id(self, model) -> str:
        return model.tags[MARKER] if self.copied else model.model_id

    def add_experiment(self, experiment, runs: list, models: list) -> None:
        self.records["experiments"].append([experiment.name, _clean_tags(experiment.tags)])
        source_of = {run.info.run_id: self.run_id(run) for run in runs}
        for run in runs:
            self._add_run(run, source_of)
        for model in models:
            self._add_model(model)

    def _add_run(self, run, source_of: dict[str, str]) -> None:
        rid, info, records = self.run_id(run), run.info, self.records
        tags = _clean_tags(run.data.tags)
        if "mlflow.parentRunId" in tags:
            tags["mlflow.parentRunId"] = source_of.get(tags["mlflow.parentRunId"], tags["mlflow.parentRunId"])
        records["runs"].append([rid, info.run_name, info.status, info.start_time, info.end_time])
        records["params"] += [[rid, key, value] for key, value in run.data.params.items()]
        records["tags"] += [[rid, key, value] for key, value in tags.items()]
        records["metrics"] += [
            [rid, point.key, repr(point.value), point.step, point.timestamp]
            for key in run.data.metrics
            for point in self.client.get_metric_history(info.run_id, key)
        ]
        records["dataset inputs"] += [
            [rid, item.dataset.name, item.dataset.digest, sorted((t.key, t.value) for t in item.tags)]
            for item in (run.inputs.dataset_inputs if run.inputs else [])
        ]
        with tempfile.TemporaryDirectory() as tmp:
            self.client.download_artifacts(info.run_id, "", tmp)
            records["run artifact files"] += [[rid, path, digest] for path, digest in _files_digest(Path(tmp))]

    def _add_model(self, model) -> None:
        import mlflow

        mid = self.model_id(model)
        metrics = sorted((m.key, repr(m.value), m.step) for m in model.metrics or [])
        tags = _clean_tags(model.tags)
        self.records["logged models"].append(
            [mid, model.name, str(model.status), model.model_type or "", model.params, tags, metrics]
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model.artifact_location, dst_path=tmp, tracking_uri=self.uri
            )
            self.records["logged model files"] += [[mid, path, digest] for path, digest in _files_digest(Path(local))]

    def add_registry(self, names: set[str] | None = None, markers: set[str] | None = None) -> None:
        """Registered models, versions and aliases (on the team side: only those of the source)."""
        for model in _paged(self.client.search_registered_models, max_results=1000):
            if names is not None and model.name not in names:
                continue
            self.records["registered models"].append([model.name, dict(model.tags), model.description or ""])
            marker_of = {}
            for version in _paged(
                self.client.search_model_versions, filter_string=f"name='{model.name}'", max_results=1000
            ):
                marker = version.tags.get(MARKER) if self.copied else _version_marker(version)
                marker_of[str(version.version)] = marker
                if markers is None or marker in markers:
                    tags, description = _clean_tags(version.tags), version.description or ""
                    self.records["model versions"].append([model.name, marker, tags, description])
            self.records["aliases"] += [
                [model.name, alias, marker_of.get(str(number))]
                for alias, number in (model.aliases or {}).items()
                if markers is None or marker_of.get(str(number)) in markers
            ]


def verify_tracking(migration: TrackingMigration) -> list[Tally]:
    """Count and digest everything of the source and its copies in the team store, side by side."""
    source = _Side(migration.src, migration.source_uri, copied=False)
    target = _Side(migration.dst, migration.target_uri, copied=True)
    for experiment in migration.experiments():
        runs = migration._runs(migration.src, experiment.experiment_id)
        models = migration._logged_models(migration.src, experiment.experiment_id)
        source.add_experiment(experiment, runs, models)
        copy = migration.dst.get_experiment_by_name(experiment.name)
        if copy is None:
            continue
        run_ids, model_ids = {run.info.run_id for run in runs}, {model.model_id for model in models}
        copies = [r for r in migration._runs(migration.dst, copy.experiment_id) if r.data.tags.get(MARKER) in run_ids]
        copied_models = [
            m for m in migration._logged_models(migration.dst, copy.experiment_id) if m.tags.get(MARKER) in model_ids
        ]
        target.add_experiment(copy, copies, copied_models)
    source.add_registry()
    names = {record[0] for record in source.records["registered models"]}
    target.add_registry(names, {record[1] for record in source.records["model versions"]})
    return [_tally(item, source.records[item], target.records[item]) for item in TRACKING_ITEMS]


# ------------------------------------------------------------------- migration: inference log
def _log_tables() -> dict[str, tuple[Table, tuple[str, ...]]]:
    """Each table of the log database with the natural key that identifies a row on every host."""
    from mlops.monitoring.inference_log import alerts_table, canary_table, feedback_table, inference_table, system_table

    return {
        "inference_log": (inference_table, ("request_id",)),
        "feedback": (feedback_table, ("request_id", "ts", "value")),
        "alerts": (alerts_table, ("rule", "ts")),
        "system_health": (system_table, ("host", "ts")),
        "canary_runs": (canary_table, ("ts", "deployed_at")),
    }


def _canonical(row: dict, columns: list[str]) -> list:
    return [
        repr(row[c]) if isinstance(row[c], float) else int(row[c]) if isinstance(row[c], bool) else row[c]
        for c in columns
    ]


def _rows(engine, table: Table) -> list[dict]:
    from sqlalchemy import inspect, select

    if not inspect(engine).has_table(table.name):
        return []
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(select(table).order_by(table.c.id)).mappings()]


@dataclass
class LogCopy:
    """Per table: rows in the local log, rows already in the team log, rows copied (or to copy)."""

    tables: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _missing_file(url: str) -> bool:
    """A SQLite URL whose file does not exist (connecting would create it): a laptop that never logged."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file()


def migrate_log(source_url: str, target_url: str, dry_run: bool = False) -> LogCopy:
    """Copy every table of the local log into the team log, skipping rows whose natural key is there."""
    from sqlalchemy import create_engine, insert
    from sqlalchemy.exc import IntegrityError

    from mlops.monitoring.inference_log import make_engine

    result = LogCopy()
    if _missing_file(source_url):
        result.tables = {name: (0, 0, 0) for name in _log_tables()}
        return result
    source, target = create_engine(source_url), create_engine(target_url) if dry_run else make_engine(target_url)
    try:
        for name, (table, key) in _log_tables().items():
            rows = _rows(source, table)
            present = {tuple(row[k] for k in key) for row in _rows(target, table)}
            new = [
                {c: v for c, v in row.items() if c != "id"} for row in rows if tuple(row[k] for k in key) not in present
            ]
            result.tables[name] = (len(rows), len(rows) - len(new), len(new))
            if dry_run or not new:
                continue
            if name == "alerts":  # the team may already hold an open alert for a rule: keep the copy closed to the key
                open_rules = {row["open_key"] for row in _rows(target, table) if row["open_key"]}
                for row in new:
                    if row["open_key"] in open_rules:
                        row["open_key"] = None
            with target.begin() as connection:
                for chunk in _chunks(new, 1000):
                    try:
                        connection.execute(insert(table), chunk)
                    except IntegrityError as exc:
                        raise ValueError(f"team log refused rows of {name}: {_first_line(exc, target_url)}") from None
    finally:
        source.dispose()
        target.dispose()
    return result


def verify_log(source_url: str, target_url: str) -> list[Tally]:
    """Per table: the local rows and their copies in the team log (matched by natural key), counted and digested."""
    from sqlalchemy import create_engine

    source, target = create_engine(source_url), create_engine(target_url)
    tallies = []
    try:
        for name, (table, key) in _log_tables().items():
            columns = [c.name for c in table.columns if c.name not in ("id", "open_key")]
            rows = [] if _missing_file(source_url) else _rows(source, table)
            keys = {tuple(row[k] for k in key) for row in rows}
            copies = [row for row in _rows(target, table) if tuple(row[k] for k in key) in keys]
            tallies.append(
                _tally(f"{name} rows", [_canonical(r, columns) for r in rows], [_canonical(r, columns) for r in copies])
            )
    finally:
        source.dispose()
        target.dispose()
    return tallies


# ------------------------------------------------------------------------------------------ CLI
def _out(text: str = "") -> None:
    print(text, flush=True)  # noqa: T201 - the CLI's own output


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in ([str(cell) for cell in row] for row in rows)
    )


def _check_targets(tracking: str | None, log: str | None, experiment: str) -> None:
    checks: list[Callable[[], list[str]]] = []
    if tracking and is_server_uri(tracking):
        checks.append(lambda: check_tracking_server(tracking, experiment))
    elif tracking:
        checks.append(lambda: check_database(tracking, "MLflow backend store"))
    if log:
        checks.append(lambda: check_database(log, "inference log", inference_log=True))
    problems = []
    for check in checks:
        try:
            for line in check():
                _out(f"  {line}")
        except _Unusable as exc:
            problems.append(str(exc))
    if problems:
        raise RemoteServiceError(problems)


def migrate(settings: Settings, to_tracking: str | None, to_log: str | None, dry_run: bool = False) -> list[Tally]:
    """Copy the configured (local) stores into the team stores and verify them; see the module docstring.

    Args:
        settings: Where the local MLflow store and inference log are (the source).
        to_tracking: The team's tracking URI, or None to leave MLflow alone.
        to_log: The team's inference-log URL, or None to leave the log alone.
        dry_run: Only count what would be copied.

    Returns:
        The verification table (empty in a dry run).

    Raises:
        ValueError: A target is a local store or the same as the source.
        RemoteServiceError: A target service cannot be used.
        MigrationMismatch: Counts or digests differ after the copy.
    """
    if not (to_tracking or to_log):
        raise ValueError("nothing to migrate: give --to-tracking-uri and/or --to-inference-log")
    for target, source, flag in (
        (to_tracking, settings.tracking_uri, "--to-tracking-uri"),
        (to_log, settings.inference_log_url, "--to-inference-log"),
    ):
        if target and (is_local_uri(target) or target == source):
            raise ValueError(f"{flag} {hide_password(target)}: the target must be a shared store, not a local one")
    _out("Checking the team services")
    _check_targets(to_tracking, to_log, settings.mlflow.experiment_name)
    plan = [["what", "local", "already in team", "to copy" if dry_run else "copied"]]
    tallies: list[Tally] = []
    verb = "Planning" if dry_run else "Copying"
    if to_tracking:
        _out(f"{verb} {hide_password(settings.tracking_uri)} -> {hide_password(to_tracking)}")
        plan += _copy_tracking(settings.tracking_uri, to_tracking, dry_run, tallies)
    if to_log:
        _out(f"{verb} {hide_password(settings.inference_log_url)} -> {hide_password(to_log)}")
        copied = migrate_log(settings.inference_log_url, to_log, dry_run)
        plan += [[f"{name} rows", *counts] for name, counts in copied.tables.items()]
        if not dry_run:
            _out("Verifying the inference log copy")
            tallies += verify_log(settings.inference_log_url, to_log)
    _out(f"\n{_table(plan)}")
    if dry_run:
        _out("\ndry run: nothing was copied")
        return []
    rows = [["what", "local", "team", "local digest", "team digest", ""]]
    rows += [
        [t.item, t.source, t.target, t.source_digest[:12], t.target_digest[:12], "ok" if t.ok else "MISMATCH"]
        for t in tallies
    ]
    _out(f"\n{_table(rows)}")
    bad = [t.item for t in tallies if not t.ok]
    if bad:
        raise MigrationMismatch(f"the team stores differ from the local ones in: {', '.join(bad)} (see the table)")
    _out("\nverified: every count and digest matches")
    return tallies


def _copy_tracking(source: str, target: str, dry_run: bool, tallies: list[Tally]) -> list[list]:
    """Copy (or plan) the MLflow store; appends the verification to ``tallies``; returns the plan's rows."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # else one "View run" line per run
    migration = TrackingMigration(source, target, dry_run, progress=lambda message: _out(f"  {message}"))
    copy = migration.run()
    if not dry_run:
        _out("Verifying the MLflow copy")
        tallies += verify_tracking(migration)
    return [
        ["runs", copy.runs + copy.runs_present, copy.runs_present, copy.runs],
        ["logged models", copy.logged_models + copy.models_present, copy.models_present, copy.logged_models],
        ["model versions", copy.model_versions + copy.versions_present, copy.versions_present, copy.model_versions],
        ["aliases", copy.aliases + copy.aliases_present, copy.aliases_present, copy.aliases],
    ]


def main(argv: list[str] | None = None) -> None:
    from mlops.cli import exit_codes, setup_logging
    from mlops.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m mlops.team", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="the active profile and a check of each shared service (exit 2 if unusable)")
    move = commands.add_parser("migrate", help="copy the local MLflow store and inference log into the team stores")
    move.add_argument("--to-tracking-uri", metavar="URL", help="the team's MLflow tracking server (http://host:port)")
    move.add_argument("--to-inference-log", metavar="URL", help="the team's inference log (postgresql://...)")
    move.add_argument("--dry-run", action="store_true", help="count what would be copied, write nothing")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    with exit_codes():
        settings = load_settings()
        if args.command == "check":
            for line in check_remote_services(settings):
                _out(line)
            return
        migrate(settings, args.to_tracking_uri, args.to_inference_log, args.dry_run)


if __name__ == "__main__":
    main()
