"""Held-out evaluation of one model artifact, shared by training and by the deployment gates."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from mlops.data import Datasets
from mlops.modeling.embedding import make_triplets, triplet_accuracy
from mlops.modeling.intent import intent_metrics
from mlops.modeling.retrieval import ranking_metrics

# The metrics each model is gated and compared on at deployment (all fractions, higher is better).
GATE_METRICS = {
    "embedding_model": ("triplet_accuracy",),
    "llm_model": ("accuracy", "oos_recall"),
    "few_shot_model": ("accuracy",),
    "rag_model": ("hit_at_3", "mrr"),
}


def evaluate(key: str, model, data: Datasets, seed: int = 42, triplet_samples: int = 2000) -> dict[str, float]:
    """Score ``model`` (of kind ``key``) on the held-out test split.

    Returns:
        The metrics of :data:`GATE_METRICS` for that model, plus any companions computed alongside.
    """
    test = data.intent_split("test")
    if key == "embedding_model":
        triplets = make_triplets(list(test["text"]), list(test["intent"]), triplet_samples, seed)
        return {"triplet_accuracy": triplet_accuracy(model, triplets)}
    if key == "llm_model":
        return intent_metrics(test["intent"].to_numpy(dtype=object), model.predict(list(test["text"])))
    if key == "few_shot_model":
        return {"accuracy": float(np.mean(model.predict(list(test["text"])) == test["intent"].to_numpy()))}
    if key == "rag_model":
        queries = data.retrieval_split("test")
        return ranking_metrics(model.scores(list(queries["query"])), model.ids, list(queries["relevant_ids"]))
    raise ValueError(f"unknown model '{key}'")


def single_query_call(key: str, model) -> Callable[[str], object]:
    """How the chatbot calls this model for one query (what the latency gate measures)."""
    if key == "embedding_model":
        return lambda text: model.encode([text])
    if key == "llm_model":
        return lambda text: model.predict_with_confidence([text])
    if key == "rag_model":
        return lambda text: model.retrieve(text, 3)
    return lambda text: model.predict([text])


def latency_p95_ms(call: Callable[[str], object], queries: Sequence[str], clock=time.perf_counter) -> float:
    """95th percentile of the per-query latency of ``call`` in milliseconds (after one warm-up call)."""
    queries = list(queries)
    if not queries:
        return 0.0
    call(queries[0])
    timings = []
    for query in queries:
        tic = clock()
        call(query)
        timings.append((clock() - tic) * 1000.0)
    return float(np.percentile(timings, 95))
