"""The canary: the deployed bot re-answers the held-out golden queries on a schedule.

Live accuracy from thumbs is sparse and biased (few users vote); the canary measures the deployed
models on known answers: the test split of ``data/intents.csv`` (accuracy, out-of-scope recall) and
of ``data/retrieval_eval.csv`` (hit@3). Canary queries are not written to the inference log, so they
never count as traffic. Like serving, this module imports no scikit-learn, torch or training code.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.monitoring.inference_log import canary_table, insert_rows, make_engine, read_log
from mlops.taxonomy import OUT_OF_SCOPE

logger = logging.getLogger(__name__)


def evaluate_bot(bot, intents: pd.DataFrame, retrieval: pd.DataFrame) -> dict:
    """Score ``bot`` on golden intent queries (``text``, ``intent``) and retrieval queries.

    Args:
        bot: A loaded ``TravelChatbot``.
        intents: Rows with ``text`` and the expected ``intent``.
        retrieval: Rows with ``query`` and ``relevant_ids`` (a list of knowledge-base ids).

    Returns:
        ``accuracy``, ``oos_recall`` (None without out-of-scope rows), ``hit_at_3`` (None without
        retrieval rows), ``n``, ``n_retrieval`` and ``p95_latency_ms`` of the answers.
    """
    results = [bot.process_query(text) for text in intents["text"]]
    predicted = np.array([r["intent"] for r in results], dtype=object)
    expected = intents["intent"].to_numpy(dtype=object)
    oos = expected == OUT_OF_SCOPE
    hits = [
        bool({hit["id"] for hit in bot.rag_model.retrieve(query, k=3)} & set(relevant))
        for query, relevant in zip(retrieval["query"], retrieval["relevant_ids"], strict=True)
    ]
    return {
        "accuracy": float((predicted == expected).mean()) if len(expected) else 0.0,
        "oos_recall": float((predicted[oos] == OUT_OF_SCOPE).mean()) if oos.any() else None,
        "hit_at_3": float(np.mean(hits)) if hits else None,
        "n": len(expected),
        "n_retrieval": len(hits),
        "p95_latency_ms": float(np.percentile([r["latency_ms"] for r in results], 95)) if results else 0.0,
    }


def run_canary(settings: Settings, bot=None, datasets=None, now: float | None = None) -> dict:
    """Run the deployed bot on the golden test queries and store the result in ``canary_runs``.

    Args:
        settings: Where the models, data and inference-log database are.
        bot: A loaded ``TravelChatbot``; loaded from ``models/`` when None.
        datasets: The loaded datasets; loaded from the data folder when None.
        now: Time stamp of the run (epoch seconds); defaults to the wall clock.

    Returns:
        The stored row: ``ts``, ``accuracy``, ``oos_recall``, ``hit_at_3``, ``n``, ``n_retrieval``,
        ``p95_latency_ms``, ``versions`` (model key -> version) and ``deployed_at``.

    Raises:
        DeploymentError: Nothing is deployed, or the deployment fails its integrity checks.
        DataValidationError: The data files are missing or invalid.
    """
    from mlops.chatbot.bot import TravelChatbot
    from mlops.data import load_datasets

    bot = bot or TravelChatbot.load(settings.models_dir)
    datasets = datasets or load_datasets(settings.data_dir)
    scores = evaluate_bot(bot, datasets.intent_split("test"), datasets.retrieval_split("test"))
    row = {
        "ts": time.time() if now is None else now,
        **scores,
        "versions": json.dumps(bot.versions, sort_keys=True),
        "deployed_at": bot.manifest.get("deployed_at"),
    }
    insert_rows(settings.inference_log_url, canary_table, [row])
    logger.info(
        "canary: accuracy %.3f, oos_recall %s, hit@3 %s on %d + %d golden queries",
        row["accuracy"], row["oos_recall"], row["hit_at_3"], row["n"], row["n_retrieval"],
    )  # fmt: skip
    return {**row, "versions": bot.versions}


def read_canary(settings: Settings, since: float | None = None) -> pd.DataFrame:
    """The stored canary runs, oldest first, optionally from ``since`` (epoch seconds) on."""
    return read_log(settings.inference_log_url, since=since, table=canary_table)


def last_run(settings: Settings) -> dict | None:
    """The latest canary run (``versions`` decoded), or None if the canary never ran."""
    from sqlalchemy import select

    engine = make_engine(settings.inference_log_url)
    try:
        with engine.connect() as connection:
            row = (
                connection.execute(select(canary_table).order_by(canary_table.c.ts.desc()).limit(1)).mappings().first()
            )
    finally:
        engine.dispose()
    if row is None:
        return None
    return {**row, "versions": json.loads(row["versions"] or "{}")}


def due(settings: Settings, now: float | None = None) -> bool:
    """Whether the canary should run: a deployment exists and it never ran on it, or
    ``monitoring.canary_interval_minutes`` have passed since its last run."""
    from mlops.chatbot.bot import DeploymentError, read_manifest

    try:
        deployed_at = read_manifest(settings.models_dir).get("deployed_at")
    except DeploymentError:
        return False  # nothing deployed: nothing to test
    last = last_run(settings)
    now = time.time() if now is None else now
    if last is None or last["deployed_at"] != deployed_at:
        return True  # a new deployment is tested at once
    return now - last["ts"] >= settings.monitoring.canary_interval_minutes * 60.0
