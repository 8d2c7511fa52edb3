"""Assign the fixed train/val/test split of data/intents.csv and dev/test of data/retrieval_eval.csv.

Run once when examples are added: `python data/tools/assign_splits.py`. Near-duplicate texts
(character 3-5-gram TF-IDF cosine >= 0.75) are grouped first and each group goes to one split, so
no test example has a near twin in training. Per intent, groups are shuffled with a fixed seed and
dealt to test (20 %), val (15 %) and train (the rest). Existing rows keep nothing of their old split.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

DATA = Path(__file__).resolve().parents[1]
SEED = 20261201
NEAR_DUPLICATE = 0.75


def near_duplicate_groups(texts: list[str]) -> list[int]:
    """Union-find over pairs whose character n-gram cosine is at least NEAR_DUPLICATE."""
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).fit_transform([t.lower() for t in texts])
    sims = (matrix @ matrix.T).toarray()
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(sims, k=1) >= NEAR_DUPLICATE), strict=True):
        parent[find(i)] = find(j)
    return [find(i) for i in range(len(texts))]


def deal(strata: list[str], groups: list[int], shares: dict[str, float]) -> list[str]:
    """Deal whole near-duplicate groups to splits, stratified by the group's first member."""
    rng = random.Random(SEED)
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    by_stratum: dict[str, list[int]] = {}
    for group, items in members.items():
        by_stratum.setdefault(strata[min(items)], []).append(group)
    split = [""] * len(groups)
    for stratum in sorted(by_stratum):
        order = sorted(by_stratum[stratum])
        rng.shuffle(order)
        size = sum(len(members[g]) for g in order)
        targets = {name: round(share * size) for name, share in shares.items()}
        counts = dict.fromkeys(shares, 0)
        names = list(shares)
        for group in order:
            name = next((n for n in names[:-1] if counts[n] < targets[n]), names[-1])
            for i in members[group]:
                split[i] = name
            counts[name] += len(members[group])
    return split


def main() -> None:
    path = DATA / "intents.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    splits = deal(
        [row["intent"] for row in rows], near_duplicate_groups(texts), {"test": 0.2, "val": 0.15, "train": 0.65}
    )
    order = {"train": 0, "val": 1, "test": 2}
    out = sorted(
        ({"text": r["text"], "intent": r["intent"], "split": s} for r, s in zip(rows, splits, strict=True)),
        key=lambda r: (order[r["split"]], r["intent"]),
    )
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "intent", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(out)

    path = DATA / "retrieval_eval.csv"
    if not path.exists():
        return
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    source = ["sri_lanka" if r["relevant_ids"].startswith("SL") else "destinations" for r in rows]
    splits = deal(source, list(range(len(rows))), {"test": 0.5, "dev": 0.5})
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["query", "relevant_ids", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "split": s} for r, s in zip(rows, splits, strict=True))


if __name__ == "__main__":
    main()
