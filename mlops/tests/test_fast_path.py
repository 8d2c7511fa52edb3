"""The fast path trains only models whose data, config or code changed, and records the reuse in MLflow."""

from __future__ import annotations

import mlflow

from mlops.config import MODEL_KEYS
from mlops.data import load_datasets
from mlops.fingerprint import model_fingerprints
from mlops.pipeline import run_fast_path
from mlops.tracking import configure_tracking

from .test_deployment import settings_for


def test_cold_warm_changed_config_and_forced_runs(tmp_path, tiny_data_dir):
    settings = settings_for(tmp_path, tiny_data_dir)
    steps: list[str] = []

    cold = run_fast_path(settings, steps.append)
    assert set(cold.trained) == set(MODEL_KEYS) and not cold.reused
    assert cold.deployment.outcome == "deployed"

    warm = run_fast_path(settings, steps.append)
    assert warm.reused == cold.trained and not warm.trained and warm.training is None
    assert warm.deployment.outcome == "unchanged"
    configure_tracking(settings)
    tags = mlflow.get_run(warm.run_id).data.tags
    assert tags["reused.llm_model"] == cold.trained["llm_model"] and tags["fast_path"] == "true"

    changed = settings_for(tmp_path, tiny_data_dir, {
        "training_config.yaml": {"training": {"llm_model": {"C": 0.5}}},
        "deployment_config.yaml": {"deployment": {"gates": {"tolerance": 1.0}}},  # tiny data: a change may score lower
    })  # fmt: skip
    partial = run_fast_path(changed, steps.append)
    assert list(partial.trained) == ["llm_model"]
    assert set(partial.reused) == {"embedding_model", "few_shot_model", "rag_model"}
    assert partial.deployment.manifest["models"]["llm_model"]["version"] == partial.trained["llm_model"]

    forced = run_fast_path(changed, steps.append, force=True)
    assert set(forced.trained) == set(MODEL_KEYS)


def test_a_changed_data_file_retrains_exactly_the_models_that_read_it(tmp_path, tiny_data_dir, copy_data):
    data_dir = copy_data(tiny_data_dir)
    open_gates = {"deployment_config.yaml": {"deployment": {"gates": {"tolerance": 1.0}}}}
    settings = settings_for(tmp_path, data_dir, open_gates)
    cold = run_fast_path(settings, lambda _: None)
    path = data_dir / "retrieval_eval.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one retrieval query fewer

    after = run_fast_path(settings_for(tmp_path, data_dir, open_gates), lambda _: None)

    assert list(after.trained) == ["rag_model"]  # only rag_model reads retrieval_eval.csv
    assert after.reused == {key: cold.trained[key] for key in MODEL_KEYS if key != "rag_model"}
    assert after.deployment.manifest["models"]["rag_model"]["version"] == after.trained["rag_model"]


def test_fingerprints_follow_their_inputs(tmp_path, tiny_data_dir, copy_data):
    settings = settings_for(tmp_path, tiny_data_dir)
    base = model_fingerprints(settings, load_datasets(tiny_data_dir))
    assert base == model_fingerprints(settings, load_datasets(tiny_data_dir))

    data_dir = copy_data(tiny_data_dir)
    path = data_dir / "retrieval_eval.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # drop one retrieval query
    after = model_fingerprints(settings, load_datasets(data_dir))
    assert after["rag_model"] != base["rag_model"]  # only rag_model reads retrieval_eval.csv (to tune on dev)
    assert {key: after[key] for key in after if key != "rag_model"} == {
        key: base[key] for key in base if key != "rag_model"
    }

    path = data_dir / "enhanced_sri_lanka_guide.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("Sigiriya", "Sigiriya Rock", 1), encoding="utf-8")
    changed = model_fingerprints(settings, load_datasets(data_dir))
    assert all(changed[key] != after[key] for key in changed)  # the knowledge base feeds every model

    path = data_dir / "courtesy_phrases.csv"
    path.write_text(path.read_text(encoding="utf-8") + "kia ora,hello,Maori\n", encoding="utf-8")
    translated = model_fingerprints(settings, load_datasets(data_dir))
    readers = {"llm_model", "few_shot_model"}  # the two intent models translate the phrases
    assert all(translated[key] != changed[key] for key in readers)
    assert all(translated[key] == changed[key] for key in translated if key not in readers)
