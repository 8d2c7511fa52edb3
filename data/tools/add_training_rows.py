"""Append new labelled queries to the train split of data/intents.csv, keeping val and test fixed.

    python data/tools/add_training_rows.py NEW.csv [NEW2.csv ...]

Each input is a CSV with ``text,intent``. A new row is dropped when its text already exists (case
insensitive) or when it is a near-duplicate (character 3-5-gram TF-IDF cosine >= 0.75, the rule of
``assign_splits.py`` and of the data tests) of a val or test row: those splits stay exactly as they
were, and no held-out query gains a near twin in training. Only counts are printed, never held-out
text, so whoever adds rows stays blind to the held-out splits.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from mlops.taxonomy import INTENTS

DATA = Path(__file__).resolve().parents[1]
NEAR_DUPLICATE = 0.75
FIELDS = ["text", "intent", "split"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def main(paths: list[str], target: Path = DATA / "intents.csv") -> int:
    rows = read_rows(target)
    known_intents = set(INTENTS) | {row["intent"] for row in rows}  # the taxonomy, plus any the data added
    new: list[dict[str, str]] = []
    for path in map(Path, paths):
        for number, row in enumerate(read_rows(path), start=2):
            text, intent = (row.get("text") or "").strip(), (row.get("intent") or "").strip()
            if not text or intent not in known_intents:
                print(
                    f"{path}, row {number}: empty text or unknown intent {intent!r} "
                    f"(allowed: {', '.join(sorted(known_intents))})",
                    file=sys.stderr,
                )
                return 2
            new.append({"text": text, "intent": intent, "split": "train"})

    seen = {row["text"].lower() for row in rows}
    unique = []
    for row in new:
        if row["text"].lower() not in seen:
            seen.add(row["text"].lower())
            unique.append(row)
    held_out = [row for row in rows if row["split"] in ("val", "test")]
    texts = [row["text"].lower() for row in rows + unique]
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).fit_transform(texts)
    held = matrix[[i for i, row in enumerate(rows) if row["split"] in ("val", "test")]]
    sims = (matrix[len(rows) :] @ held.T).toarray() if held_out else np.zeros((len(unique), 0))
    near = sims.max(axis=1) >= NEAR_DUPLICATE if sims.size else np.zeros(len(unique), dtype=bool)
    kept = [row for row, dropped in zip(unique, near, strict=True) if not dropped]

    order = {"train": 0, "val": 1, "test": 2}
    out = sorted(rows + kept, key=lambda r: (order[r["split"]], r["intent"]))
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in FIELDS} for row in out)
    print(
        f"{len(new)} new rows: {len(new) - len(unique)} already present, {int(near.sum())} near a val/test "
        f"row (dropped), {len(kept)} added to train"
    )
    for intent, count in sorted(Counter(row["intent"] for row in kept).items()):
        print(f"  {intent:28s} +{count}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) if len(sys.argv) > 1 else (print(__doc__), 2)[1])
