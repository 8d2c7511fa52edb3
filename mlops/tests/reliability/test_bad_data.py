"""Bad data as a hostile or careless user supplies it: a clear message naming file, row and column,
a non-zero exit from the real CLIs, and the deployed models and the MLflow store untouched.

Already covered elsewhere (see docs/RELIABILITY.md): missing column, non-numeric cost, duplicate id,
unknown continent/province/intent/split, too few examples, unknown relevant id, empty file, header
only, non-UTF-8, missing file (mlops/tests/test_data_validation.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import pandas as pd
import pytest

from mlops.config import PROJ_ROOT
from mlops.data import FILES, MAX_ROWS, DataValidationError, load_datasets

from ..conftest import cli_env
from .conftest import SIMPLE, TRAIN_SCRIPT, config_copy, store_snapshot


def _edit(path, fn):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(frame).to_csv(path, index=False)


def _first(frame, column, value):
    return frame.assign(**{column: [value] + list(frame[column][1:])})


def _million_rows(path):
    header = path.read_text(encoding="utf-8").splitlines()[0]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + "\n")
        for start in range(0, 1_000_000, 100_000):
            handle.write("".join(f"where to go {i},weather,train\n" for i in range(start, start + 100_000)))


BREAKERS = {
    "nan_in_required_text": ("intents", lambda f: _first(f, "text", "NaN"), r"column 'text': 'NaN' marks a missing"),
    "null_in_required_name": ("destinations", lambda f: _first(f, "name", "null"), r"row 1, column 'name': 'null'"),
    "blank_required_cell": ("retrieval", lambda f: _first(f, "query", "  "), r"row 1, column 'query': empty value"),
    "renamed_column": ("intents", lambda f: f.rename(columns={"intent": "intnet"}),
                       r"missing column\(s\) intent; .*'intnet' looks like a renamed 'intent'"),
    "cost_not_whole": ("destinations", lambda f: _first(f, "avg_daily_cost_usd", "3.5"),
                       r"row 1, column 'avg_daily_cost_usd': expected a positive whole number, got '3.5'"),
    "cost_negative": ("destinations", lambda f: _first(f, "avg_daily_cost_usd", "-20"), r"got '-20'"),
    "duplicate_sri_lanka_id": ("sri_lanka", lambda f: _first(f, "id", f["id"][1]), r"row 2, column 'id': duplicate"),
    "duplicate_intent_text": ("intents", lambda f: _first(f, "text", f["text"][1].upper()),
                              r"row 2, column 'text': duplicate text"),
    "wrong_month_type": ("destinations", lambda f: _first(f, "best_months", "13"), r"'13' is not a month"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_bad_file_names_file_row_and_column(case, copy_data, tiny_data_dir):
    file_key, breaker, expected = BREAKERS[case]
    data_dir = copy_data(tiny_data_dir)
    _edit(data_dir / FILES[file_key], breaker)
    with pytest.raises(DataValidationError, match=expected) as err:
        load_datasets(data_dir)
    assert str(err.value).startswith(str(data_dir / FILES[file_key]))


def test_an_id_in_both_knowledge_bases_is_refused(copy_data, tiny_data_dir):
    data_dir = copy_data(tiny_data_dir)
    first_destination = pd.read_csv(data_dir / FILES["destinations"], dtype=str)["id"][0]
    _edit(data_dir / FILES["sri_lanka"], lambda f: _first(f, "id", first_destination))
    with pytest.raises(DataValidationError, match=f"id '{first_destination}' is also a destination id"):
        load_datasets(data_dir)


def test_a_broken_csv_quote_is_a_clear_error(copy_data, tiny_data_dir):
    data_dir = copy_data(tiny_data_dir)
    path = data_dir / FILES["retrieval"]
    path.write_text(path.read_text() + '"an unclosed quote,D001,test\n', encoding="utf-8")
    with pytest.raises(DataValidationError, match="retrieval_eval.csv: not a valid CSV"):
        load_datasets(data_dir)


def test_a_million_rows_is_refused_fast_with_bounded_memory(copy_data, tiny_data_dir):
    data_dir = copy_data(tiny_data_dir)
    path = data_dir / FILES["intents"]
    _million_rows(path)
    size = path.stat().st_size
    tracemalloc.start()
    tic = time.perf_counter()
    try:
        with pytest.raises(
            DataValidationError, match=rf"intents.csv: file has about 1,000,001 lines; the limit is {MAX_ROWS:,}"
        ):
            load_datasets(data_dir)
        seconds = time.perf_counter() - tic
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 10, f"refusing took {seconds:.1f}s"
    assert peak < 1.5 * size, f"peak {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB file: memory is not bounded"


# ---------------------------------------------------------------------------- the real CLIs
def _break_missing(data_dir):
    (data_dir / FILES["sri_lanka"]).unlink()


def _break_encoding(data_dir):
    path = data_dir / FILES["destinations"]
    path.write_bytes(path.read_bytes().replace(b"a", b"\xe9", 1))


def _break_duplicate(data_dir):
    _edit(data_dir / FILES["destinations"], lambda f: _first(f, "id", f["id"][1]))


def _break_intent(data_dir):
    _edit(data_dir / FILES["intents"], lambda f: _first(f, "intent", "book_flight"))


def _break_nan(data_dir):
    _edit(data_dir / FILES["intents"], lambda f: _first(f, "text", "nan"))


CLI_CASES = {
    "missing_file": (TRAIN_SCRIPT, _break_missing, ["enhanced_sri_lanka_guide.csv: file not found"]),
    "non_utf8": (TRAIN_SCRIPT, _break_encoding, ["enhanced_travel_destinations.csv: not valid UTF-8: byte 0xe9"]),
    "duplicate_id": (TRAIN_SCRIPT, _break_duplicate, ["enhanced_travel_destinations.csv, row 2, column 'id'"]),
    "unknown_intent": (SIMPLE, _break_intent, ["intents.csv, row 1, column 'intent': 'book_flight' is not allowed"]),
    "nan_text": (SIMPLE, _break_nan, ["intents.csv, row 1, column 'text': 'nan' marks a missing value"]),
    "million_rows": (TRAIN_SCRIPT, lambda d: _million_rows(d / FILES["intents"]), ["the limit is 100,000 rows"]),
}


def test_the_real_clis_refuse_bad_data_and_change_nothing(live, tiny_data_dir, tmp_path):
    """Every case runs the real script in its own process (all at once, to keep the suite fast)."""
    import shutil

    before = store_snapshot(live)
    running = {}
    for case, (script, breaker, _) in CLI_CASES.items():
        data_dir = tmp_path / case / "data"
        shutil.copytree(tiny_data_dir, data_dir)
        breaker(data_dir)
        configs = config_copy(live, tmp_path / case / "configs",
                              {"training_config.yaml": {"training": {"data_dir": str(data_dir)}}})  # fmt: skip
        env = {**cli_env(live), "MLOPS_CONFIG_DIR": str(configs)}
        running[case] = subprocess.Popen([sys.executable, script], env=env, cwd=PROJ_ROOT, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    for case, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, f"{case}: exit {process.returncode}\n{err[-2000:]}"
        for expected in CLI_CASES[case][2]:
            assert expected in err, f"{case}: {expected!r} not in\n{err[-2000:]}"
        assert "Traceback" not in err, f"{case}: a traceback instead of a message\n{err}"
    assert store_snapshot(live) == before  # manifest bytes, history, runs, versions, results: all identical
