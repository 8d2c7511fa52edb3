"""The services the launchers run: started on free ports, health-checked, stopped with nothing left behind.

These start real processes (Streamlit, ``mlflow ui``) bound to 127.0.0.1 and stop them by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import psutil
import pytest

from mlops import services
from mlops.config import PROJ_ROOT
from mlops.deployment import deploy
from mlops.training import run_training

from .conftest import cli_env, free_port, launch_chromium, needs_chromium, restore_sigint
from .test_deployment import settings_for


def with_ports(root: Path, tiny_data_dir: Path):
    """Settings whose three services listen on free ports inside ``root``."""
    return settings_for(
        root,
        tiny_data_dir,
        {
            "monitoring_config.yaml": {"monitoring": {"port": free_port()}},
            "mlflow_config.yaml": {"mlflow": {"ui_port": free_port()}},
            "deployment_config.yaml": {"deployment": {"chatbot_port": free_port()}},
        },
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    settings = with_ports(tmp_path_factory.mktemp("services"), tiny_data_dir)
    run_training(settings)
    deploy(settings)
    return settings


def process_tree(pid: int) -> list[psutil.Process]:
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def assert_all_gone(processes: list[psutil.Process], timeout: float = 15.0) -> None:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def test_detached_services_answer_health_checks_and_stop_cleanly(deployed):
    env = cli_env(deployed)
    cli = [sys.executable, "-m", "mlops.services"]
    out = subprocess.run([*cli, "start", "mlflow_ui", "chatbot", "--detach"], env=env, capture_output=True,
                         text=True, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr
    states = {name: services.read_state(deployed, name) for name in ("mlflow_ui", "chatbot")}
    assert all(states.values()), out.stdout
    family = [p for state in states.values() for p in process_tree(state.pid)]
    try:
        for state in states.values():
            assert state.url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(state.health_url, timeout=5) as reply:
                assert reply.status == 200
        # starting again finds them running and starts nothing new
        again = subprocess.run([*cli, "start", "chatbot", "--detach"], env=env, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert again.returncode == 0 and "was already running" in again.stdout
        status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count("running") == 2 and "Monitoring dashboard   stopped" in status.stdout
    finally:
        stopped = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and "MLflow UI, Chatbot UI" in stopped.stdout
    assert_all_gone(family)
    assert not list(deployed.services_dir.glob("*.json")), "state files must go with the services"


def test_a_port_in_use_names_its_holder_and_starts_nothing(deployed):
    port = deployed.deployment.chatbot_port
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        out = subprocess.run([sys.executable, "-m", "mlops.services", "start"], env=cli_env(deployed),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert f"port {port} on 127.0.0.1 is in use by pid {os.getpid()}" in out.stderr
    assert "deployment.chatbot_port in deployment_config.yaml" in out.stderr
    assert "Traceback" not in out.stderr
    assert services.status(deployed) and all(row["state"] == "stopped" for row in services.status(deployed))


def test_a_stale_state_file_is_not_mistaken_for_a_running_service(deployed):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    deployed.services_dir.mkdir(parents=True, exist_ok=True)
    path = deployed.services_dir / "chatbot.json"
    record = {"name": "chatbot", "title": "Chatbot UI", "pid": dead.pid, "create_time": time.time(),
              "url": "http://127.0.0.1:1", "health_url": "http://127.0.0.1:1/", "started_at": "", "log": "",
              "command": []}  # fmt: skip
    path.write_text(json.dumps(record))
    assert services.read_state(deployed, "chatbot") is None
    assert not path.exists()
    # a recycled PID (alive, but started at another time) is not ours either: never signalled
    path.write_text(json.dumps({**record, "pid": os.getpid(), "create_time": 1.0}))
    assert services.stop_all(deployed, ["chatbot"]) == []


def test_full_pipeline_launches_every_service_and_ctrl_c_stops_them(tmp_path, tiny_data_dir):
    settings = with_ports(tmp_path, tiny_data_dir)
    pipeline = subprocess.Popen(
        [sys.executable, str(PROJ_ROOT / "mlops_pipeline.py")], env=cli_env(settings), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=restore_sigint,
    )  # fmt: skip
    lines: list[str] = []
    try:
        for line in pipeline.stdout:
            lines.append(line)
            if "Press Ctrl+C" in line:
                break
        output = "".join(lines)
        assert "Press Ctrl+C" in output, output
        states = [services.read_state(settings, name) for name in ("dashboard", "mlflow_ui", "chatbot", "monitor")]
        assert all(states), output
        assert "Alert monitor          running    checks alerts every" in output
        for state in states[:3]:
            assert f"{state.url}" in output  # the status report names every service's URL
            with urllib.request.urlopen(state.health_url, timeout=5) as reply:
                assert reply.status == 200
        assert "✓ Starting Monitoring dashboard" in output and "Pipeline finished in" in output
        family = [p for state in states for p in process_tree(state.pid)]
        pipeline.send_signal(signal.SIGINT)
        rest = pipeline.communicate(timeout=60)[0]
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            services.stop_all(settings)
    assert pipeline.returncode == 0, rest
    assert "All services started here are stopped." in rest
    assert_all_gone(family)


def test_pipeline_no_launch_deploys_tracks_and_starts_nothing(tmp_path, tiny_data_dir):
    settings = with_ports(tmp_path, tiny_data_dir)
    out = subprocess.run([sys.executable, str(PROJ_ROOT / "mlops_pipeline.py"), "--no-launch"],
                         env=cli_env(settings), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Services not started (--no-launch)" in out.stdout
    manifest = json.loads((settings.models_dir / "manifest.json").read_text())
    assert set(manifest["models"]) == {"embedding_model", "llm_model", "few_shot_model", "rag_model"}
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 5  # one parent run and a nested run per model
    assert all(row["state"] == "stopped" for row in services.status(settings))


@needs_chromium
def test_mlflow_ui_shows_the_experiment_runs_and_registered_models_with_aliases(deployed, tmp_path):
    from playwright.sync_api import sync_playwright

    [(state, started)] = services.start_all(deployed, ["mlflow_ui"])
    assert started
    try:
        api = state.url + "/ajax-api/2.0/mlflow"
        request = urllib.request.Request(
            api + "/experiments/search", data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as reply:
            experiments = {e["name"]: e["experiment_id"] for e in json.load(reply)["experiments"]}
        experiment_id = experiments[deployed.mlflow.experiment_name]
        llm_run = mlflow.MlflowClient(deployed.tracking_uri).search_runs(
            [experiment_id], "tags.mlflow.runName = 'llm_model'"
        )[0]
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # MLflow 3 opens on its GenAI view unless told the workflow is model training
            page.goto(f"{state.url}/#/experiments/{experiment_id}?workflowType=machine_learning")
            page.get_by_text("training-").first.wait_for(timeout=60_000)  # the parent run of the training
            page.screenshot(path=str(tmp_path / "mlflow_runs.png"))
            page.get_by_text("deployment-").first.wait_for(timeout=30_000)
            page.goto(
                f"{state.url}/#/experiments/{experiment_id}/runs/{llm_run.info.run_id}?workflowType=machine_learning"
            )
            page.get_by_text("oos_recall").first.wait_for(timeout=60_000)  # the run's metrics
            page.goto(f"{state.url}/#/models/llm_model?workflowType=machine_learning")
            page.get_by_text("champion").first.wait_for(timeout=60_000)
            page.goto(f"{state.url}/#/models?workflowType=machine_learning")
            for name in ("embedding_model", "llm_model", "few_shot_model", "rag_model", "travel_chatbot"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "mlflow_models.png"))
            browser.close()
    finally:
        services.stop_all(deployed, ["mlflow_ui"])
    assert services.read_state(deployed, "mlflow_ui") is None


def test_menu_option_4_launches_the_dashboard_detached_and_stop_ends_it(deployed):
    env = cli_env(deployed)
    out = subprocess.run([sys.executable, str(PROJ_ROOT / "run_mlops.py")], input="4\n5\n6\n", env=env,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    state = services.read_state(deployed, "dashboard")
    try:
        assert out.returncode == 0, out.stderr
        assert state is not None, out.stdout
        assert f"Monitoring dashboard started: {state.url}" in out.stdout
        assert f"Monitoring dashboard   running    {state.url}" in out.stdout  # option 5 sees it
        family = process_tree(state.pid)
    finally:
        stopped = subprocess.run([sys.executable, "-m", "mlops.services", "stop", "dashboard"], env=env,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "stopped: Monitoring dashboard" in stopped.stdout
    assert_all_gone(family)


def test_with_a_tracking_server_the_server_is_the_mlflow_ui(tmp_path, tiny_data_dir):
    server = "http://127.0.0.1:5050"
    settings = settings_for(tmp_path, tiny_data_dir, {"mlflow_config.yaml": {"mlflow": {"tracking_uri": server}}})
    assert "mlflow_ui" not in services.service_specs(settings)
    with pytest.raises(ValueError, match="tracking server http://127.0.0.1:5050 is the UI"):
        services.select(settings, ["mlflow_ui"])
    assert services.mlflow_runs_url(settings, "7").startswith(f"{server}/#/experiments/7?")
    assert any(line.startswith("MLflow UI") and server in line for line in services.status_lines(settings))


def test_the_pipeline_reports_a_busy_port_before_it_trains_anything(deployed):
    port = deployed.deployment.chatbot_port
    client = mlflow.MlflowClient(deployed.tracking_uri)
    experiment = client.get_experiment_by_name(deployed.mlflow.experiment_name)
    runs_before = len(client.search_runs([experiment.experiment_id]))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        out = subprocess.run([sys.executable, "mlops_pipeline.py"], env=cli_env(deployed), cwd=PROJ_ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert f"port {port} on 127.0.0.1 is in use by pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr
    assert "Training" not in out.stdout + out.stderr
    assert len(client.search_runs([experiment.experiment_id])) == runs_before  # nothing was trained or logged


def test_status_of_services_not_running_says_where_they_would_serve(tmp_path, tiny_data_dir):
    lines = services.status_lines(settings_for(tmp_path, tiny_data_dir))
    chatbot = next(line for line in lines if line.startswith("Chatbot UI"))
    assert "stopped" in chatbot and "(would serve http://127.0.0.1:" in chatbot, lines
    assert any(line.startswith("Alert monitor") and "checks alerts every" in line for line in lines), lines


def test_services_that_ignore_sigterm_are_stopped_together_then_killed(tmp_path, tiny_data_dir):
    """Ctrl+C waits once for all services, not once per service; what ignores SIGTERM is killed."""
    settings = settings_for(tmp_path, tiny_data_dir)
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
    )
    states = []
    for name in ("dashboard", "mlflow_ui", "chatbot"):
        process = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True, stdout=subprocess.PIPE)
        assert process.stdout.readline() == b"up\n"  # its SIGTERM handler is in place
        states.append(services.ServiceState(name, name, process.pid, psutil.Process(process.pid).create_time(),
                                            "", "", "", "", []))  # fmt: skip
    family = [psutil.Process(state.pid) for state in states]
    started = time.monotonic()
    stopped = services.stop_states(settings, states, timeout=2.0)
    elapsed = time.monotonic() - started
    assert [state.name for state in stopped] == ["dashboard", "mlflow_ui", "chatbot"]
    assert_all_gone(family, timeout=5)
    assert elapsed < 4.5, elapsed  # one shared 2 s wait, then SIGKILL; one wait per service would take >= 6 s
    assert services.stop_states(settings, states, timeout=2.0) == []  # already gone: nothing to stop
