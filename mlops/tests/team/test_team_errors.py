"""Shared services that are down or refuse us: fast, clear errors (URL with the password hidden, what failed,
what to check), exit code 2 and no traceback, from the pipeline, the status view and the team CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from mlops.config import PROJ_ROOT
from mlops.team import RemoteServiceError, check_remote_services

from ..conftest import cli_env, free_port
from .conftest import run_cli, team_settings

SECRET = "s3cret-Pw"


@pytest.fixture(scope="module")
def log_url(postgres) -> str:
    return postgres.create_database("team_errors_log")


def local_tracking(root) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


def assert_clean_failure(done, *expected: str) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    for text in expected:
        assert text in done.stderr, f"{text!r} not in:\n{done.stderr}"
    assert "Traceback" not in out
    assert SECRET not in out


def test_pipeline_with_the_tracking_server_down_stops_in_seconds(tmp_path, tiny_data_dir, log_url):
    port = free_port()  # nothing listens there
    settings = team_settings(tmp_path, f"http://127.0.0.1:{port}", log_url, tiny_data_dir)
    started = time.monotonic()
    done = run_cli(["mlops_pipeline.py", "--no-launch"], settings)
    assert time.monotonic() - started < 60  # MLflow's own client would retry for minutes
    assert_clean_failure(
        done,
        "error: team profile: 1 shared service is not usable:",
        f"MLflow tracking server http://127.0.0.1:{port}: not reachable: connection refused",
        "Check that `mlflow server` runs there",
        "MLFLOW_TRACKING_URI",
    )
    assert not settings.results_dir.exists()  # nothing was trained


def test_pipeline_with_postgresql_down_names_it_with_the_password_hidden(tmp_path, tiny_data_dir):
    port = free_port()
    url = f"postgresql://mlops:{SECRET}@127.0.0.1:{port}/mlops_monitoring"
    settings = team_settings(tmp_path, local_tracking(tmp_path), url, tiny_data_dir)
    done = run_cli(["mlops_pipeline.py", "--no-launch"], settings)
    assert_clean_failure(
        done,
        f"inference log postgresql://mlops:***@127.0.0.1:{port}/mlops_monitoring: ",
        "Connection refused",
        f"is PostgreSQL running and listening on 127.0.0.1:{port}? (pg_isready -h 127.0.0.1 -p {port})",
    )


def test_both_down_are_reported_together_by_the_team_check(tmp_path, tiny_data_dir):
    tracking, database = free_port(), free_port()
    settings = team_settings(
        tmp_path,
        f"http://127.0.0.1:{tracking}",
        f"postgresql://mlops:{SECRET}@127.0.0.1:{database}/mon",
        tiny_data_dir,
    )
    done = run_cli(["-m", "mlops.team", "check"], settings)
    assert_clean_failure(done, "2 shared services are not usable", f":{tracking}: not reachable", f":{database}/mon:")


def test_wrong_password_and_missing_database_say_what_to_check(tmp_path, tiny_data_dir, postgres):
    wrong = team_settings(tmp_path / "a", local_tracking(tmp_path), postgres.url(password=SECRET), tiny_data_dir)
    with pytest.raises(RemoteServiceError) as failed:
        check_remote_services(wrong)
    (problem,) = failed.value.problems
    assert "password authentication failed" in problem and "PGPASSWORD or ~/.pgpass" in problem
    assert SECRET not in str(failed.value) and "postgres:***@" in problem
    missing = team_settings(tmp_path / "b", local_tracking(tmp_path), postgres.url("no_such_db"), tiny_data_dir)
    with pytest.raises(RemoteServiceError) as failed:
        check_remote_services(missing)
    assert f"createdb -h 127.0.0.1 -p {postgres.port} -U postgres no_such_db" in str(failed.value)


def test_status_view_marks_a_down_service_and_still_shows_the_rest(tmp_path, tiny_data_dir, log_url):
    port = free_port()
    settings = team_settings(tmp_path, f"http://127.0.0.1:{port}", log_url, tiny_data_dir)
    done = run_cli(["run_mlops.py"], settings, timeout=120, stdin="5\n6\n")
    assert done.returncode == 0, done.stderr[-2000:]
    profile = done.stdout.split("== Profile", 1)[1].split("==", 1)[0]
    assert f"NOT USABLE: MLflow tracking server http://127.0.0.1:{port}: not reachable" in profile
    assert "== System health" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_migrate_refuses_a_local_target_and_a_server_that_is_down(tmp_path, tiny_data_dir):
    settings = team_settings(tmp_path, local_tracking(tmp_path), str(tmp_path / "log.db"), tiny_data_dir)
    local = run_cli(["-m", "mlops.team", "migrate", "--to-inference-log", f"sqlite:///{tmp_path}/other.db"], settings)
    assert_clean_failure(local, "the target must be a shared store, not a local one")
    port = free_port()
    down = run_cli(["-m", "mlops.team", "migrate", "--to-tracking-uri", f"http://127.0.0.1:{port}"], settings)
    assert_clean_failure(down, f"MLflow tracking server http://127.0.0.1:{port}: not reachable")


def test_the_password_can_stay_out_of_the_yaml(tmp_path, tiny_data_dir, postgres, log_url):
    """What docs/TEAM.md recommends: no password in the URL, libpq reads PGPASSWORD (or ~/.pgpass)."""
    bare = log_url.replace(f":{postgres.password}@", "@")
    settings = team_settings(tmp_path, local_tracking(tmp_path), bare, tiny_data_dir)
    env = {key: value for key, value in cli_env(settings).items() if key != "PGPASSWORD"}
    env["PGPASSFILE"] = str(tmp_path / "no.pgpass")
    check = [sys.executable, "-m", "mlops.team", "check"]
    without = subprocess.run(check, cwd=PROJ_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert without.returncode == 2 and "PGPASSWORD or ~/.pgpass" in without.stderr
    env["PGPASSWORD"] = postgres.password
    with_env = subprocess.run(check, cwd=PROJ_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert with_env.returncode == 0, with_env.stderr
    assert "tables present, writable" in with_env.stdout


def test_a_laptop_that_never_logged_migrates_no_rows_and_creates_no_file(tmp_path, tiny_data_dir, postgres):
    settings = team_settings(tmp_path, local_tracking(tmp_path), str(tmp_path / "log.db"), tiny_data_dir)
    target = postgres.create_database("team_errors_empty")
    done = run_cli(["-m", "mlops.team", "migrate", "--to-inference-log", target], settings)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^inference_log rows\s+0\s+0\s+0$", done.stdout, re.MULTILINE), done.stdout
    assert "verified: every count and digest matches" in done.stdout
    assert not (tmp_path / "log.db").exists()
