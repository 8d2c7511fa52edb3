"""MLflow tier: a real training run in a temp SQLite store logs everything and registers loadable models."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from mlops.config import MODEL_KEYS
from mlops.integrity import sha256_bytes
from mlops.tracking import compare_runs, configure_tracking
from mlops.training import HEADLINE_METRICS, run_training

from .conftest import FAST_TRAINING, write_settings
from .test_deployment import _RunsCode


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("tracking")
    settings = write_settings(root, FAST_TRAINING, data_dir=tiny_data_dir)
    steps = []
    results = run_training(settings, progress=steps.append)
    return settings, results, steps


def test_results_json_has_the_design_fields(trained):
    settings, results, steps = trained
    files = list(settings.results_dir.glob("training_results_*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["run_id"] == results["run_id"] and len(saved["data_fingerprint"]) == 64
    assert saved["started_at"].endswith("+00:00")
    for key in MODEL_KEYS:
        for metric in HEADLINE_METRICS[key]:
            assert 0.0 <= saved["models"][key]["metrics"][metric] <= 1.0, (key, metric)
    assert any("Training rag_model" in step for step in steps)


def test_parent_run_with_one_nested_run_per_model(trained):
    settings, results, _ = trained
    configure_tracking(settings)
    client = mlflow.MlflowClient()
    parent = client.get_run(results["run_id"])
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{results['run_id']}'",
        output_format="list",
    )
    assert sorted(run.data.tags["model_key"] for run in children) == sorted(MODEL_KEYS)
    llm = next(run for run in children if run.data.tags["model_key"] == "llm_model")
    assert llm.data.params["C"] == "1.0" and "oos_threshold" in llm.data.params
    assert {"accuracy", "macro_f1", "oos_recall", "training_time_s"} <= set(llm.data.metrics)
    inputs = {d.dataset.name: d.dataset for d in llm.inputs.dataset_inputs}
    assert {"intents-train", "intents-val", "intents-test"} <= set(inputs)
    assert all(len(ds.digest) >= 8 for ds in inputs.values())
    artifacts = {a.path for a in client.list_artifacts(llm.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.csv", "evaluation/per_intent_report.json"} <= artifacts


def test_registered_models_load_and_predict(trained):
    settings, results, _ = trained
    configure_tracking(settings)
    llm = mlflow.pyfunc.load_model("models:/llm_model/1")
    out = llm.predict(pd.DataFrame({"text": ["hello there!", "do I need a visa for sri lanka"]}))
    assert list(out.columns) == ["intent", "confidence"] and out["confidence"].between(0, 1).all()
    rag = mlflow.pyfunc.load_model(f"models:/rag_model/{results['models']['rag_model']['version']}")
    assert rag.predict(pd.DataFrame({"text": ["sigiriya rock fortress"]}))["ids"][0]
    version = mlflow.MlflowClient().get_model_version("embedding_model", "1")
    assert version.tags["sha256"] == results["models"]["embedding_model"]["sha256"]
    # each registered model serves its numpy twin through the restricted unpickler, not the joblib file
    from mlops.modeling.serving import IntentTwin, RetrievalTwin

    assert isinstance(llm.unwrap_python_model().model, IntentTwin)
    assert isinstance(rag.unwrap_python_model().model, RetrievalTwin)


def test_a_registered_models_forged_twin_cannot_run_code(trained, tmp_path):
    """Whoever rewrites a logged twin and the sha256 in its MLmodel file still gets only model classes."""
    settings, _, _ = trained
    configure_tracking(settings)
    local = Path(mlflow.artifacts.download_artifacts("models:/llm_model/1", dst_path=str(tmp_path)))
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(marker))
    (local / "artifacts" / "llm_model.serving.pkl").write_bytes(evil)
    mlmodel = local / "MLmodel"
    config = yaml.safe_load(mlmodel.read_text())
    old = config["flavors"]["python_function"]["config"]["serving_sha256"]
    mlmodel.write_text(mlmodel.read_text().replace(old, sha256_bytes(evil)))
    with pytest.raises(Exception, match="refusing to load global"):
        mlflow.pyfunc.load_model(str(local))
    assert not marker.exists()


def test_compare_runs_table(trained):
    settings, _, _ = trained
    configure_tracking(settings)
    table = compare_runs(settings.mlflow.experiment_name, ["accuracy", "mrr"])
    assert set(table["model"]) == set(MODEL_KEYS)
    assert {"run_id", "accuracy", "mrr"} <= set(table.columns)


def test_legacy_folder_store_is_migrated(tmp_path, tiny_data_dir):
    legacy = tmp_path / "mlruns"
    script = (
        f"import mlflow; mlflow.set_tracking_uri({legacy.as_uri()!r}); mlflow.set_experiment('travel_chatbot_models')\n"
        "with mlflow.start_run(run_name='old'): mlflow.log_metric('accuracy', 0.5)"
    )
    env = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)
    assert not (legacy / "mlflow.db").exists()
    settings = write_settings(tmp_path, data_dir=tiny_data_dir)
    configure_tracking(settings)
    assert (legacy / "mlflow.db").exists()
    runs = mlflow.search_runs(experiment_names=["travel_chatbot_models"], output_format="list")
    assert [run.data.metrics["accuracy"] for run in runs] == [0.5]


def test_runs_left_open_by_a_dead_process_are_closed_as_killed(tmp_path, tiny_data_dir):
    import socket

    from mlops.tracking import ORPHANED_TAG, close_orphaned_runs, owner_tags

    settings = write_settings(tmp_path, FAST_TRAINING, data_dir=tiny_data_dir)
    experiment_id = configure_tracking(settings).experiment_id
    client = mlflow.MlflowClient()
    code = "import os, psutil; print(os.getpid(), psutil.Process().create_time())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ours = owner_tags()
    runs = {
        "dead": {**ours, "mlops.pid": dead[0], "mlops.process_started": f"{float(dead[1]):.2f}"},
        "reused_pid": {**ours, "mlops.process_started": "1.00"},  # our PID, but another process's start time
        "alive": ours,
        "other_host": {**ours, "mlops.host": f"not-{socket.gethostname()}", "mlops.pid": dead[0]},
        "untagged": {},
    }
    ids = {name: client.create_run(experiment_id, tags=tags, run_name=name).info.run_id for name, tags in runs.items()}

    closed = close_orphaned_runs(experiment_id)

    assert sorted(closed) == sorted([ids["dead"], ids["reused_pid"]])
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead": "KILLED", "reused_pid": "KILLED", "alive": "RUNNING", "other_host": "RUNNING",
                      "untagged": "RUNNING"}  # fmt: skip
    assert f"process {dead[0]} on " in client.get_run(ids["dead"]).data.tags[ORPHANED_TAG]
    assert close_orphaned_runs(experiment_id) == []  # nothing left to close
