"""Deployment: gates, champion comparison, atomic promotion, rollback, history, integrity on load."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pytest

from mlops.chatbot import DeploymentError, TravelChatbot
from mlops.config import MODEL_KEYS, PROJ_ROOT
from mlops.deployment import DeploymentLocked, DeploymentRefused, deploy, live_at, read_history, rollback
from mlops.modeling.intent import PLACE_TOKEN
from mlops.modeling.serving import IntentTwin
from mlops.taxonomy import INTENTS
from mlops.tracking import configure_tracking, log_pickled_model
from mlops.training import EXAMPLE_QUERIES, run_training

from .conftest import FAST_TRAINING, cli_env, free_port, merge, wait_for_http, write_settings

OPEN_GATES = {
    "deployment_config.yaml": {
        "deployment": {
            "gates": {
                "min_accuracy": 0.0, "min_oos_recall": 0.0, "min_hit_at_3": 0.0,
                "min_triplet_accuracy": 0.0, "min_few_shot_accuracy": 0.0, "tolerance": 0.01,
            }
        }
    }
}  # fmt: skip


def settings_for(root: Path, tiny_data_dir: Path, extra: dict | None = None):
    """Fast training and open gates, with ``extra`` merged in key by key."""
    overrides = copy.deepcopy({**FAST_TRAINING, **OPEN_GATES})
    merge(overrides, extra or {})
    return write_settings(root, overrides, data_dir=tiny_data_dir)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("deploy")
    settings = settings_for(root, tiny_data_dir)
    run_training(settings)
    report = deploy(settings)
    return settings, report


def manifest_bytes(settings) -> bytes:
    return (settings.models_dir / "manifest.json").read_bytes()


def test_deploy_writes_manifest_files_aliases_and_history(deployed):
    settings, report = deployed
    assert report.outcome == "deployed"
    manifest = json.loads(manifest_bytes(settings))
    assert datetime.fromisoformat(manifest["deployed_at"]).tzinfo is not None
    for key in MODEL_KEYS:
        entry = manifest["models"][key]
        assert entry["registered_model"] == key and entry["version"] == "1" and entry["run_id"]
        ((relative, digest),) = entry["files"].items()
        assert not Path(relative).is_absolute() and (settings.models_dir / relative).is_file()
        assert len(digest) == 64 and entry["metrics"]
    configure_tracking(settings)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("llm_model", "champion").version) == "1"
    assert (
        str(client.get_model_version_by_alias("travel_chatbot", "champion").version)
        == manifest["travel_chatbot_version"]
    )
    assert read_history(settings.models_dir)[-1]["outcome"] == "deployed"


def test_the_registered_travel_chatbot_pyfunc_answers(deployed):
    settings, _ = deployed
    configure_tracking(settings)
    import pandas as pd

    bot = mlflow.pyfunc.load_model("models:/travel_chatbot@champion")
    out = bot.predict(pd.DataFrame({"text": ["hello", "Where can I see leopards in Sri Lanka?"]}))
    assert list(out.columns) == ["answer", "intent", "confidence", "sources"]
    assert out["answer"].str.len().min() > 10


def test_an_unchanged_candidate_is_a_no_op(deployed):
    settings, _ = deployed
    before = manifest_bytes(settings)
    report = deploy(settings)
    assert report.outcome == "unchanged" and "already deployed" in report.reason
    assert manifest_bytes(settings) == before
    history = (settings.models_dir / "history.jsonl").read_bytes()
    assert deploy(settings, dry_run=True).outcome == "unchanged"
    assert (settings.models_dir / "history.jsonl").read_bytes() == history  # a dry run writes nothing


def test_chatbot_loads_and_answers_with_the_design_fields(deployed):
    settings, _ = deployed
    bot = TravelChatbot.load(settings.models_dir)
    for query in ["Where can I see leopards in Sri Lanka?", "", "   ", "x" * 10_000, "ලංකාවේ කොළඹ 🐘🐘", "مرحبا"]:
        result = bot.process_query(query)
        assert set(result) == {"answer", "intent", "confidence", "sources", "latency_ms"}
        assert isinstance(result["answer"], str) and result["answer"]
        assert 0.0 <= result["confidence"] <= 1.0 and result["latency_ms"] >= 0
        assert all({"name", "score"} <= set(source) for source in result["sources"])


def test_serving_imports_no_torch_and_no_training_code(deployed):
    settings, _ = deployed
    code = (
        "import sys; from mlops.chatbot import TravelChatbot\n"
        f"bot = TravelChatbot.load({str(settings.models_dir)!r}); bot.process_query('beaches in sri lanka')\n"
        "heavy = ('torch', 'sentence_transformers', 'mlops.training', 'transformers', 'sklearn')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJ_ROOT)


def test_the_served_chatbot_pyfunc_imports_no_torch_and_no_sklearn(deployed, tmp_path):
    """What a `mlflow models serve` worker loads: the downloaded model folder, in a fresh process."""
    settings, _ = deployed
    configure_tracking(settings)
    local = mlflow.artifacts.download_artifacts("models:/travel_chatbot@champion", dst_path=str(tmp_path / "bot"))
    code = (
        "import sys, mlflow.pyfunc, pandas as pd\n"
        f"bot = mlflow.pyfunc.load_model({local!r})\n"
        "out = bot.predict(pd.DataFrame({'text': ['where can i see leopards in sri lanka']}))\n"
        "assert len(out) == 1 and out['answer'][0], out\n"
        "bad = [m for m in ('torch', 'sentence_transformers', 'transformers', 'sklearn', 'mlops.training')"
        " if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJ_ROOT, env=cli_env(settings))


def test_nothing_deployed_gives_a_clear_error(tmp_path):
    with pytest.raises(
        DeploymentError, match="nothing is deployed .* run `python mlops/scripts/deploy_chatbot_models.py`"
    ):
        TravelChatbot.load(tmp_path)


def _copy_deployment(settings, tmp_path) -> Path:
    import shutil

    target = tmp_path / "models"
    shutil.copytree(settings.models_dir, target)
    return target


def test_a_tampered_file_is_refused_before_unpickling(deployed, tmp_path):
    settings, _ = deployed
    models_dir = _copy_deployment(settings, tmp_path)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    ((relative, _),) = manifest["models"]["llm_model"]["files"].items()
    data = bytearray((models_dir / relative).read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the middle of the file
    (models_dir / relative).write_bytes(bytes(data))
    with pytest.raises(DeploymentError, match="differs from the manifest"):
        TravelChatbot.load(models_dir)
    (models_dir / relative).unlink()
    with pytest.raises(DeploymentError, match="missing"):
        TravelChatbot.load(models_dir)


def test_a_manifest_pointing_outside_models_is_refused(deployed, tmp_path):
    settings, _ = deployed
    models_dir = _copy_deployment(settings, tmp_path)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"not a pickle")
    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["models"]["llm_model"]["files"] = {"../evil.pkl": "0" * 64}
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeploymentError, match="points outside"):
        TravelChatbot.load(models_dir)


def test_gate_failure_refuses_with_metric_value_and_threshold(tmp_path, tiny_data_dir):
    settings = settings_for(tmp_path, tiny_data_dir, {
        "deployment_config.yaml": {"deployment": {"gates": {"min_accuracy": 0.99, "min_hit_at_3": 0.0,
                                   "min_oos_recall": 0.0, "min_triplet_accuracy": 0.0, "min_few_shot_accuracy": 0.0}}}
    })  # fmt: skip
    run_training(settings, ["llm_model", "embedding_model", "rag_model", "few_shot_model"])
    with pytest.raises(DeploymentRefused, match=r"llm_model v1: accuracy 0\.\d+ is below the gate 0\.990"):
        deploy(settings)
    assert not (settings.models_dir / "manifest.json").exists()
    assert read_history(settings.models_dir)[-1]["outcome"] == "refused"


def always_answers(label: str) -> IntentTwin:
    """A real serving intent model that answers ``label`` to every query: a registered, clearly worse candidate.

    Built from the serving class itself (no n-gram block, all weight in the intercept), so it loads through
    the chatbot's restricted unpickler like any trained model.
    """
    intercept = np.where(np.asarray(INTENTS) == label, 5.0, 0.0)
    return IntentTwin(None, PLACE_TOKEN, [], np.zeros((0, len(INTENTS))), intercept, 1.0, INTENTS, 0.0)


def test_worse_candidate_is_refused_then_forced_then_rolled_back(tmp_path, tiny_data_dir):
    settings = settings_for(tmp_path, tiny_data_dir)
    run_training(settings)
    first = deploy(settings)
    assert first.outcome == "deployed"
    champion_bytes = manifest_bytes(settings)

    configure_tracking(settings)
    path = tmp_path / "bad.pkl"
    joblib.dump(always_answers("weather"), path)
    with mlflow.start_run(run_name="bad"):
        log_pickled_model("llm_model", path, EXAMPLE_QUERIES, register=True)

    dry = deploy(settings, dry_run=True, force=True)
    assert dry.outcome == "dry_run" and manifest_bytes(settings) == champion_bytes
    with pytest.raises(DeploymentRefused, match=r"llm_model v2: accuracy .* worse than champion v1"):
        deploy(settings)
    assert manifest_bytes(settings) == champion_bytes

    forced = deploy(settings, force=True)
    assert forced.outcome == "deployed" and forced.manifest["models"]["llm_model"]["version"] == "2"
    assert TravelChatbot.load(settings.models_dir).process_query("sunny?")["intent"] == "weather"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("llm_model", "previous").version) == "1"

    back = rollback(settings)
    assert back.manifest["models"]["llm_model"]["version"] == "1"
    assert str(client.get_model_version_by_alias("llm_model", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("llm_model", "previous").version) == "2"
    bot = TravelChatbot.load(settings.models_dir)
    assert bot.versions["llm_model"] == "1"
    outcomes = [record["outcome"] for record in read_history(settings.models_dir)]
    assert outcomes == ["deployed", "refused", "deployed", "rolled_back"]

    before_force = datetime.fromisoformat(read_history(settings.models_dir)[2]["at"])
    assert live_at(settings.models_dir, before_force)["versions"]["llm_model"] == "2"
    assert live_at(settings.models_dir, datetime.now(UTC))["versions"]["llm_model"] == "1"
    assert live_at(settings.models_dir, datetime(2000, 1, 1, tzinfo=UTC)) is None


def test_rollback_without_previous_is_a_clear_error(deployed):
    settings, _ = deployed
    with pytest.raises(DeploymentError, match="no previous deployment"):
        rollback(settings)


def test_a_second_deployment_waits_for_the_lock(deployed):
    settings, _ = deployed
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from mlops.deployment import deployment_lock\n"
         f"with deployment_lock(Path({str(settings.models_dir)!r})):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DeploymentLocked, match=f"PID {holder.pid}"):
            deploy(settings)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert deploy(settings).outcome == "unchanged"  # the lock died with its holder


def test_deploy_cli_exit_codes(deployed, tmp_path):
    settings, _ = deployed
    env = {**os.environ, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}
    script = str(PROJ_ROOT / "mlops" / "scripts" / "deploy_chatbot_models.py")
    ok = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "unchanged" in ok.stdout
    bad = subprocess.run([sys.executable, script, "--rollback", "--dry-run"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--dry-run cannot be combined" in bad.stderr


def test_queries_from_many_threads_all_land_in_the_inference_log(deployed, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from mlops.monitoring.inference_log import InferenceLog, read_log

    settings, _ = deployed
    bot = TravelChatbot.load(settings.models_dir)
    log = InferenceLog(tmp_path / "log.db", bot.versions)
    bot.on_response = log
    queries = [f"{q} #{i}" for i in range(25) for q in ("hello", "beaches in sri lanka", "write a poem")]
    with ThreadPoolExecutor(max_workers=8) as pool:  # 75 queries answered by 8 threads at once
        answers = dict(zip(queries, pool.map(bot.process_query, queries), strict=True))
    log.close()
    rows = read_log(tmp_path / "log.db")
    assert len(rows) == len(queries) and set(rows["query"]) == set(queries)
    assert all(answers[row.query]["intent"] == row.intent for row in rows.itertuples())
    assert rows["versions"].iloc[0] == json.dumps(bot.versions, sort_keys=True)


def test_mlflow_models_serve_answers_http_queries(deployed, tmp_path):
    import urllib.request

    settings, _ = deployed
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}  # fmt: skip
    mlflow_bin = str(Path(bin_dir) / "mlflow")
    server = subprocess.Popen(
        [mlflow_bin, "models", "serve", "-m", "models:/travel_chatbot@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, timeout=90, log=tmp_path / "serve.log")
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [["hello!"], ["leopards in sri lanka"]]}})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            predictions = json.loads(reply.read())["predictions"]
        assert [p["intent"] for p in predictions][0] == "greeting"
        assert all(p["answer"] for p in predictions)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)


def test_killing_a_deployment_at_any_moment_leaves_a_whole_deployment(tmp_path, tiny_data_dir):
    settings = settings_for(tmp_path, tiny_data_dir)
    run_training(settings)
    deploy(settings)
    configure_tracking(settings)
    env = {**os.environ, "MLOPS_CONFIG_DIR": str(settings.root / "configs")}
    script = str(PROJ_ROOT / "mlops" / "scripts" / "deploy_chatbot_models.py")
    for delay in (1.0, 2.0, 2.6, 3.2, 3.8, 4.5):
        manifest = json.loads(manifest_bytes(settings))
        with mlflow.start_run(run_name="same-models-again"):  # new versions, so the deploy has work to do
            for key, entry in manifest["models"].items():
                ((relative, _),) = entry["files"].items()
                log_pickled_model(key, settings.models_dir / relative, EXAMPLE_QUERIES, register=True)
        victim = subprocess.Popen([sys.executable, script, "--force"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        victim.kill()
        victim.wait()
        bot = TravelChatbot.load(settings.models_dir)  # verifies every file of whatever manifest is live
        assert bot.process_query("hello")["intent"]
    assert deploy(settings, force=True).outcome in ("deployed", "unchanged")
    assert not list((settings.models_dir / "releases").glob(".staging-*"))
    assert len(list((settings.models_dir / "releases").iterdir())) <= 2


def test_a_registered_model_this_code_cannot_load_is_a_clear_error(tmp_path, tiny_data_dir, monkeypatch):
    from mlops.deployment import fetch_candidates

    settings = settings_for(tmp_path, tiny_data_dir)  # its own store: nothing else sees this version
    module = tmp_path / "vanished_module.py"
    module.write_text("class Gone:\n    def predict(self, texts):\n        return ['x'] * len(texts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanished_module

    joblib.dump(vanished_module.Gone(), tmp_path / "gone.pkl")
    configure_tracking(settings)
    with mlflow.start_run(run_name="old-format"):
        version = log_pickled_model("llm_model", tmp_path / "gone.pkl", EXAMPLE_QUERIES, register=True)["version"]
    monkeypatch.delitem(sys.modules, "vanished_module")
    module.unlink()
    with pytest.raises(DeploymentError, match=rf"models:/llm_model/{version} was trained by another version"):
        fetch_candidates(["llm_model"])


def test_a_models_folder_kept_across_a_new_tracking_store_deploys_and_rolls_back(tmp_path, tiny_data_dir, caplog):
    """The store is replaced, models/ kept: the old deployment's version numbers mean nothing in the new one."""
    first = settings_for(tmp_path / "a", tiny_data_dir)
    run_training(first)
    first_release = deploy(first).manifest["release"]
    same_models = {"deployment_config.yaml": {"deployment": {"models_dir": str(first.models_dir)}}}
    second = settings_for(tmp_path / "b", tiny_data_dir, same_models)
    run_training(second)
    run_training(second, models=["llm_model"])  # the new store's llm_model v2: a number the old store also has
    caplog.set_level("WARNING", logger="mlops.deployment")

    report = deploy(second, force=True)

    assert report.outcome == "deployed" and report.manifest["previous"]["release"] == first_release
    assert "the previous deployment (release" in caplog.text and "another model registry" in caplog.text
    client = mlflow.MlflowClient()  # deploy() pointed MLflow at the second store

    def champion(name: str) -> str | None:
        try:
            return str(client.get_model_version_by_alias(name, "champion").version)
        except mlflow.exceptions.MlflowException:
            return None

    assert champion("llm_model") == "2" and champion("travel_chatbot") == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("llm_model", "previous")  # v1 of the *old* store must not be named

    assert rollback(second).manifest["release"] == first_release  # files and manifest: the old deployment
    TravelChatbot.load(first.models_dir).process_query("beaches in sri lanka")
    assert champion("llm_model") is None and champion("travel_chatbot") is None  # nothing of this store serves
    assert rollback(second).manifest["release"] == report.manifest["release"]
    assert champion("llm_model") == "2" and champion("travel_chatbot") == "1"


def test_deploying_reads_the_serving_twin_logged_with_each_version_and_imports_no_sklearn(deployed):
    """Training logs each model's numpy twin beside it; a deployment then needs neither sklearn nor torch."""
    settings, report = deployed
    configure_tracking(settings)
    client = mlflow.MlflowClient()
    for key, candidate in report.candidates.items():
        tags = client.get_model_version(key, candidate.version).tags
        assert tags["serving_sha256"] == candidate.sha256, key  # the deployed bytes are the logged twin
    code = (
        "import sys\n"
        "from mlops.config import load_settings\n"
        "from mlops.deployment import deploy\n"
        "report = deploy(load_settings(), force=True)\n"
        "assert report.outcome == 'deployed', report.outcome\n"
        "bad = [m for m in ('sklearn', 'torch', 'sentence_transformers') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJ_ROOT, env=cli_env(settings))


def test_a_tampered_or_unloadable_serving_twin_in_the_registry_is_refused(tmp_path, tiny_data_dir, monkeypatch):
    from mlops.deployment import fetch_candidates

    settings = settings_for(tmp_path, tiny_data_dir)  # its own store
    run_training(settings, models=["llm_model"])
    (twin,) = (settings.root / "mlruns").rglob("artifacts/llm_model.serving.pkl")
    good = twin.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01
    twin.write_bytes(bytes(data))
    with pytest.raises(DeploymentError, match=r"models:/llm_model/1: serving twin sha256 \w+ differs from the logged"):
        fetch_candidates(["llm_model"])

    twin.write_bytes(good)
    import mlops.modeling.serving as serving

    monkeypatch.delattr(serving, type(fetch_candidates(["llm_model"])["llm_model"].model).__name__)
    with pytest.raises(
        DeploymentError, match=r"models:/llm_model/1 \(serving twin\): cannot be loaded by this version"
    ):
        fetch_candidates(["llm_model"])
    monkeypatch.undo()

    # a version registered before twins were logged (no tag): converted here, checked like a logged twin
    configure_tracking(settings)
    mlflow.MlflowClient().delete_model_version_tag("llm_model", "1", "serving_sha256")
    converted = fetch_candidates(["llm_model"])["llm_model"]
    queries = ["hello there", "best time to visit kyoto", "how do i fix my car"]
    assert np.allclose(converted.model.predict_proba(queries), pickle.loads(good).predict_proba(queries))


def test_the_serving_unpickler_refuses_classes_a_model_module_merely_imports():
    """`mlops.modeling.embedding` imports `pathlib.Path`: reachable by that name, but not a model class."""
    from mlops.chatbot.bot import load_serving_model

    forged = b"cmlops.modeling.embedding\nPath\n(S'/etc/passwd'\ntR."
    with pytest.raises(DeploymentError, match=r"refusing to load global 'mlops.modeling.embedding.Path'"):
        load_serving_model(forged, "forged", "n/a")


def test_the_serving_unpickler_refuses_the_test_suites_own_classes():
    """Only classes defined in `mlops.modeling` load: the suite's helpers ship with the package, but are not models."""
    from mlops.chatbot.bot import load_serving_model

    class_pickle = pickle.dumps(_Plain())
    assert b"mlops.tests.test_deployment" in class_pickle
    with pytest.raises(DeploymentError, match=r"refusing to load global 'mlops.tests.test_deployment._Plain'"):
        load_serving_model(class_pickle, "forged", "n/a")
    # the suite's stand-in for a bad model is a real serving class, so it still loads
    twin = load_serving_model(pickle.dumps(always_answers("weather")), "stand-in", "n/a")
    assert [label for label, _ in twin.predict_with_confidence(["hello", "visa for japan"])] == ["weather"] * 2


def test_a_registry_twin_with_a_forged_sha256_tag_still_cannot_run_code(tmp_path, tiny_data_dir):
    """Whoever can rewrite both the artifact and its tag still only gets serving model classes unpickled."""
    from mlops.deployment import fetch_candidates
    from mlops.integrity import sha256_bytes

    settings = settings_for(tmp_path, tiny_data_dir)
    run_training(settings, models=["llm_model"])
    (twin,) = (settings.root / "mlruns").rglob("artifacts/llm_model.serving.pkl")
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(marker))
    twin.write_bytes(evil)
    configure_tracking(settings)
    mlflow.MlflowClient().set_model_version_tag("llm_model", "1", "serving_sha256", sha256_bytes(evil))
    with pytest.raises(
        DeploymentError, match="refusing to load global 'posix.system'|refusing to load global 'os.system'"
    ):
        fetch_candidates(["llm_model"])
    assert not marker.exists()


class _Plain:
    """A harmless class of the test suite (allowed by the serving unpickler before 2026-12-01)."""


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
