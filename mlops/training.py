"""Train the requested models, evaluate them on held-out data, log everything to MLflow.

``run_training`` is what the training script and the launchers call. Each ``train_*`` function is a
plain step — data and typed config in, a :class:`TrainedModel` out — and MLflow logging happens
once, at the edge, in ``_log_model_run``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from mlops.config import MODEL_KEYS, Settings
from mlops.data import Datasets, load_datasets
from mlops.evaluation import evaluate, expected_calibration_error, intent_metrics, ranking_metrics
from mlops.fingerprint import TAG, embedding_dependents, model_fingerprints
from mlops.modeling.embedding import StaticEncoder, fit_whitening
from mlops.modeling.few_shot import build_few_shot_model, sample_k
from mlops.modeling.intent import build_intent_model, place_vocabulary, with_courtesy_variants
from mlops.modeling.retrieval import RetrievalModel, build_documents
from mlops.modeling.serving import to_serving
from mlops.modeling.text import PhraseTranslator, normalize_batch

logger = logging.getLogger(__name__)

HEADLINE_METRICS = {
    "embedding_model": ("triplet_accuracy",),
    "llm_model": ("accuracy", "macro_f1", "oos_recall"),
    "few_shot_model": ("accuracy_k4", "accuracy_k8", "accuracy_k16"),
    "rag_model": ("hit_at_1", "hit_at_3", "mrr"),
}
EXAMPLE_QUERIES = ["Where can I see leopards in Sri Lanka?", "do i need a visa for japan", "tell me a joke"]

Progress = Callable[[str], None]


@dataclass
class TrainedModel:
    """A trained model with everything that gets logged about it."""

    key: str
    model: Any
    metrics: dict[str, float]
    params: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    extra_dirs: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- steps
def kb_pairs(data: Datasets) -> list[tuple[str, str]]:
    """(anchor, positive) pairs from the knowledge base alone.

    The retrieval dev split is left out on purpose: it tunes ``rag_model``'s fusion weights, and an
    encoder trained on its queries would make the dense score look better there than anywhere else.
    """
    docs = {doc["id"]: doc for doc in build_documents(data.destinations, data.sri_lanka)}
    pairs = []
    for doc in docs.values():
        record = doc["record"]
        things = record.get("top_attractions") or record.get("highlights", "")
        pairs.append((f"{doc['name']} {doc['location']}", record["description"]))
        pairs.append((f"{things}; {record['activities']}", record["description"]))
    return pairs


def unlabelled_text(data: Datasets) -> list[str]:
    """The train queries and the knowledge-base documents, labels unseen: what vectorizers and whitening fit on."""
    return list(data.intent_split("train")["text"]) + [
        doc["text"] for doc in build_documents(data.destinations, data.sri_lanka)
    ]


def knowledge_base_places(data: Datasets) -> list[str]:
    """Every place, country and district name of the knowledge base, plus the country itself."""
    names = [*data.destinations["name"], *data.destinations["country"], *data.sri_lanka["name"]]
    return [*names, *data.sri_lanka["district"], "Sri Lanka", "srilanka"]


def train_embedding_model(data: Datasets, settings: Settings, workdir: Path) -> TrainedModel:
    from mlops.modeling.embedding import train_embedding

    cfg, seed = settings.training.embedding_model, settings.training.seed
    # train + val: val only tunes the llm_model threshold, and the test split stays unseen.
    train = pd.concat([data.intent_split("train"), data.intent_split("val")], ignore_index=True)
    docs = build_documents(data.destinations, data.sri_lanka)
    corpus = list(train["text"]) + [doc["text"] for doc in docs]
    st_model, encoder = train_embedding(
        list(zip(train["text"], train["intent"], strict=True)),
        kb_pairs(data),
        corpus,
        vocab_size=cfg.vocab_size,
        embedding_dim=cfg.embedding_dim,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        seed=seed,
        workdir=workdir,
        base_model=cfg.base_model,
        triplet_margin=cfg.triplet_margin,
    )
    st_dir = workdir / "sentence_transformer"
    st_model.save(str(st_dir))
    check = encoder.encode(EXAMPLE_QUERIES)
    reference = st_model.encode(EXAMPLE_QUERIES, convert_to_numpy=True)
    metrics = {
        **evaluate("embedding_model", encoder, data, seed, cfg.triplet_samples),
        "numpy_vs_torch_max_abs_diff": float(np.abs(check - reference).max()),
        "vocab_size": float(len(encoder.weights)),
    }
    return TrainedModel(
        "embedding_model", encoder, metrics, cfg.model_dump(), extra_dirs={"sentence_transformer": st_dir}
    )


def train_llm_model(data: Datasets, settings: Settings, encoder: StaticEncoder | None = None) -> TrainedModel:
    """The intent model; ``encoder`` (the embedding model) is needed when ``llm_model.embedding_weight`` > 0."""
    cfg = settings.training.llm_model
    train, val, test = (data.intent_split(s) for s in ("train", "val", "test"))

    places, seed = place_vocabulary(knowledge_base_places(data)), settings.training.seed
    whitening = None
    if cfg.embedding_weight > 0:
        if encoder is None:
            raise ValueError("llm_model.embedding_weight > 0 needs the embedding model (or set it to 0)")
        whitening = fit_whitening(encoder, normalize_batch(unlabelled_text(data)), cfg.whiten_eps)

    def fit(frame: pd.DataFrame):
        texts, labels = with_courtesy_variants(
            list(frame["text"]), list(frame["intent"]), cfg.courtesy_augmentation, seed
        )
        model = build_intent_model(cfg, places, seed, data.courtesy_map).fit(texts, labels)
        if whitening is not None:
            model.attach_prototypes(
                encoder, whitening, list(frame["text"]), list(frame["intent"]), cfg.embedding_weight
            )
        return model

    model = fit(train)
    threshold = model.tune_threshold(val["text"], val["intent"], cfg.oos_weight)
    if cfg.refit_on_val:  # the threshold is chosen on val by a model that never saw it; then val trains too
        model = fit(pd.concat([train, val]))
        model.oos_threshold = threshold
    pairs = model.predict_with_confidence(test["text"])
    predicted = np.array([p[0] for p in pairs], dtype=object)
    confidence = np.array([p[1] for p in pairs])
    truth = test["intent"].to_numpy(dtype=object)
    metrics = intent_metrics(truth, predicted)
    metrics["ece"] = expected_calibration_error(confidence, predicted == truth)
    metrics["oos_threshold"] = threshold
    labels = sorted(set(truth) | set(predicted))
    tables = {
        "confusion_matrix": pd.DataFrame(
            confusion_matrix(truth, predicted, labels=labels), index=labels, columns=labels
        ),
        "errors": test.assign(predicted=predicted, confidence=confidence)[lambda f: f["predicted"] != f["intent"]],
    }
    report = classification_report(truth, predicted, output_dict=True, zero_division=0)
    return TrainedModel(
        "llm_model",
        model,
        metrics,
        {**cfg.model_dump(), "oos_threshold": threshold},
        tables,
        {"per_intent_report": report},
    )


def train_few_shot_model(data: Datasets, settings: Settings, encoder: StaticEncoder) -> TrainedModel:
    cfg, seed = settings.training.few_shot_model, settings.training.seed
    train, test = data.intent_split("train"), data.intent_split("test")
    translator = PhraseTranslator(data.courtesy_map, keep=place_vocabulary(knowledge_base_places(data)))
    empty = build_few_shot_model(cfg, encoder, unlabelled_text(data), translator)
    metrics: dict[str, float] = {}
    draws = []
    for k in cfg.k_values:
        scores = []
        for draw in range(cfg.seeds):
            texts, labels = sample_k(train["text"], train["intent"], k, seed + draw)
            clf = empty.without_intents().fit(texts, labels)
            scores.append(float(np.mean(clf.predict(test["text"]) == test["intent"].to_numpy())))
            draws.append({"k": k, "draw": draw, "accuracy": scores[-1]})
        metrics[f"accuracy_k{k}"] = float(np.mean(scores))
        metrics[f"accuracy_k{k}_std"] = float(np.std(scores))
    texts, labels = sample_k(train["text"], train["intent"], cfg.deploy_k, seed)
    model = empty.without_intents().fit(texts, labels)
    predicted = model.predict(test["text"])
    metrics["accuracy_deployed"] = float(np.mean(predicted == test["intent"].to_numpy()))
    report = classification_report(test["intent"], predicted, output_dict=True, zero_division=0)
    return TrainedModel(
        "few_shot_model",
        model,
        metrics,
        cfg.model_dump(),
        {"draws": pd.DataFrame(draws)},
        {"per_intent_report": report},
    )


def train_rag_model(data: Datasets, settings: Settings, encoder: StaticEncoder) -> TrainedModel:
    cfg = settings.training.rag_model
    model = RetrievalModel(
        build_documents(data.destinations, data.sri_lanka),
        encoder,
        name_boost=cfg.name_boost,
        country_boost=cfg.country_boost,
    )
    dev, test = data.retrieval_split("dev"), data.retrieval_split("test")
    weight = model.tune(
        list(dev["query"]), list(dev["relevant_ids"]), cfg.dense_weights, cfg.name_boosts, cfg.country_boosts
    )
    scores = model.scores(list(test["query"]))
    metrics = ranking_metrics(scores, model.ids, list(test["relevant_ids"]))
    parts = model.component_scores(list(test["query"]))
    metrics["sparse_only_mrr"] = ranking_metrics(model.fuse(*parts, 0.0), model.ids, list(test["relevant_ids"]))["mrr"]
    metrics["dense_only_mrr"] = ranking_metrics(model.fuse(*parts, 1.0), model.ids, list(test["relevant_ids"]))["mrr"]
    metrics.update(dense_weight=weight, name_boost=model.name_boost, country_boost=model.country_boost)
    top = np.argsort(-scores, axis=1)[:, :3]
    per_query = test.assign(
        relevant_ids=test["relevant_ids"].map(";".join),
        top3=[";".join(model.ids[i] for i in row) for row in top],
    )
    return TrainedModel(
        "rag_model",
        model,
        metrics,
        {
            **cfg.model_dump(),
            "dense_weight": weight,
            "name_boost": model.name_boost,
            "country_boost": model.country_boost,
        },
        {"per_query": per_query},
    )


# ------------------------------------------------------------------------------------- logging
def _dataset_inputs(data: Datasets, key: str) -> list[tuple[pd.DataFrame, str, str, str | None]]:
    """(frame, name, context, target) of every dataset a model learns from or is scored on."""
    intents = [
        (data.intent_split(s), f"intents-{s}", "training" if s == "train" else s, "intent")
        for s in ("train", "val", "test")
    ]
    retrieval = [
        (
            data.retrieval_split(s).assign(relevant_ids=lambda f: f["relevant_ids"].map(";".join)),
            f"retrieval-{s}",
            s,
            None,
        )
        for s in ("dev", "test")
    ]
    kb = [
        (data.destinations, "destinations", "knowledge_base", None),
        (data.sri_lanka, "sri_lanka_guide", "knowledge_base", None),
    ]
    courtesy = [(data.courtesy, "courtesy_phrases", "lexicon", None)]
    return {
        "embedding_model": intents + kb + retrieval[:1],
        "llm_model": intents + courtesy,
        "few_shot_model": intents + courtesy,
        "rag_model": kb + retrieval,
    }[key]


def _log_model_run(
    trained: TrainedModel, data: Datasets, settings: Settings, workdir: Path, seconds: float, fingerprint: str
) -> dict:
    import mlflow

    from mlops.tracking import SERVING_SUFFIX, log_pickled_model, owner_tags

    sources = {
        "intents": "intents",
        "retrieval": "retrieval",
        "destinations": "destinations",
        "sri_lanka_guide": "sri_lanka",
        "courtesy_phrases": "courtesy",
    }
    with mlflow.start_run(run_name=trained.key, nested=True, tags=owner_tags()) as run:
        mlflow.set_tags({"model_key": trained.key, "data_fingerprint": data.fingerprint, TAG: fingerprint})
        mlflow.log_params({k: json.dumps(v) if isinstance(v, list) else v for k, v in trained.params.items()})
        mlflow.log_params({"seed": settings.training.seed})
        mlflow.log_metrics({**trained.metrics, "training_time_s": seconds})
        for frame, name, context, target in _dataset_inputs(data, trained.key):
            source = data.paths[sources[name.split("-")[0]]]
            with warnings.catch_warnings():  # a local path matches two equivalent MLflow source types
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                # costs and ids are whole numbers on purpose; the dataset schema is informational
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
                dataset = mlflow.data.from_pandas(frame, source=str(source), name=name, targets=target)
                mlflow.log_input(dataset, context=context)
        for name, table in trained.tables.items():
            mlflow.log_text(table.to_csv(), f"evaluation/{name}.csv")
        for name, report in trained.reports.items():
            mlflow.log_dict(report, f"evaluation/{name}.json")
        for name, folder in trained.extra_dirs.items():
            mlflow.log_artifacts(str(folder), name)
        model_path = workdir / f"{trained.key}.pkl"
        joblib.dump(trained.model, model_path, compress=3)
        serving_path = workdir / f"{trained.key}{SERVING_SUFFIX}"
        serving_path.write_bytes(pickle.dumps(to_serving(trained.model), protocol=5))
        logged = log_pickled_model(
            trained.key,
            model_path,
            EXAMPLE_QUERIES,
            settings.mlflow.register_models,
            tags={TAG: fingerprint},
            serving_path=serving_path,
        )
        return {"run_id": run.info.run_id, **logged}


# ---------------------------------------------------------------------------------- orchestration
def resolve_models(requested: Sequence[str] | None) -> list[str]:
    """Validate the requested model keys and return them in training order.

    Raises:
        ValueError: An unknown model key.
    """
    if not requested:
        return list(MODEL_KEYS)
    unknown = [key for key in requested if key not in MODEL_KEYS]
    if unknown:
        raise ValueError(f"unknown model '{unknown[0]}'; choose from {', '.join(MODEL_KEYS)}")
    return [key for key in MODEL_KEYS if key in requested]


def _registered_encoder(version: str | None = None) -> StaticEncoder | None:
    """A registered embedding model (the newest by default), verified against its logged sha256."""
    from mlops.tracking import load_registered_pickle

    return load_registered_pickle("embedding_model", version)


def write_results(results: dict, results_dir: Path) -> Path:
    """Write the results JSON atomically (temp file + rename)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["started_at"]).strftime("%Y%m%dT%H%M%S%fZ")
    path = results_dir / f"training_results_{stamp}.json"
    with tempfile.NamedTemporaryFile("w", dir=results_dir, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return path


def run_training(
    settings: Settings,
    models: Sequence[str] | None = None,
    progress: Progress | None = None,
    encoder_version: str | None = None,
    data: Datasets | None = None,
) -> dict:
    """Train, evaluate and log the requested models (all four by default).

    Args:
        settings: Validated configuration.
        models: Model keys to train; ``few_shot_model``, ``rag_model`` (and ``llm_model`` with an
            ``embedding_weight``) reuse a registered ``embedding_model`` when it is not among them
            (training it if none is registered).
        progress: Called with a short message as each step starts.
        encoder_version: The registered ``embedding_model`` version to reuse (default: the newest).
        data: Already validated datasets (loaded from ``settings`` when None).

    Returns:
        The results document also written to ``mlops/results/training_results_<UTC>.json``.

    Raises:
        DataValidationError: The data is invalid (nothing is logged).
        ValueError: An unknown model key.
    """
    import mlflow

    from mlops.tracking import close_orphaned_runs, configure_tracking, owner_tags

    say = progress or (lambda message: logger.info("%s", message))
    keys = resolve_models(models)
    if data is None:  # the pipeline passes the data it has just validated
        say("Validating data")
        data = load_datasets(settings.data_dir)
    store = configure_tracking(settings)
    close_orphaned_runs(store.experiment_id)
    fingerprints = model_fingerprints(settings, data)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "data_fingerprint": data.fingerprint,
        "tracking_uri": store.tracking_uri,
        "experiment": store.experiment_name,
        "models": {},
    }
    encoder = None
    if any(key in keys for key in embedding_dependents(settings)) and "embedding_model" not in keys:
        encoder = _registered_encoder(encoder_version)
        if encoder is None:
            logger.info("No registered embedding_model yet: training it too")
            keys = ["embedding_model", *keys]
    with (
        tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp,
        mlflow.start_run(run_name=f"training-{started:%Y%m%d-%H%M%S}", tags=owner_tags()) as parent,
    ):
        workdir = Path(tmp)
        results["run_id"] = parent.info.run_id
        mlflow.set_tags({"data_fingerprint": data.fingerprint, "models": ",".join(keys)})
        for step, key in enumerate(keys, start=1):
            say(f"[{step}/{len(keys)}] Training {key}")
            tic = time.perf_counter()
            if key == "embedding_model":
                trained = train_embedding_model(data, settings, workdir / "embedding")
                encoder = trained.model
            elif key == "llm_model":
                trained = train_llm_model(data, settings, encoder)
            elif key == "few_shot_model":
                trained = train_few_shot_model(data, settings, encoder)
            else:
                trained = train_rag_model(data, settings, encoder)
            seconds = time.perf_counter() - tic
            say(f"[{step}/{len(keys)}] Logging {key} to MLflow ({seconds:.1f}s to train)")
            logged = _log_model_run(trained, data, settings, workdir, seconds, fingerprints[key])
            results["models"][key] = {
                "metrics": trained.metrics,
                "training_time_s": round(seconds, 3),
                "registered_model": key if logged["version"] else None,
                "input_fingerprint": fingerprints[key],
                **logged,
            }
        results["finished_at"] = datetime.now(UTC).isoformat()
        mlflow.log_dict(results, "training_results.json")
    results["results_file"] = str(write_results(results, settings.results_dir))
    return results
