"""Team profile end to end: the pipeline against a real MLflow server on PostgreSQL with served artifacts,
two chatbot processes writing one PostgreSQL inference log, the status view and the dashboard reading it."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import mlflow
import pytest
from sqlalchemy import create_engine, func, select

from mlops.config import MODEL_KEYS, PROJ_ROOT
from mlops.monitoring.inference_log import feedback_table, inference_table
from mlops.tests.conftest import cli_env

from .conftest import mlflow_server, run_cli, team_settings

REGISTERED = (*MODEL_KEYS, "travel_chatbot")


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory, tiny_data_dir):
    """A tracking server on its own database and a log database; the pipeline run once from "host A"."""
    root = tmp_path_factory.mktemp("team_pipeline")
    backend = postgres.create_database("team_pipeline_mlflow")
    log_url = postgres.create_database("team_pipeline_log")
    with mlflow_server(backend, root) as server:
        settings = team_settings(root / "host_a", server.url, log_url, tiny_data_dir)
        pipeline = run_cli(["mlops_pipeline.py", "--no-launch"], settings)
        yield {
            "settings": settings,
            "server": server,
            "log_url": log_url,
            "pipeline": pipeline,
            "root": root,
            "postgres": postgres,
        }


def client(stack) -> mlflow.MlflowClient:
    url = stack["server"].url
    return mlflow.MlflowClient(tracking_uri=url, registry_uri=url)


def test_pipeline_reports_the_team_profile_and_its_checked_services(stack):
    done, postgres = stack["pipeline"], stack["postgres"]
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert re.search(
        r"profile\s+team: MLflow at http://127\.0\.0\.1:\d+ \(MLflow tracking server\), "
        r"inference log at postgresql://postgres:\*\*\*@127\.0\.0\.1:\d+/team_pipeline_log",
        done.stdout,
    )
    assert f"MLflow {mlflow.__version__}, tracking store writable, artifact store writable" in out
    assert re.search(
        r"inference log postgresql://postgres:\*\*\*@\S+: PostgreSQL 1\d\.\d+.*tables present, writable", out
    )
    assert postgres.password not in out
    assert "Traceback" not in out


def test_runs_registry_and_aliases_live_on_the_server_with_served_artifacts(stack):
    settings, server = stack["settings"], stack["server"]
    team = client(stack)
    experiment = team.get_experiment_by_name(settings.mlflow.experiment_name)
    # the server chose where artifacts go, not the client's folder
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = team.search_runs([experiment.experiment_id], max_results=100)
    nested = {run.data.tags["model_key"] for run in runs if "mlflow.parentRunId" in run.data.tags}
    assert nested == set(MODEL_KEYS)
    assert any(run.info.run_name.startswith("deployment-") for run in runs)
    for name in REGISTERED:
        assert str(team.get_model_version_by_alias(name, "champion").version) == "1", name
    # the artifacts are in the server's shared folder; nothing went to the client's local folder
    assert any(path.name == "MLmodel" for path in server.artifacts.rglob("MLmodel"))
    assert not (settings.root / "mlruns" / "artifacts").exists()
    # another host can load the champion through the server, its sha256 verified
    check = (
        "import mlflow, sys; from mlops.tracking import load_registered_pickle;"
        "mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1]);"
        "m = load_registered_pickle('llm_model'); print(m.predict(['Where can I see leopards in Sri Lanka?'])[0])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check, server.url],
        cwd=PROJ_ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip()


def test_two_chatbot_processes_write_one_log_without_losing_a_record(stack, postgres, tiny_data_dir):
    """Two simulators (the deployed bot + InferenceLog, as a chatbot process) start at once on an empty database."""
    log_url = postgres.create_database("team_two_bots")
    host_b = team_settings(
        stack["root"] / "host_b",
        stack["server"].url,
        log_url,
        tiny_data_dir,
        {"deployment_config.yaml": {"deployment": {"models_dir": str(stack["settings"].models_dir)}}},
    )
    command = [sys.executable, "-m", "mlops.monitoring.simulate", "--qps", "60", "--duration", "3", "--seed"]
    bots = [
        subprocess.Popen(
            [*command, str(seed)],
            cwd=PROJ_ROOT,
            env=cli_env(host_b),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [bot.communicate(timeout=120) for bot in bots]
    sent, votes = 0, 0
    for bot, (out, err) in zip(bots, outputs, strict=True):
        assert bot.returncode == 0, err[-2000:]
        match = re.search(r"wrote (\d+) queries and (\d+) votes to postgresql://postgres:\*\*\*@", out)
        assert match, out
        sent, votes = sent + int(match[1]), votes + int(match[2])
        assert postgres.password not in out + err
    assert sent >= 200
    engine = create_engine(log_url)
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(inference_table)).scalar()
        distinct = connection.execute(select(func.count(func.distinct(inference_table.c.request_id)))).scalar()
        pids = connection.execute(select(func.count(func.distinct(inference_table.c.pid)))).scalar()
        feedback = connection.execute(select(func.count()).select_from(feedback_table)).scalar()
    engine.dispose()
    assert rows == distinct == sent
    assert pids == 2
    assert feedback == votes


def test_status_view_shows_the_profile_and_the_services(stack):
    done = run_cli(["run_mlops.py"], stack["settings"], timeout=120, stdin="5\n6\n")
    assert done.returncode == 0, done.stderr[-2000:]
    profile = done.stdout.split("== Profile", 1)[1].split("==", 1)[0]
    assert "profile team: MLflow at http://127.0.0.1:" in profile
    assert f"MLflow {mlflow.__version__}, tracking store writable" in profile
    assert "PostgreSQL 1" in profile and "tables present, writable" in profile
    assert "NOT USABLE" not in profile
    assert stack["postgres"].password not in done.stdout + done.stderr


def test_dashboard_reads_the_shared_log_and_the_server(stack, monkeypatch):
    from mlops.tests.test_dashboard import metric, page

    settings = stack["settings"]
    engine = create_engine(stack["log_url"])
    with engine.begin() as connection:  # a few queries answered on another host
        connection.execute(
            inference_table.insert(),
            [
                {
                    "request_id": f"dash{i}",
                    "ts": time.time() - 60,
                    "query": "visa for Sri Lanka?",
                    "intent": "visa_requirements",
                    "confidence": 0.9,
                    "latency_ms": 3.0,
                    "n_sources": 1,
                    "top_source": "Kandy",
                    "answered": True,
                    "versions": "{}",
                    "pid": 4242,
                }
                for i in range(7)
            ],
        )
        in_window = connection.execute(
            select(func.count()).select_from(inference_table).where(inference_table.c.ts >= time.time() - 3600)
        ).scalar()
    engine.dispose()
    at = page(settings.root / "configs", monkeypatch)
    assert not at.exception
    assert in_window >= 7 and metric(at, "Requests") == str(in_window)
    frames = [frame.value for frame in at.dataframe]
    runs = next(f for f in frames if "run_name" in f.columns)
    assert set(runs["model"]) == set(MODEL_KEYS)
    deployed = next(f for f in frames if "alias" in f.columns)
    assert set(deployed["alias"]) == {"champion"}
