"""Drift: PSI by hand, zero for identical windows, quiet for a resample, loud for a shifted window."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops.monitoring.drift import THRESHOLDS, drift_report, embedding_profile, profile, psi

INTENTS = ["weather", "visa_requirements", "activities", "accommodation", "out_of_scope"]
TRAVEL_WORDS = ["beach", "visa", "hotel", "hike", "rain", "museum", "train", "temple", "budget", "food"]


def traffic(n: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    """A window of logged queries; ``shifted`` turns most of it into off-topic, unsure, unseen-word traffic."""
    rng = np.random.default_rng(seed)
    if shifted:
        intents = rng.choice(INTENTS, n, p=[0.05, 0.25, 0.05, 0.05, 0.6])
        words = ["kubernetes", "mortgage", "sourdough", "blockchain", "carburetor"]
        confidence = rng.uniform(0.3, 0.7, n)
    else:
        intents = rng.choice(INTENTS, n, p=[0.25, 0.2, 0.25, 0.2, 0.1])
        words = TRAVEL_WORDS
        confidence = rng.beta(8, 2, n)
    queries = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    return pd.DataFrame({"query": queries, "intent": intents, "confidence": confidence})


def test_psi_matches_the_formula_and_its_edge_cases():
    expected = 0.4 * math.log(0.9 / 0.5) + 0.4 * math.log(0.5 / 0.1)
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(expected)
    assert psi({"a": 5, "b": 5}, {"a": 9, "b": 1}) == pytest.approx(expected)  # counts work like shares
    assert psi({"a": 0.3, "b": 0.7}, {"b": 0.7, "a": 0.3}) == 0.0
    assert psi({}, {"a": 1.0}) == 0.0 and psi({"a": 1.0}, {}) == 0.0
    disjoint = psi({"a": 1.0}, {"b": 1.0})  # a category missing on one side: large but finite
    assert 10 < disjoint < 100 and math.isfinite(disjoint)
    assert psi({"a": 1.0}, {"b": 1.0}, eps=1e-2) < disjoint


def test_identical_windows_score_zero():
    window = traffic(500, seed=1)
    report = drift_report(profile(window), window)
    assert report.score == pytest.approx(0.0, abs=1e-9) and not report.drifted
    assert {row["signal"] for row in report.rows} == set(THRESHOLDS) - {"embedding_shift"}
    assert all(row["score"] == pytest.approx(0.0, abs=1e-9) and not row["drifted"] for row in report.rows)
    assert list(report.frame().columns) == ["signal", "reference", "live", "score", "threshold", "drifted", "detail"]


def test_a_fresh_sample_of_the_same_traffic_does_not_drift():
    report = drift_report(profile(traffic(1000, seed=1)), traffic(500, seed=2))
    assert 0.0 < report.score < 1.0, report.rows


def test_a_shifted_window_drifts_on_every_signal_that_moved():
    reference = profile(traffic(1000, seed=1))
    report = drift_report(reference, traffic(500, seed=3, shifted=True))
    drifted = {row["signal"] for row in report.rows if row["drifted"]}
    assert {"intent_psi", "oos_rate", "mean_confidence", "confidence_psi", "oov_rate"} <= drifted
    assert report.drifted and report.score > 5
    oov = next(row for row in report.rows if row["signal"] == "oov_rate")
    assert oov["reference"] == 0.0 and oov["live"] == 1.0
    intent = next(row for row in report.rows if row["signal"] == "intent_psi")
    assert intent["detail"].startswith("largest change: out_of_scope 1")  # the largest change is named


def test_an_empty_live_window_reports_no_data_without_raising():
    report = drift_report(profile(traffic(100, seed=1)), pd.DataFrame(columns=["query", "intent", "confidence"]))
    assert report.score == 0.0 and report.n_live == 0 and not report.drifted
    assert all(row["score"] is None and row["live"] is None for row in report.rows)


def test_embedding_shift_uses_the_encoder_when_given():
    class BagOfLetters:  # a tiny deterministic encoder: a query's vector is its letter counts
        def encode(self, texts):
            out = np.zeros((len(texts), 26))
            for row, text in enumerate(texts):
                for ch in text:
                    if "a" <= ch <= "z":
                        out[row, ord(ch) - 97] += 1
            return out

    normal = traffic(300, seed=1)
    reference = profile(normal)
    reference.update(embedding_profile(BagOfLetters().encode(list(normal["query"]))))
    same = drift_report(reference, normal, encoder=BagOfLetters())
    moved = drift_report(reference, traffic(300, seed=3, shifted=True), encoder=BagOfLetters())
    row_same = next(row for row in same.rows if row["signal"] == "embedding_shift")
    row_moved = next(row for row in moved.rows if row["signal"] == "embedding_shift")
    assert row_same["score"] == pytest.approx(0.0, abs=1e-9)
    assert row_moved["score"] > THRESHOLDS["embedding_shift"] and row_moved["drifted"]
