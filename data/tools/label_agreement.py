"""Agreement of two blind annotators with the gold labels of the val and test splits.

    python data/tools/label_agreement.py

Reads ``data/label_agreement.csv`` (``text,split,gold,annotator_1,annotator_2``: every val and test
query of ``intents.csv``, labelled by two annotators who saw the labelling rules and the train rows,
never the gold label or any model output) and prints, per split, how often each annotator matches
the gold label and each other, and how many queries both annotators label alike but differently
from the gold label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[1]


def agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per split: queries, annotator 1 / 2 = gold, annotators agree, both differ from gold alike."""
    rows = []
    for split, part in frame.groupby("split", sort=False):
        same = part["annotator_1"] == part["annotator_2"]
        rows.append(
            {
                "split": split,
                "queries": len(part),
                "annotator_1_gold": (part["annotator_1"] == part["gold"]).mean(),
                "annotator_2_gold": (part["annotator_2"] == part["gold"]).mean(),
                "annotators_agree": same.mean(),
                "both_differ_alike": int((same & (part["annotator_1"] != part["gold"])).sum()),
            }
        )
    return pd.DataFrame(rows).set_index("split")


def main() -> None:
    frame = pd.read_csv(DATA / "label_agreement.csv", dtype=str, keep_default_na=False)
    print(agreement(frame).round(3).to_string())  # noqa: T201 (a CLI)


if __name__ == "__main__":
    main()
