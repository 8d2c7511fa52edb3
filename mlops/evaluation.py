"""Held-out evaluation of one model artifact, shared by training and by the deployment gates."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from mlops.data import Datasets
from mlops.modeling.embedding import make_triplets, triplet_accuracy
from mlops.taxonomy import OUT_OF_SCOPE

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


# ----------------------------------------------------------------------------------- metrics


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean F1 over every label in ``truth`` or ``predicted`` (0 where undefined).

    Equal to ``sklearn.metrics.f1_score(average="macro", zero_division=0)`` (tested); numpy here so
    that the deployment gates do not import scikit-learn.
    """
    truth = np.asarray(truth, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    scores = []
    for label in sorted(set(truth) | set(predicted)):
        true_pos = float(np.sum((truth == label) & (predicted == label)))
        denominator = float(np.sum(truth == label) + np.sum(predicted == label))
        scores.append(2 * true_pos / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def intent_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy over all classes, macro F1, in-scope accuracy and out-of-scope recall/precision."""
    truth = np.asarray(truth, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    is_oos = truth == OUT_OF_SCOPE
    said_oos = predicted == OUT_OF_SCOPE
    return {
        "accuracy": float(np.mean(truth == predicted)) if len(truth) else 0.0,
        "macro_f1": macro_f1(truth, predicted),
        "in_scope_accuracy": float(np.mean(predicted[~is_oos] == truth[~is_oos])) if (~is_oos).any() else 0.0,
        "oos_recall": float(np.mean(said_oos[is_oos])) if is_oos.any() else 0.0,
        "oos_precision": float(np.mean(is_oos[said_oos])) if said_oos.any() else 0.0,
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def ranking_metrics(scores: np.ndarray, ids: Sequence[str], relevant: Sequence[Sequence[str]]) -> dict[str, float]:
    """hit@1, hit@3, hit@5 and MRR of score rows against the relevant ids of each query."""
    ids = np.asarray(ids)
    hits1 = hits3 = hits5 = rr = 0.0
    for row, wanted in zip(scores, relevant, strict=True):
        ranked = ids[np.argsort(-row, kind="stable")]
        positions = np.flatnonzero(np.isin(ranked, list(wanted)))
        first = int(positions[0]) + 1 if len(positions) else None
        if first:
            hits1 += first <= 1
            hits3 += first <= 3
            hits5 += first <= 5
            rr += 1.0 / first
    n = max(len(relevant), 1)
    return {"hit_at_1": hits1 / n, "hit_at_3": hits3 / n, "hit_at_5": hits5 / n, "mrr": rr / n}
