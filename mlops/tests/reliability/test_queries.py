"""Hostile and unusual queries: every one gets a sensible answer or a clear refusal, never an exception,
and every one lands in the inference log (stored as text, never executed). Latency is measured by
``python -m mlops.reliability_bench`` (see docs/RELIABILITY.md), not asserted here."""

from __future__ import annotations

import sqlite3

import pytest

from mlops.chatbot import TravelChatbot
from mlops.chatbot.bot import EMPTY_QUERY_ANSWER
from mlops.monitoring.inference_log import MAX_LOGGED_QUERY_CHARS, InferenceLog, read_log
from mlops.reliability_bench import ADVERSARIAL_QUERIES


@pytest.fixture(scope="module")
def bot(live):
    return TravelChatbot.load(live.models_dir)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL_QUERIES))
def test_a_hostile_query_gets_an_answer_with_the_design_fields(bot, name):
    result = bot.process_query(ADVERSARIAL_QUERIES[name])
    assert set(result) == {"answer", "intent", "confidence", "sources", "latency_ms"}
    assert isinstance(result["answer"], str) and result["answer"].strip()
    assert 0.0 <= result["confidence"] <= 1.0 and result["latency_ms"] >= 0
    if name in ("empty", "whitespace", "none"):
        assert result["answer"] == EMPTY_QUERY_ANSWER  # a clear prompt, not a guess


def test_every_hostile_query_is_logged_as_text_and_none_is_executed(bot, tmp_path):
    path = tmp_path / "log.db"
    log = InferenceLog(path, bot.versions, batch_size=1000)  # one batch: one bad row must not sink the others
    bot.on_response = log
    try:
        for query in ADVERSARIAL_QUERIES.values():
            bot.process_query(query)
    finally:
        bot.on_response = None
        log.close()
    rows = read_log(path)
    assert log.failed == 0 and len(rows) == len(ADVERSARIAL_QUERIES)
    stored = list(rows["query"])
    assert ADVERSARIAL_QUERIES["sql_injection"] in stored and ADVERSARIAL_QUERIES["html_script"] in stored
    assert max(len(q) for q in stored) <= MAX_LOGGED_QUERY_CHARS
    assert "visa \ufffd for japan" not in stored and any(q.startswith("visa ") for q in stored)  # surrogate replaced
    with sqlite3.connect(path) as connection:  # the injection strings did nothing to the database
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
    assert {"inference_log", "alerts", "feedback"} <= tables
