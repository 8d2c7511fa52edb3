"""Data tier: the committed datasets have the coverage, balance and split hygiene the models rely on."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from mlops.data import CONTINENTS, INTENTS, OUT_OF_SCOPE, PROVINCES, load_datasets

from .conftest import DATA_DIR


def data_tool(name: str):
    """A script of data/tools/ (not a package) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, DATA_DIR / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def data():
    return load_datasets(DATA_DIR)


def test_knowledge_base_coverage(data):
    assert len(data.destinations) >= 200
    assert set(data.destinations["continent"]) == set(CONTINENTS)
    assert len(data.sri_lanka) >= 80
    assert set(data.sri_lanka["province"]) == set(PROVINCES)
    assert not set(data.destinations["country"].str.lower()) & {"sri lanka"}  # Sri Lanka lives in its own guide


def test_budget_level_agrees_with_cost(data):
    cost, level = data.destinations["avg_daily_cost_usd"], data.destinations["budget_level"]
    expected = np.where(cost < 70, "budget", np.where(cost <= 150, "mid-range", "luxury"))
    assert list(level) == list(expected)


def test_every_intent_has_enough_examples_in_every_split(data):
    counts = data.intents.groupby(["intent", "split"]).size()
    for intent in INTENTS:
        assert counts[intent].sum() >= 60, intent
        assert counts[(intent, "test")] >= 10, intent
    assert counts[OUT_OF_SCOPE].sum() > 2 * counts["weather"].sum()  # off-topic is broad: more examples


def test_test_split_is_stratified(data):
    """Every intent's share of test rows is close to the overall share (rows added later go to train only)."""
    overall = (data.intents["split"] == "test").mean()
    share = data.intents.groupby("intent")["split"].apply(lambda s: (s == "test").mean())
    counts = data.intents[data.intents["split"] == "test"]["intent"].value_counts()
    assert counts.reindex(sorted(set(data.intents["intent"])), fill_value=0).min() >= 30, counts
    off = share[(share - overall).abs() > 0.05]
    assert off.empty, (overall, off)


def test_no_duplicate_or_near_duplicate_text_across_splits(data):
    texts = data.intents["text"].str.lower().tolist()
    splits = data.intents["split"].to_numpy()
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).fit_transform(texts)
    sims = (matrix @ matrix.T).toarray()
    np.fill_diagonal(sims, 0)
    rows, cols = np.nonzero(sims >= 0.75)
    leaks = [(texts[i], texts[j]) for i, j in zip(rows, cols, strict=True) if splits[i] != splits[j]]
    assert not leaks, leaks[:5]


def test_retrieval_queries_cover_both_knowledge_bases_and_splits(data):
    assert len(data.retrieval) >= 250
    ids = {doc_id for ids in data.retrieval["relevant_ids"] for doc_id in ids}
    assert any(i.startswith("SL") for i in ids) and any(i.startswith("D") for i in ids)
    assert set(data.retrieval["split"]) == {"dev", "test"}
    assert data.retrieval["query"].str.lower().is_unique
    assert (data.retrieval_split("test")["relevant_ids"].map(len) >= 1).all()


def test_adding_training_rows_keeps_val_and_test_fixed_and_drops_held_out_twins(tmp_path, capsys):
    import csv

    tool = data_tool("add_training_rows")
    target = tmp_path / "intents.csv"
    held_out = [("is it safe to walk around colombo fort at night", "safety_and_health", "test"),
                ("hello there", "greeting", "val")]  # fmt: skip
    rows = [("best hostels in kandy", "accommodation", "train"), *held_out]
    with open(target, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "intent", "split"), *rows])
    new = tmp_path / "new.csv"
    with open(new, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([
            ("text", "intent"),
            ("Is it safe to walk around Colombo Fort at night?", "safety_and_health"),  # near the test row
            ("HELLO THERE", "greeting"),  # equal to the val row
            ("Best hostels in Kandy", "accommodation"),  # already in train
            ("cheap guesthouses near the lake in kandy", "accommodation"),
            ("how do I pay for the bus in quito", "transportation"),
        ])  # fmt: skip
    assert tool.main([str(new)], target) == 0
    out = list(csv.DictReader(open(target, encoding="utf-8")))
    assert [(r["text"], r["intent"], r["split"]) for r in out if r["split"] != "train"] == [held_out[1], held_out[0]]
    added = sorted(r["text"] for r in out if r["split"] == "train")
    assert added == ["best hostels in kandy", "cheap guesthouses near the lake in kandy",
                     "how do I pay for the bus in quito"]  # fmt: skip
    assert "colombo" not in capsys.readouterr().out.lower()  # only counts are printed, never held-out text

    with open(new, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(("where is the best beach", "beach_questions"))
    before = target.read_bytes()
    assert tool.main([str(new)], target) == 2  # an unknown intent: nothing is written
    assert target.read_bytes() == before
    assert "row 7" in capsys.readouterr().err


def test_the_label_agreement_study_covers_every_held_out_query_and_backs_the_data_card(data):
    """data/label_agreement.csv: two blind annotators per val/test query; the card's 99 % comes from it."""
    tool = data_tool("label_agreement")
    study = pd.read_csv(DATA_DIR / "label_agreement.csv", dtype=str, keep_default_na=False)
    held_out = data.intents[data.intents["split"].isin(["val", "test"])]
    assert sorted(zip(study["text"], study["split"], study["gold"], strict=True)) == sorted(
        zip(held_out["text"], held_out["split"], held_out["intent"], strict=True)
    )  # the gold labels are the current ones: a relabelled held-out query needs the study redone
    assert set(study["annotator_1"]) | set(study["annotator_2"]) <= set(INTENTS)
    table = tool.agreement(study)
    assert (table[["annotator_1_gold", "annotator_2_gold"]] >= 0.99).all().all(), table
    assert table.loc["test", "queries"] == 722 and table.loc["val", "queries"] == 541
