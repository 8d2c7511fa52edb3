"""Load, validate and fingerprint the project's datasets under ``data/``.

Every problem is reported as a :class:`DataValidationError` naming the file, the row (1-based data
row, the header not counted) and the column, so a user can open the CSV and fix it.
"""

from __future__ import annotations

import difflib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlops.integrity import sha256_bytes, sha256_file
from mlops.modeling.text import normalize
from mlops.taxonomy import INTENTS, OUT_OF_SCOPE

logger = logging.getLogger(__name__)

__all__ = ["INTENTS", "OUT_OF_SCOPE", "Datasets", "DataValidationError", "load_datasets"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Oceania")
PROVINCES = (
    "Western",
    "Central",
    "Southern",
    "Northern",
    "Eastern",
    "North Western",
    "North Central",
    "Uva",
    "Sabaragamuwa",
)
BUDGET_LEVELS = ("budget", "mid-range", "luxury")
INTENT_SPLITS = ("train", "val", "test")
RETRIEVAL_SPLITS = ("dev", "test")
MAX_FILE_BYTES = 50 * 1024 * 1024  # far above our data; refuses a runaway file before parsing it
MAX_ROWS = 100_000  # ~30x the largest file; a runaway export is refused before pandas parses it
# what spreadsheets and pandas write for a missing value; never a real name, text or id in our data
MISSING_TOKENS = frozenset({"nan", "null", "none", "n/a", "#n/a", "<na>", "nat"})

FILES = {
    "destinations": "enhanced_travel_destinations.csv",
    "sri_lanka": "enhanced_sri_lanka_guide.csv",
    "intents": "intents.csv",
    "retrieval": "retrieval_eval.csv",
    "courtesy": "courtesy_phrases.csv",
}

DESTINATION_COLUMNS = (
    "id", "name", "country", "continent", "category", "description", "top_attractions",
    "activities", "best_months", "climate", "avg_daily_cost_usd", "budget_level",
)  # fmt: skip
DESTINATION_OPTIONAL = ("currency", "languages", "local_dishes", "getting_around", "safety_notes")
SRI_LANKA_COLUMNS = (
    "id", "name", "province", "district", "category", "description", "highlights",
    "activities", "best_time", "how_to_get_there",
)  # fmt: skip
SRI_LANKA_OPTIONAL = ("best_months",)
INTENT_COLUMNS = ("text", "intent", "split")
RETRIEVAL_COLUMNS = ("query", "relevant_ids", "split")
COURTESY_COLUMNS = ("phrase", "meaning", "language")
COURTESY_MEANINGS = ("hello", "thanks", "goodbye")


class DataValidationError(ValueError):
    """A dataset file is missing, unreadable or violates its schema."""

    def __init__(self, path: Path | str, message: str, row: int | None = None, column: str | None = None):
        self.path, self.row, self.column = str(path), row, column
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Datasets:
    """The validated datasets with the sha256 digest of each file."""

    destinations: pd.DataFrame
    sri_lanka: pd.DataFrame
    intents: pd.DataFrame
    retrieval: pd.DataFrame
    courtesy: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """One sha256 over all files, stable across machines."""
        joined = "\n".join(f"{name}:{self.digests[name]}" for name in sorted(self.digests))
        return sha256_bytes(joined.encode())

    def intent_split(self, split: str) -> pd.DataFrame:
        return self.intents[self.intents["split"] == split].reset_index(drop=True)

    def retrieval_split(self, split: str) -> pd.DataFrame:
        return self.retrieval[self.retrieval["split"] == split].reset_index(drop=True)

    @property
    def courtesy_map(self) -> dict[str, str]:
        """Greetings, thanks and farewells in other languages and chat shorthand -> their English word."""
        return dict(zip(self.courtesy["phrase"], self.courtesy["meaning"], strict=True))


def read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a UTF-8 CSV as strings, checking size, encoding, emptiness, columns and blank cells.

    Args:
        path: The CSV file.
        required: Columns that must be present and non-blank in every row.
        optional: Columns that may be absent; when present they are kept.

    Returns:
        The frame with whitespace-stripped string cells and only the known columns.

    Raises:
        DataValidationError: On any problem, naming file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataValidationError(path, f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes")
    raw = path.read_bytes()
    lines = raw.count(b"\n")  # before decoding: a runaway file costs one copy of itself, not three
    if lines > MAX_ROWS:
        raise DataValidationError(path, f"file has about {lines:,} lines; the limit is {MAX_ROWS:,} rows per file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataValidationError(
            path,
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at line {line} of the file, counting the header as"
            " line 1 (save the file as UTF-8)",
        ) from None
    if not text or text.isspace():
        raise DataValidationError(path, "file is empty; expected a header row with columns " + ", ".join(required))
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataValidationError(path, f"not a valid CSV: {exc}") from None
    frame.columns = [str(col).strip() for col in frame.columns]
    missing = [col for col in required if col not in frame.columns]
    if missing:
        unknown = [col for col in frame.columns if col not in required and col not in optional]
        hints = [
            f"'{found[0]}' looks like a renamed '{col}'"
            for col in missing
            if (found := difflib.get_close_matches(col, unknown, n=1, cutoff=0.6))
        ]
        raise DataValidationError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
            + (f" ({'; '.join(hints)})" if hints else ""),
            column=missing[0],
        )
    if frame.empty:
        raise DataValidationError(path, "header only: the file has no data rows")
    keep = list(required) + [col for col in optional if col in frame.columns]
    ignored = [col for col in frame.columns if col not in keep]
    if ignored:  # allowed (a user's own notes), but said: it may also be a misspelt optional column
        logger.warning(
            "%s: ignoring column(s) %s; the columns read are %s",
            path,
            ", ".join(ignored),
            ", ".join(list(required) + list(optional)),
        )
    frame = frame[keep].apply(lambda col: col.str.strip())
    for col in required:
        blank = frame.index[frame[col] == ""]
        if len(blank):
            raise DataValidationError(path, "empty value in a required column", row=int(blank[0]) + 1, column=col)
        marked = frame.index[frame[col].str.lower().isin(MISSING_TOKENS)]
        if len(marked):
            raise DataValidationError(
                path,
                f"'{frame.at[marked[0], col]}' marks a missing value in a required column",
                row=int(marked[0]) + 1,
                column=col,
            )
    return frame


def _check_allowed(path: Path, frame: pd.DataFrame, column: str, allowed: tuple[str, ...]) -> None:
    bad = frame.index[~frame[column].isin(allowed)]
    if len(bad):
        value = frame.at[bad[0], column]
        raise DataValidationError(
            path, f"'{value}' is not allowed; use one of: {', '.join(allowed)}", row=int(bad[0]) + 1, column=column
        )


def _check_unique(path: Path, frame: pd.DataFrame, column: str) -> None:
    dup = frame.index[frame[column].str.lower().duplicated()]
    if len(dup):
        value = frame.at[dup[0], column]
        first = int(frame.index[frame[column].str.lower() == value.lower()][0]) + 1
        raise DataValidationError(
            path, f"duplicate value '{value}' (first seen in row {first})", row=int(dup[0]) + 1, column=column
        )


def _check_months(path: Path, frame: pd.DataFrame, column: str) -> None:
    for idx, value in frame[column].items():
        if value == "":
            continue
        months = [m.strip() for m in value.split(";")]
        wrong = [m for m in months if m not in MONTHS]
        if wrong:
            raise DataValidationError(
                path,
                f"'{wrong[0]}' is not a month; use ';'-separated {', '.join(MONTHS)}",
                row=int(idx) + 1,
                column=column,
            )


def _to_positive_int(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    numbers = pd.to_numeric(frame[column], errors="coerce")
    bad = frame.index[numbers.isna() | (numbers <= 0) | (numbers != numbers.round())]
    if len(bad):
        raise DataValidationError(
            path,
            f"expected a positive whole number, got '{frame.at[bad[0], column]}'",
            row=int(bad[0]) + 1,
            column=column,
        )
    return numbers.astype(int)


def validate_destinations(path: Path) -> pd.DataFrame:
    frame = read_csv(path, DESTINATION_COLUMNS, DESTINATION_OPTIONAL)
    _check_unique(path, frame, "id")
    _check_unique(path, frame, "name")
    _check_allowed(path, frame, "continent", CONTINENTS)
    _check_allowed(path, frame, "budget_level", BUDGET_LEVELS)
    _check_months(path, frame, "best_months")
    frame["avg_daily_cost_usd"] = _to_positive_int(path, frame, "avg_daily_cost_usd")
    return frame


def validate_sri_lanka(path: Path) -> pd.DataFrame:
    frame = read_csv(path, SRI_LANKA_COLUMNS, SRI_LANKA_OPTIONAL)
    _check_unique(path, frame, "id")
    _check_unique(path, frame, "name")
    _check_allowed(path, frame, "province", PROVINCES)
    if "best_months" in frame.columns:
        _check_months(path, frame, "best_months")
    return frame


def validate_intents(path: Path, min_per_intent: int = 5) -> pd.DataFrame:
    frame = read_csv(path, INTENT_COLUMNS)
    _check_allowed(path, frame, "intent", INTENTS)
    _check_allowed(path, frame, "split", INTENT_SPLITS)
    key = frame["text"].str.lower()
    dup = frame.index[key.duplicated()]
    if len(dup):
        first = int(frame.index[key == key[dup[0]]][0]) + 1
        raise DataValidationError(
            path,
            f"duplicate text '{frame.at[dup[0], 'text']}' (first in row {first})",
            row=int(dup[0]) + 1,
            column="text",
        )
    for split in INTENT_SPLITS:
        counts = frame.loc[frame["split"] == split, "intent"].value_counts()
        for intent in INTENTS:
            if counts.get(intent, 0) < (min_per_intent if split == "train" else 1):
                raise DataValidationError(
                    path,
                    f"intent '{intent}' has {counts.get(intent, 0)} example(s) in split '{split}'; "
                    f"need at least {min_per_intent if split == 'train' else 1}",
                    column="intent",
                )
    return frame


def validate_retrieval(path: Path, known_ids: set[str]) -> pd.DataFrame:
    frame = read_csv(path, RETRIEVAL_COLUMNS)
    _check_allowed(path, frame, "split", RETRIEVAL_SPLITS)
    ids = []
    for idx, value in frame["relevant_ids"].items():
        row_ids = [item.strip() for item in value.split(";") if item.strip()]
        unknown = [item for item in row_ids if item not in known_ids]
        if not row_ids or unknown:
            raise DataValidationError(
                path,
                f"relevant id '{unknown[0] if unknown else value}' does not exist in the knowledge base",
                row=int(idx) + 1,
                column="relevant_ids",
            )
        ids.append(row_ids)
    frame["relevant_ids"] = ids
    return frame


def validate_courtesy(path: Path) -> pd.DataFrame:
    frame = read_csv(path, COURTESY_COLUMNS)
    _check_allowed(path, frame, "meaning", COURTESY_MEANINGS)
    frame["phrase"] = frame["phrase"].map(normalize)
    wordless = frame.index[~frame["phrase"].str.contains(r"\w")]
    if len(wordless):
        raise DataValidationError(
            path, "a phrase needs at least one letter or digit", row=int(wordless[0]) + 1, column="phrase"
        )
    _check_unique(path, frame, "phrase")
    return frame


def load_datasets(data_dir: Path, min_per_intent: int = 5) -> Datasets:
    """Load and validate all five datasets.

    Args:
        data_dir: Folder holding the CSV files named in ``FILES``.
        min_per_intent: Minimum training examples every intent must have.

    Returns:
        The validated datasets with their digests.

    Raises:
        DataValidationError: On the first problem found, naming file, row and column.
    """
    data_dir = Path(data_dir)
    paths = {name: data_dir / filename for name, filename in FILES.items()}
    destinations = validate_destinations(paths["destinations"])
    sri_lanka = validate_sri_lanka(paths["sri_lanka"])
    clash = set(destinations["id"]) & set(sri_lanka["id"])
    if clash:
        raise DataValidationError(paths["sri_lanka"], f"id '{sorted(clash)[0]}' is also a destination id", column="id")
    intents = validate_intents(paths["intents"], min_per_intent)
    retrieval = validate_retrieval(paths["retrieval"], set(destinations["id"]) | set(sri_lanka["id"]))
    courtesy = validate_courtesy(paths["courtesy"])
    digests = {name: sha256_file(path) for name, path in paths.items()}
    logger.info(
        "Loaded %d destinations, %d Sri Lanka places, %d intent examples, %d retrieval queries, %d courtesy phrases",
        len(destinations), len(sri_lanka), len(intents), len(retrieval), len(courtesy),
    )  # fmt: skip
    return Datasets(destinations, sri_lanka, intents, retrieval, courtesy, paths, digests)
