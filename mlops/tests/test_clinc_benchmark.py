"""Code tier: the CLINC150 benchmark on a tiny subsample (skipped when the data is not beside the checkout)."""

from __future__ import annotations

import json

import pytest

from mlops.benchmarks import clinc150
from mlops.config import IntentSettings
from mlops.modeling.intent import IntentClassifier
from mlops.taxonomy import OUT_OF_SCOPE

DATA_DIR = clinc150.resolve_data_dir()
needs_data = pytest.mark.skipif(
    not (DATA_DIR / clinc150.FILES["full"]).is_file(), reason=f"CLINC150 data not found in {DATA_DIR}"
)
PLACES = ["kandy", "lisbon"]


@pytest.fixture(scope="module")
def tiny():
    return clinc150.subsample(clinc150.load_setting(DATA_DIR, "full"), intents=8, per_intent=15)


@needs_data
def test_subsample_keeps_the_splits_apart_and_maps_oos(tiny):
    assert len(set(tiny.train.labels)) == 8 and OUT_OF_SCOPE not in tiny.train.labels
    assert set(tiny.oos_train.labels) == {OUT_OF_SCOPE} and OUT_OF_SCOPE in tiny.test.labels
    assert "oos" not in tiny.val.labels + tiny.test.labels
    assert tiny.training("oos-threshold") == tiny.train
    assert OUT_OF_SCOPE in tiny.training("oos-train").labels


@needs_data
@pytest.mark.parametrize("method", clinc150.METHODS)
def test_each_method_reports_fractions_and_tunes_on_val_only(tiny, method, monkeypatch):
    seen = []
    original = IntentClassifier.tune_threshold

    def spy(self, texts, labels, oos_weight=0.1):
        seen.extend(texts)
        return original(self, texts, labels, oos_weight)

    monkeypatch.setattr(IntentClassifier, "tune_threshold", spy)
    row = clinc150.run_intent(tiny, method, IntentSettings(), PLACES)
    assert seen == tiny.val.texts and not set(seen) & set(tiny.test.texts)
    for key in ("in_scope_accuracy", "oos_recall", "oos_precision", "threshold"):
        assert 0.0 <= row[key] <= 1.0, (key, row)
    assert row["in_scope_accuracy"] > 0.5, row  # 8 intents: chance is 0.125
    assert row["train_s"] > 0 and row["size_mb"] > 0


@needs_data
def test_the_table_puts_our_rows_beside_the_paper(tiny):
    rows = [
        {"setting": "full", "method": m, "in_scope_accuracy": 0.9, "oos_recall": 0.6, "train_s": 50.0, "size_mb": 5.0}
        for m in clinc150.METHODS
    ]
    table = clinc150.render_table(rows)
    assert table.count("**ours (llm_model)**") == 2
    assert (
        "| oos-train | BERT (paper) | 96.9 | 40.3 |" in table
        and "| oos-threshold | MLP (paper) | 93.4 | 49.1 |" in table
    )
    assert "| oos-train | **ours (llm_model)** | 90.0 | 60.0 | 50 | 5.0 |" in table


def test_missing_data_is_skipped_with_where_it_looked(tmp_path, capsys):
    clinc150.main(["--data-dir", str(tmp_path / "nowhere")])
    out = capsys.readouterr().out
    assert "skipped" in out and str(tmp_path / "nowhere") in out and clinc150.ENV_VAR in out


def test_data_dir_comes_from_the_flag_then_the_environment_then_the_default(tmp_path):
    assert clinc150.resolve_data_dir(tmp_path, {clinc150.ENV_VAR: "/elsewhere"}) == tmp_path.resolve()
    assert clinc150.resolve_data_dir(None, {clinc150.ENV_VAR: str(tmp_path)}) == tmp_path.resolve()
    assert clinc150.resolve_data_dir(None, {}) == clinc150.DEFAULT_DIR
    assert clinc150.DEFAULT_DIR.parts[-3:] == ("shared", "benchmarks", "clinc150")


def test_a_setting_file_that_is_missing_is_a_clear_error(tmp_path):
    (tmp_path / "data_full.json").write_text(json.dumps({}))
    with pytest.raises(clinc150.DataMissing, match="CLINC150"):
        clinc150.load_setting(tmp_path, "small")
    with pytest.raises(ValueError, match="unknown CLINC150 setting"):
        clinc150.load_setting(tmp_path, "huge")
