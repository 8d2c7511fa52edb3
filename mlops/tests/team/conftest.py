"""A real PostgreSQL and real MLflow tracking servers for the team-profile tests.

The ``postgres`` session fixture uses ``$MLOPS_TEST_POSTGRES_URL`` (a superuser URL) when it is set;
otherwise it initdb's a cluster in a temp folder and starts it on a free port of 127.0.0.1 (as the
``postgres`` system user when the tests run as root: PostgreSQL refuses root), then stops it by PID.
Without either the team tests are skipped with the reason, unless ``MLOPS_REQUIRE_POSTGRES=1``
(what CI sets) turns the skip into a failure.
"""

from __future__ import annotations

import copy
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlops.config import PROJ_ROOT, Settings, load_settings

from ..conftest import FAST_TRAINING, free_port, merge, wait_for_http
from ..test_deployment import OPEN_GATES

TEAM_DIR = PROJ_ROOT / "mlops" / "profiles" / "team"
# no background job runner (GenAI evaluation, trace archival): a lighter server on a shared 2-core machine
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
CONFIG_FILES = ("mlflow_config.yaml", "training_config.yaml", "deployment_config.yaml", "monitoring_config.yaml")


def _unavailable(reason: str):
    if os.environ.get("MLOPS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"MLOPS_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True)
    return versions[0].parent if versions else None


@dataclass
class Postgres:
    """A PostgreSQL server the tests may create databases in."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (dropped first when a previous run left it) and its URL."""
        import psycopg

        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _from_env(url: str) -> Postgres:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return Postgres(
        parsed.host or "127.0.0.1", parsed.port or 5432, parsed.username or "postgres", parsed.password or ""
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if os.environ.get("MLOPS_TEST_POSTGRES_URL"):
        yield _from_env(os.environ["MLOPS_TEST_POSTGRES_URL"])
        return
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _unavailable(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
            "apt-get install postgresql, or set MLOPS_TEST_POSTGRES_URL"
        )
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
    server = None
    try:
        if run_as is not None:
            os.chown(folder, run_as.pw_uid, run_as.pw_gid)
        user = {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []} if run_as else {}
        password = secrets.token_urlsafe(12)
        (folder / "pw").write_text(password + "\n")
        if run_as is not None:
            os.chown(folder / "pw", run_as.pw_uid, run_as.pw_gid)
        subprocess.run(
            [
                bin_dir / "initdb",
                "-D",
                folder / "data",
                "-U",
                "postgres",
                "--pwfile",
                folder / "pw",
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=folder,
            **user,
        )
        port = free_port()
        with open(folder / "server.log", "wb") as log:
            server = subprocess.Popen(
                [
                    bin_dir / "postgres",
                    "-D",
                    folder / "data",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-k",
                    folder,
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
                **user,
            )
        found = Postgres("127.0.0.1", port, "postgres", password)
        _wait_for_postgres(found, server, folder / "server.log")
        yield found
    finally:
        if server is not None:
            _stop(server, signal.SIGINT, group=False)  # SIGINT to the postmaster: PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_postgres(server: Postgres, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, group: bool = True, timeout: float = 30.0) -> None:
    """Stop a process we started in its own session by its PID (with its group, whose id is that PID)."""
    if process.poll() is None:
        (os.killpg if group else os.kill)(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    try:  # children (uvicorn workers, MLflow's job runner) may outlive a leader that has exited
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class TrackingServer:
    url: str
    artifacts: Path
    process: subprocess.Popen


@contextmanager
def mlflow_server(backend_url: str, folder: Path) -> Iterator[TrackingServer]:
    """``mlflow server`` on a free port of 127.0.0.1, backed by ``backend_url``, serving artifacts from ``folder``."""
    artifacts = folder / "shared_artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "mlflow_server.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_url,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,
            env={**env, "MLFLOW_DISABLE_TELEMETRY": "true", **SERVER_ENV},
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=180, log=log)
        yield TrackingServer(f"http://127.0.0.1:{port}", artifacts, process)
    finally:
        _stop(process)


def team_settings(
    root: Path, tracking_uri: str, inference_log: str, data_dir: Path, extra: dict | None = None
) -> Settings:
    """The committed team overlay (mlops/profiles/team) copied into ``root/configs`` for one test host.

    The services' URLs replace the overlay's, every path points inside ``root`` and training is tiny.
    """
    config_dir = root / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    overrides = copy.deepcopy({**FAST_TRAINING, **OPEN_GATES})
    merge(
        overrides,
        {
            "mlflow_config.yaml": {
                "mlflow": {"tracking_uri": tracking_uri, "artifact_location": str(root / "mlruns" / "artifacts")}
            },
            "training_config.yaml": {"training": {"data_dir": str(data_dir), "results_dir": str(root / "results")}},
            "deployment_config.yaml": {
                "deployment": {"models_dir": str(root / "models"), "services_dir": str(root / "services")}
            },
            "monitoring_config.yaml": {
                "monitoring": {
                    "inference_log": inference_log,
                    "alert_log": str(root / "alerts.log"),
                    "drift_reference_dir": str(root / "monitoring"),
                }
            },
        },
    )
    merge(overrides, extra or {})
    for name in CONFIG_FILES:
        data = yaml.safe_load((TEAM_DIR / name).read_text())
        merge(data, overrides.get(name, {}))
        (config_dir / name).write_text(yaml.safe_dump(data))
    return load_settings(config_dir, env={}, root=root)


def run_cli(args: list[str], settings: Settings, timeout: float = 240, stdin: str | None = None):
    """A launcher or ``python -m`` command as a user runs it, with this host's config folder."""
    from ..conftest import cli_env

    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJ_ROOT,
        env=cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
