"""``python -m mlops.team migrate``: a populated laptop store copied into a real team server and database,
verified by counts and digests, safe to re-run, resuming an interrupted copy and failing on a mismatch."""

from __future__ import annotations

import re

import mlflow
import pytest
from sqlalchemy import create_engine, select, text, update

from mlops.config import MODEL_KEYS
from mlops.deployment import deploy
from mlops.monitoring.inference_log import (
    alerts_table,
    canary_table,
    feedback_table,
    inference_table,
    read_log,
    system_table,
)
from mlops.team import COMPLETE, MARKER
from mlops.tracking import load_registered_pickle
from mlops.training import run_training

from ..test_deployment import settings_for
from .conftest import mlflow_server, run_cli

LOG_TABLES = {
    table.name: table for table in (inference_table, feedback_table, alerts_table, system_table, canary_table)
}


def plan(stdout: str) -> dict[str, tuple[int, ...]]:
    """The copy table of the output: what -> (local, already in team, copied or to copy)."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(
            r"^(runs|logged models|model versions|aliases|(\w+) rows)\s+(\d+)\s+(\d+)\s+(\d+)$", line.strip()
        )
        if match:
            found[match[1]] = tuple(int(match[i]) for i in (3, 4, 5))
    return found


def verification(stdout: str) -> dict[str, str]:
    """The verification table: what -> ok | MISMATCH."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^(.+?)\s+\d+\s+\d+\s+[0-9a-f]{12}\s+[0-9a-f]{12}\s+(ok|MISMATCH)$", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


@pytest.fixture(scope="module")
def laptop(tmp_path_factory, tiny_data_dir):
    """A local store as a laptop has it: trained, deployed, a run with a stepped metric, traffic, alerts."""
    root = tmp_path_factory.mktemp("laptop")
    settings = settings_for(root, tiny_data_dir)
    run_training(settings)
    assert deploy(settings).outcome == "deployed"
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment_name)
    run = client.create_run(experiment.experiment_id, run_name="history")
    for step in range(5):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    traffic = run_cli(["-m", "mlops.monitoring.simulate", "--qps", "100", "--duration", "1"], settings)
    assert traffic.returncode == 0, traffic.stderr[-2000:]
    checked = run_cli(["-m", "mlops.monitoring", "check"], settings)  # alerts and a system sample
    assert checked.returncode in (0, 1), checked.stderr[-2000:]
    return settings


@pytest.fixture(scope="module")
def migrated(laptop, postgres, tmp_path_factory):
    """Every phase in order, each output kept: dry run, copy, re-run, resume an interrupted run, tampered copy."""
    root = tmp_path_factory.mktemp("team_migration")
    backend = postgres.create_database("team_migration_mlflow")
    log_url = postgres.create_database("team_migration_log")
    with mlflow_server(backend, root) as server:
        command = ["-m", "mlops.team", "migrate", "--to-tracking-uri", server.url, "--to-inference-log", log_url]
        team = mlflow.MlflowClient(server.url, server.url)
        phases = {"dry": run_cli([*command, "--dry-run"], laptop)}
        phases["after_dry"] = {
            "experiment": team.get_experiment_by_name(laptop.mlflow.experiment_name),
            "rows": len(read_log(log_url)),
        }
        phases["first"] = run_cli(command, laptop)
        phases["second"] = run_cli(command, laptop)
        experiment = team.get_experiment_by_name(laptop.mlflow.experiment_name)
        victim = team.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'history'")[0]
        team.delete_tag(victim.info.run_id, COMPLETE)  # as if the copy had stopped half-way
        phases["resumed"] = run_cli(command, laptop)
        first_request = read_log(laptop.inference_log_url, limit=1)["request_id"][0]
        engine = create_engine(log_url)
        with engine.begin() as connection:
            changed = connection.execute(
                update(inference_table).where(inference_table.c.request_id == first_request).values(intent="tampered")
            )
            assert changed.rowcount == 1
        engine.dispose()
        phases["tampered"] = run_cli(command, laptop)
        yield {"phases": phases, "server": server, "log_url": log_url, "team": team, "postgres": postgres}


def test_dry_run_counts_everything_and_copies_nothing(migrated, laptop):
    dry = migrated["phases"]["dry"]
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = plan(dry.stdout)
    local_runs = mlflow.MlflowClient(laptop.tracking_uri).search_runs(
        [mlflow.MlflowClient(laptop.tracking_uri).get_experiment_by_name(laptop.mlflow.experiment_name).experiment_id]
    )
    assert counts["runs"] == (len(local_runs), 0, len(local_runs))
    assert counts["model versions"] == counts["logged models"] == counts["aliases"] == (5, 0, 5)
    assert counts["inference_log rows"][0] == counts["inference_log rows"][2] == len(read_log(laptop.inference_log_url))
    assert "dry run: nothing was copied" in dry.stdout
    assert migrated["phases"]["after_dry"] == {"experiment": None, "rows": 0}


def test_copy_is_verified_by_counts_and_digests(migrated):
    first = migrated["phases"]["first"]
    assert first.returncode == 0, first.stderr[-3000:]
    checks = verification(first.stdout)
    expected = {
        "experiments",
        "runs",
        "params",
        "metrics",
        "tags",
        "dataset inputs",
        "run artifact files",
        "logged models",
        "logged model files",
        "registered models",
        "model versions",
        "aliases",
        *(f"{table} rows" for table in LOG_TABLES),
    }
    assert set(checks) == expected and set(checks.values()) == {"ok"}, checks
    assert "verified: every count and digest matches" in first.stdout
    assert migrated["postgres"].password not in first.stdout + first.stderr


def test_the_team_stores_hold_the_laptop_store(migrated, laptop):
    """Checked here without the tool's own verification: runs, history, registry, a loadable champion, log rows."""
    team, local = migrated["team"], mlflow.MlflowClient(laptop.tracking_uri, laptop.tracking_uri)
    local_experiment = local.get_experiment_by_name(laptop.mlflow.experiment_name)
    team_experiment = team.get_experiment_by_name(laptop.mlflow.experiment_name)
    local_runs = {run.info.run_id: run for run in local.search_runs([local_experiment.experiment_id])}
    copies = [run for run in team.search_runs([team_experiment.experiment_id]) if MARKER in run.data.tags]
    assert sorted(run.data.tags[MARKER] for run in copies) == sorted(local_runs)
    by_source = {run.data.tags[MARKER]: run for run in copies}
    history = next(run for run in copies if run.info.run_name == "history")
    points = team.get_metric_history(history.info.run_id, "loss")
    assert [(p.step, p.value) for p in sorted(points, key=lambda p: p.step)] == [(s, 1.0 / (s + 1)) for s in range(5)]
    for source_id, run in local_runs.items():  # nested runs point at their parent's copy
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            assert by_source[source_id].data.tags["mlflow.parentRunId"] == by_source[parent].info.run_id
    for name in (*MODEL_KEYS, "travel_chatbot"):
        local_champion = local.get_model_version_by_alias(name, "champion")
        team_champion = team.get_model_version_by_alias(name, "champion")
        assert team_champion.tags[MARKER] == local_champion.source.removeprefix("models:/")
        assert team_champion.tags.get("sha256") == local_champion.tags.get("sha256")
    server = migrated["server"].url
    mlflow.set_tracking_uri(server)
    mlflow.set_registry_uri(server)
    model = load_registered_pickle("llm_model")  # downloaded through the server, sha256 verified
    assert model.predict(["Is it safe to travel to Kandy?"])[0]
    engine = create_engine(migrated["log_url"])
    with engine.connect() as connection:
        for table in LOG_TABLES:
            team_rows = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            assert team_rows == len(read_log(laptop.inference_log_url, table=LOG_TABLES[table])), table
        team_ids = set(connection.execute(select(inference_table.c.request_id)).scalars())
    engine.dispose()
    assert team_ids == set(read_log(laptop.inference_log_url)["request_id"]) and len(team_ids) >= 50


def test_a_rerun_copies_nothing_and_still_verifies(migrated):
    second = migrated["phases"]["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    counts = plan(second.stdout)
    assert counts and all(copied == 0 for _, _, copied in counts.values()), counts
    assert set(verification(second.stdout).values()) == {"ok"}


def test_an_interrupted_run_copy_is_copied_again(migrated):
    resumed = migrated["phases"]["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = plan(resumed.stdout)
    assert counts["runs"][2] == 1 and counts["inference_log rows"][2] == 0
    assert set(verification(resumed.stdout).values()) == {"ok"}
    team = migrated["team"]
    experiment = team.get_experiment_by_name("travel_chatbot_models")
    copies = team.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'history'")
    assert len(copies) == 1 and copies[0].data.tags[COMPLETE] == "true"


def test_a_copy_that_differs_is_reported_and_exits_1(migrated):
    tampered = migrated["phases"]["tampered"]
    assert tampered.returncode == 1
    assert verification(tampered.stdout)["inference_log rows"] == "MISMATCH"
    assert "the team stores differ from the local ones in: inference_log rows" in tampered.stderr
    assert "Traceback" not in tampered.stderr
