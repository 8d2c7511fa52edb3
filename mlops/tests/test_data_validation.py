"""Code tier: every kind of bad data file is refused with the file, the row and the column."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops.data import FILES, DataValidationError, load_datasets


def _edit(path, fn):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(frame).to_csv(path, index=False)


def test_real_data_loads_and_fingerprint_is_stable(tiny_data_dir):
    first, second = load_datasets(tiny_data_dir), load_datasets(tiny_data_dir)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 64
    assert first.destinations["avg_daily_cost_usd"].dtype.kind == "i"
    assert all(isinstance(ids, list) and ids for ids in first.retrieval["relevant_ids"])


def test_fingerprint_changes_with_content(copy_data, tiny_data_dir):
    data_dir = copy_data(tiny_data_dir)
    before = load_datasets(data_dir).fingerprint
    _edit(data_dir / FILES["destinations"], lambda f: f.assign(description=f["description"] + " More."))
    assert load_datasets(data_dir).fingerprint != before


@pytest.mark.parametrize(
    ("file_key", "breaker", "expected"),
    [
        ("destinations", lambda f: f.drop(columns=["climate"]), r"missing column\(s\) climate"),
        ("destinations", lambda f: f.assign(avg_daily_cost_usd=["abc"] + list(f["avg_daily_cost_usd"][1:])),
         r"row 1, column 'avg_daily_cost_usd': expected a positive whole number, got 'abc'"),
        ("destinations", lambda f: f.assign(id=[f["id"][1]] + list(f["id"][1:])),
         r"row 2, column 'id': duplicate value"),
        ("destinations", lambda f: f.assign(continent=["Atlantis"] + list(f["continent"][1:])),
         r"row 1, column 'continent': 'Atlantis' is not allowed; use one of: Africa"),
        ("destinations", lambda f: f.assign(best_months=["Jan;Smarch"] + list(f["best_months"][1:])),
         r"row 1, column 'best_months': 'Smarch' is not a month"),
        ("sri_lanka", lambda f: f.assign(name=[""] + list(f["name"][1:])), r"row 1, column 'name': empty value"),
        ("sri_lanka", lambda f: f.assign(province=["Atlantis"] + list(f["province"][1:])), r"column 'province'"),
        ("intents", lambda f: f.assign(intent=["book_flight"] + list(f["intent"][1:])),
         r"row 1, column 'intent': 'book_flight' is not allowed"),
        ("intents", lambda f: f[f["intent"] != "weather"], r"intent 'weather' has 0 example\(s\) in split 'train'"),
        ("intents", lambda f: f.assign(split=["holdout"] + list(f["split"][1:])), r"column 'split': 'holdout'"),
        ("retrieval", lambda f: f.assign(relevant_ids=["D999999"] + list(f["relevant_ids"][1:])),
         r"row 1, column 'relevant_ids': relevant id 'D999999' does not exist"),
        ("courtesy", lambda f: f.assign(meaning=["cheers"] + list(f["meaning"][1:])),
         r"row 1, column 'meaning': 'cheers' is not allowed; use one of: hello, thanks, goodbye"),
        ("courtesy", lambda f: f.assign(phrase=[f["phrase"][0]] + [f["phrase"][0].upper()] + list(f["phrase"][2:])),
         r"row 2, column 'phrase': duplicate value"),
        ("courtesy", lambda f: f.drop(columns=["language"]), r"missing column\(s\) language"),
        ("courtesy", lambda f: f.assign(phrase=["hola"] + ["-"] + list(f["phrase"][2:])),
         r"row 2, column 'phrase': a phrase needs at least one letter or digit"),
    ],
)  # fmt: skip
def test_broken_file_is_refused_with_location(copy_data, tiny_data_dir, file_key, breaker, expected):
    data_dir = copy_data(tiny_data_dir)
    _edit(data_dir / FILES[file_key], breaker)
    with pytest.raises(DataValidationError, match=expected) as err:
        load_datasets(data_dir)
    assert FILES[file_key] in str(err.value)


def test_missing_empty_header_only_and_bad_encoding(copy_data, tiny_data_dir):
    data_dir = copy_data(tiny_data_dir)
    path = data_dir / FILES["intents"]
    header = path.read_text(encoding="utf-8").splitlines()[0]

    path.write_text("", encoding="utf-8")
    with pytest.raises(DataValidationError, match="intents.csv: file is empty"):
        load_datasets(data_dir)
    path.write_text(header + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="intents.csv: header only"):
        load_datasets(data_dir)
    path.write_bytes(header.encode() + b"\ncaf\xe9 hours?,weather,train\n")
    with pytest.raises(
        DataValidationError, match=r"intents.csv: not valid UTF-8: byte 0xe9 at line 2 of the file, counting the header"
    ):
        load_datasets(data_dir)
    path.unlink()
    with pytest.raises(DataValidationError, match="intents.csv: file not found"):
        load_datasets(data_dir)


def test_an_extra_column_is_read_past_with_a_warning(copy_data, tiny_data_dir, caplog):
    data_dir = copy_data(tiny_data_dir)
    _edit(data_dir / FILES["intents"], lambda f: f.assign(intnet=f["intent"]))
    with caplog.at_level("WARNING", logger="mlops.data"):
        data = load_datasets(data_dir)
    assert list(data.intents.columns[:3]) == ["text", "intent", "split"] and "intnet" not in data.intents
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("intents.csv: ignoring column(s) intnet" in m and "text, intent, split" in m for m in warned), warned
