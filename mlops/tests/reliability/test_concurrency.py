"""Concurrency: two deployments at once, a stale lock, 16 query threads while deployments swap the
models, and the dashboard's reads while the inference log is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import mlflow
import pytest

from mlops.chatbot import TravelChatbot
from mlops.config import PROJ_ROOT
from mlops.dashboards import sources
from mlops.deployment import deploy, rollback
from mlops.monitoring import stats
from mlops.monitoring.inference_log import InferenceLog, read_log
from mlops.tracking import configure_tracking, log_pickled_model
from mlops.training import EXAMPLE_QUERIES, run_training

from ..conftest import cli_env
from ..test_deployment import always_answers, settings_for
from .conftest import DEPLOY_SCRIPT, manifest_bytes

QUERIES = ["hello", "Where can I see leopards in Sri Lanka?", "best time to visit kandy", "thanks a lot",
           "cheap beaches in asia", "do i need a visa for japan", "write me a poem about cars", "bye"]  # fmt: skip


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, tiny_data_dir):
    """v1 deployed, then llm_model v2 (answers 'weather' to everything) force-deployed over it."""
    settings = settings_for(tmp_path_factory.mktemp("swap"), tiny_data_dir)
    run_training(settings)
    deploy(settings)
    v1 = TravelChatbot.load(settings.models_dir)
    configure_tracking(settings)
    path = settings.root / "weather.pkl"
    joblib.dump(always_answers("weather"), path)
    with mlflow.start_run(run_name="always-weather"):
        log_pickled_model("llm_model", path, EXAMPLE_QUERIES, register=True)
    deploy(settings, force=True)
    v2 = TravelChatbot.load(settings.models_dir)
    assert v2.versions["llm_model"] == "2" and v1.versions["llm_model"] == "1"
    expected_v1 = {query: v1.process_query(query)["intent"] for query in QUERIES}
    assert list(expected_v1.values()).count("weather") < len(QUERIES)  # the two sets are told apart by the answer
    return settings, v1.versions, v2.versions, expected_v1


def test_16_threads_while_deployments_swap_get_whole_model_sets_and_lose_no_log_row(two_sets, tmp_path):
    settings, v1, v2, expected_v1 = two_sets
    bot = TravelChatbot.load(settings.models_dir)
    log = InferenceLog(tmp_path / "log.db", bot.versions)
    bot.on_response = log
    answers: list[tuple[str, dict, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        i = 0
        while not stop.is_set():
            query = QUERIES[(worker + i) % len(QUERIES)]
            bot.refresh()  # what the chat UI does before each query
            result, versions = bot.answer(query)
            with lock:
                answers.append((query, versions, result["intent"]))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(6):  # each rollback swaps v1 <-> v2 with one atomic manifest write
            time.sleep(0.3)
            rollback(settings)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    log.close()

    seen = Counter(json.dumps(versions, sort_keys=True) for _, versions, _ in answers)
    assert set(seen) == {json.dumps(v1, sort_keys=True), json.dumps(v2, sort_keys=True)}, seen  # both, nothing else
    for query, versions, intent in answers:
        if versions["llm_model"] == "2":
            assert intent == "weather", (query, versions, intent)
        else:
            assert intent == expected_v1[query], (query, versions, intent)
    rows = read_log(tmp_path / "log.db")
    assert log.failed == 0 and len(rows) == len(answers)
    assert Counter(rows["versions"]) == seen  # each row carries the versions that answered it


def test_two_deployments_at_once_one_waits_its_turn_or_names_the_holder(two_sets):
    settings, *_ = two_sets
    runs = [subprocess.Popen([sys.executable, DEPLOY_SCRIPT, "--force"], env=cli_env(settings), cwd=PROJ_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outcomes = [(run.pid, *run.communicate(timeout=300)) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 3]), outcomes
    for run, (_, _, err) in zip(runs, outcomes, strict=True):
        if run.returncode == 3:
            other = next(r.pid for r in runs if r is not run)
            assert f"another deployment is running (PID {other})" in err
    TravelChatbot.load(settings.models_dir).process_query("hello")


def test_a_stale_lock_left_by_a_killed_process_is_recovered(two_sets):
    settings, *_ = two_sets
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from pathlib import Path; from mlops.deployment import deployment_lock\n"
         f"with deployment_lock(Path({str(settings.models_dir)!r})):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=PROJ_ROOT,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (settings.models_dir / ".lock").read_text().strip() == str(holder.pid)  # the dead PID is still written
    before = manifest_bytes(settings)
    assert deploy(settings).outcome == "unchanged"  # flock died with its holder: no manual clean-up needed
    assert manifest_bytes(settings) == before


def test_dashboard_reads_while_two_writers_fill_the_log(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    writers = [InferenceLog(tmp_path / "log.db", {"llm_model": str(n)}, batch_size=50) for n in range(2)]
    per_thread, threads = 600, 4
    done = threading.Event()
    counts, errors = [], []

    def write(n: int) -> None:
        log = writers[n % 2]
        for i in range(per_thread):
            intent = "out_of_scope" if i % 7 == 0 else "weather"
            log.record({"query": f"q{n}-{i} <b>", "intent": intent, "confidence": 0.8, "latency_ms": 2.0 + i % 5,
                        "sources": []})  # fmt: skip
            if i % 100 == 0:
                time.sleep(0.01)

    def read() -> None:
        engine = None
        while not done.is_set():
            try:
                engine = engine or sources.log_engine(url)
                frame = sources.read_window(engine, since=0)
                stats.traffic_per_minute(frame), stats.latency_over_time(frame), stats.intent_mix(frame)
                stats.oos_rate(frame), stats.top_unanswered(frame), stats.latency_quantile(frame)
                counts.append(len(frame))
            except Exception as exc:  # any failure of a read under write load is the finding
                errors.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(threads)))
    for log in writers:
        log.close()
    done.set()
    reader.join(timeout=30)
    assert not errors, errors[:3]
    assert len(counts) > 5 and counts == sorted(counts)  # every read saw a consistent, growing log
    assert len(read_log(tmp_path / "log.db")) == per_thread * threads


def _barrier(folder: Path) -> str:
    """Code defining ``wait_for_all(name)``: a process marks itself ready, then waits until all four are.

    The four then leave it within milliseconds of each other, however slowly each one started (a fixed
    head start could let one finish before another began, and the race would go untested).
    """
    return (
        "import os, pathlib, time\n"
        f"def wait_for_all(name, folder={str(folder)!r}):\n"
        "    here = pathlib.Path(folder) / name; here.mkdir(parents=True, exist_ok=True)\n"
        "    (here / str(os.getpid())).touch()\n"
        "    deadline = time.time() + 90\n"
        "    while len(list(here.iterdir())) < 4:\n"
        "        if time.time() > deadline: raise SystemExit(f'barrier {name}: the other processes never came')\n"
        "        time.sleep(0.002)\n"
    )


def _four_processes_succeed(code: str, settings) -> list[tuple[str, str]]:
    """Run ``code`` in four Python processes at once with the CLI's environment; all must exit 0."""
    runs = [subprocess.Popen([sys.executable, "-c", code], env=cli_env(settings), cwd=PROJ_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err[-1500:] for _, err in outcomes]
    return outcomes


def test_pipelines_checking_one_store_at_once_all_succeed(tmp_path, tiny_data_dir):
    """Four processes run the store check at the same instant, three rounds, each on a new experiment.

    Each creates the experiment if it is missing and inserts the store-check tag: without handling, the
    losers of either race failed (about one round in two on this machine).
    """
    settings = settings_for(tmp_path, tiny_data_dir)
    configure_tracking(settings)  # the store's tables exist; the experiments of the rounds do not
    code = _barrier(tmp_path / "barrier") + (
        "import mlflow; from mlops.config import load_settings; from mlops.pipeline import check_tracking_store\n"
        "settings = load_settings(); mlflow.MlflowClient(settings.tracking_uri).search_experiments()\n"
        "for n in range(3):\n"
        "    wait_for_all(f'round{n}')\n"
        "    named = settings.mlflow.model_copy(update={'experiment_name': f'round{n}'})\n"
        "    print(check_tracking_store(settings.model_copy(update={'mlflow': named})).experiment_id)"
    )
    outcomes = _four_processes_succeed(code, settings)
    rounds = {tuple(out.split()) for out, _ in outcomes}
    assert len(rounds) == 1 and len(set(rounds.pop())) == 3  # each round: one experiment, shared by all four


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path, tiny_data_dir):
    """Two trainings started together on a fresh machine: each opens the not-yet-existing SQLite store.

    MLflow creates and migrates the schema on first use; run by two processes at once, the loser failed
    with "duplicate column name: step" (seen with two `train_chatbot_models.py` started together).
    """
    settings = settings_for(tmp_path, tiny_data_dir)  # nothing has opened its store yet
    db = settings.root / "mlruns" / "mlflow.db"
    assert not db.exists()
    code = _barrier(tmp_path / "barrier") + (
        "import mlflow; from mlops.config import load_settings; from mlops.tracking import configure_tracking\n"
        "settings = load_settings()\n"
        "wait_for_all('open')\n"
        "store = configure_tracking(settings)\n"
        "print(store.experiment_id, len(mlflow.MlflowClient().search_registered_models()))"
    )
    outcomes = _four_processes_succeed(code, settings)
    assert len({out for out, _ in outcomes}) == 1  # one experiment, shared by all four
