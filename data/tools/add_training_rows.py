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
    # The IDF depends on the whole corpus, so new rows can lift an older train row over the threshold
    # too: check every train row against val/test in the final corpus, until nothing changes.
    held_out = [row for row in rows if row["split"] in ("val", "test")]
    train = [row for row in rows if row["split"] == "train"] + unique
    new_ids, dropped_old = {id(row) for row in unique}, 0
    while held_out and train:
        matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).fit_transform(
            [row["text"].lower() for row in held_out + train]
        )
        near = (matrix[len(held_out) :] @ matrix[: len(held_out)].T).toarray().max(axis=1) >= NEAR_DUPLICATE
        if not near.any():
            break
        dropped_old += sum(1 for row, n in zip(train, near, strict=True) if n and id(row) not in new_ids)
        train = [row for row, n in zip(train, near, strict=True) if not n]
    kept = [row for row in train if id(row) in new_ids]
    rows = [row for row in rows if row["split"] != "train"] + [row for row in train if id(row) not in new_ids]
    order = {"train": 0, "val": 1, "test": 2}
    out = sorted(rows + kept, key=lambda r: (order[r["split"]], r["intent"]))
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in FIELDS} for row in out)
    print(
        f"{len(new)} new rows: {len(new) - len(unique)} already present, {len(unique) - len(kept)} near a val/test "
        f"row (dropped), {len(kept)} added to train"
        + (f"; {dropped_old} older train rows became near a val/test row and were dropped" if dropped_old else "")
    )
    for intent, count in sorted(Counter(row["intent"] for row in kept).items()):
        print(f"  {intent:28s} +{count}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) if len(sys.argv) > 1 else (print(__doc__), 2)[1])
