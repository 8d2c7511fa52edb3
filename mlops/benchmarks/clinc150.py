"""The intent model (``llm_model``) and the few-shot model on CLINC150, next to the paper's numbers.

``python -m mlops.benchmarks.clinc150 [--settings full small] [--data-dir DIR] [--no-few-shot]``

CLINC150 (Larson et al., EMNLP 2019) has 150 in-scope intents and out-of-scope (``oos``) queries.
The intent model is built by the same code with the same settings as ``llm_model`` (the project's
``training_config.yaml``), trained on CLINC's train split, its out-of-scope threshold tuned on the
val split only, and scored once on the test split, in the paper's two settings:

- ``oos-train``: out-of-scope is a 151st class trained on ``oos_train`` (our model also keeps its
  confidence threshold, as ``llm_model`` does);
- ``oos-threshold``: trained on in-scope queries only; out-of-scope when the top confidence is
  below the threshold.

The few-shot model (Full only) builds prototypes from k examples per intent on top of an embedding
model trained from scratch by the project's embedding trainer on CLINC's train split.

The data is read from ``--data-dir``, else ``$CLINC150_DIR``, else ``../shared/benchmarks/clinc150``
beside the checkout. When it is absent the benchmark says where it looked and exits 0. Nothing is
written to ``data/`` and nothing trained here is registered or deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlops.config import PROJ_ROOT, IntentSettings, Settings
from mlops.evaluation import intent_metrics
from mlops.modeling.intent import IntentClassifier, build_intent_model
from mlops.taxonomy import OUT_OF_SCOPE

DEFAULT_DIR = PROJ_ROOT.parent / "shared" / "benchmarks" / "clinc150"
ENV_VAR = "CLINC150_DIR"
FILES = {"full": "data_full.json", "small": "data_small.json", "imbalanced": "data_imbalanced.json"}
METHODS = ("oos-train", "oos-threshold")
COMMAND = "python -m mlops.benchmarks.clinc150 --settings full small"

Progress = Callable[[str], None]

# Table 2 of Larson et al. (2019): (in-scope accuracy, OOS recall) in %, per method and setting.
PAPER = {
    "oos-train": {
        "FastText": {"full": (89.0, 9.7), "small": (84.5, 23.2), "imbalanced": (87.2, 12.2)},
        "SVM": {"full": (91.0, 14.5), "small": (89.6, 18.6), "imbalanced": (89.9, 16.0)},
        "CNN": {"full": (91.2, 18.9), "small": (88.9, 22.2), "imbalanced": (89.1, 19.0)},
        "DialogFlow": {"full": (91.7, 14.0), "small": (89.4, 14.1), "imbalanced": (90.7, 15.3)},
        "Rasa": {"full": (91.5, 45.3), "small": (88.9, 55.0), "imbalanced": (89.2, 49.6)},
        "MLP": {"full": (93.5, 47.4), "small": (91.5, 52.2), "imbalanced": (92.5, 35.6)},
        "BERT": {"full": (96.9, 40.3), "small": (96.4, 40.9), "imbalanced": (96.3, 43.8)},
    },
    "oos-threshold": {
        "SVM": {"full": (88.2, 18.0), "small": (85.6, 13.0), "imbalanced": (86.0, 0.0)},
        "FastText": {"full": (88.6, 28.3), "small": (84.8, 6.0), "imbalanced": (86.6, 33.2)},
        "DialogFlow": {"full": (90.8, 26.7), "small": (89.2, 20.5), "imbalanced": (89.2, 38.1)},
        "Rasa": {"full": (90.9, 31.2), "small": (89.6, 1.0), "imbalanced": (89.4, 0.0)},
        "CNN": {"full": (90.9, 30.9), "small": (88.9, 25.5), "imbalanced": (90.0, 26.9)},
        "MLP": {"full": (93.4, 49.1), "small": (91.3, 32.4), "imbalanced": (92.5, 13.3)},
        "BERT": {"full": (96.2, 52.3), "small": (96.2, 58.9), "imbalanced": (95.9, 52.8)},
    },
}


class DataMissing(ValueError):
    """The CLINC150 folder or one of its files is not there."""


@dataclass(frozen=True)
class Split:
    """Texts and labels of one split (CLINC's ``oos`` label is our ``out_of_scope``)."""

    texts: list[str]
    labels: list[str]

    @classmethod
    def of(cls, *parts: Sequence[Sequence[str]]) -> Split:
        pairs = [pair for part in parts for pair in part]
        return cls([text for text, _ in pairs], [OUT_OF_SCOPE if label == "oos" else label for _, label in pairs])


@dataclass(frozen=True)
class Clinc:
    """One CLINC150 setting: in-scope and out-of-scope parts of train, val and test."""

    name: str
    train: Split
    oos_train: Split
    val: Split
    test: Split

    def training(self, method: str) -> Split:
        """The training data of a method: with the out-of-scope class for ``oos-train`` only."""
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        if method == "oos-threshold":
            return self.train
        return Split(self.train.texts + self.oos_train.texts, self.train.labels + self.oos_train.labels)


def resolve_data_dir(cli_value: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``--data-dir``, else ``$CLINC150_DIR``, else the default beside the checkout."""
    env = os.environ if env is None else env
    value = cli_value or env.get(ENV_VAR)
    return Path(value).expanduser().resolve() if value else DEFAULT_DIR


def missing_message(data_dir: Path) -> str:
    return (
        f"CLINC150 benchmark skipped: no {FILES['full']} in {data_dir} "
        f"(set --data-dir or {ENV_VAR}; the data is at ../shared/benchmarks/clinc150 beside the checkout)"
    )


def load_setting(data_dir: Path, setting: str) -> Clinc:
    """Read one setting (``full``, ``small`` or ``imbalanced``).

    Raises:
        DataMissing: The file is not there.
        ValueError: An unknown setting.
    """
    if setting not in FILES:
        raise ValueError(f"unknown CLINC150 setting '{setting}'; choose from {', '.join(FILES)}")
    path = Path(data_dir) / FILES[setting]
    if not path.is_file():
        raise DataMissing(missing_message(Path(data_dir)))
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Clinc(
        setting,
        train=Split.of(raw["train"]),
        oos_train=Split.of(raw["oos_train"]),
        val=Split.of(raw["val"], raw["oos_val"]),
        test=Split.of(raw["test"], raw["oos_test"]),
    )


def subsample(clinc: Clinc, intents: int, per_intent: int, seed: int = 0) -> Clinc:
    """The first ``intents`` intents (sorted) with at most ``per_intent`` examples of each, per split."""
    keep = set(sorted(set(clinc.train.labels))[:intents]) | {OUT_OF_SCOPE}

    def cut(split: Split) -> Split:
        rng = random.Random(seed)
        pairs = list(zip(split.texts, split.labels, strict=True))
        rng.shuffle(pairs)
        seen: dict[str, int] = {}
        out = []
        for text, label in pairs:
            if label in keep and seen.get(label, 0) < per_intent:
                seen[label] = seen.get(label, 0) + 1
                out.append((text, label))
        return Split([t for t, _ in out], [lab for _, lab in out])

    return Clinc(clinc.name, cut(clinc.train), cut(clinc.oos_train), cut(clinc.val), cut(clinc.test))


# ------------------------------------------------------------------------------------ intent model
def tune_on_validation(model: IntentClassifier, val: Split, oos_weight: float) -> float:
    """Choose the out-of-scope threshold on the validation split (the test split is never seen)."""
    return model.tune_threshold(val.texts, val.labels, oos_weight)


def serving_size_mb(model: IntentClassifier) -> float:
    """Size of what would be deployed: the pickled numpy serving twin."""
    return len(pickle.dumps(model.serving_twin(), protocol=5)) / 2**20


def run_intent(
    clinc: Clinc,
    method: str,
    cfg: IntentSettings,
    places: Sequence[str],
    seed: int = 42,
    phrases: Mapping[str, str] | None = None,
) -> dict[str, float | str]:
    """Train on train (+ oos_train), tune on val, score on test: one row of the results table."""
    data = clinc.training(method)
    tic = time.perf_counter()
    model = build_intent_model(cfg, places, seed, phrases).fit(data.texts, data.labels)
    fit_s = time.perf_counter() - tic
    threshold = tune_on_validation(model, clinc.val, cfg.oos_weight)
    train_s = time.perf_counter() - tic
    scores = intent_metrics(clinc.test.labels, model.predict(clinc.test.texts))
    return {
        "setting": clinc.name,
        "method": method,
        "in_scope_accuracy": scores["in_scope_accuracy"],
        "oos_recall": scores["oos_recall"],
        "oos_precision": scores["oos_precision"],
        "threshold": threshold,
        "fit_s": fit_s,
        "train_s": train_s,
        "size_mb": serving_size_mb(model),
        "features": float(model.coef_.shape[0]),
    }


# ------------------------------------------------------------------------------------ few-shot model
def same_intent_pairs(split: Split) -> list[tuple[str, str]]:
    """(example, next example of the same intent) pairs for the embedding's contrastive phase."""
    grouped: dict[str, list[str]] = {}
    for text, label in zip(split.texts, split.labels, strict=True):
        grouped.setdefault(label, []).append(text)
    return [(texts[i], texts[(i + 1) % len(texts)]) for texts in grouped.values() for i in range(len(texts))]


def run_few_shot(
    clinc: Clinc,
    settings: Settings,
    workdir: Path,
    progress: Progress,
    phrases: Mapping[str, str] | None = None,
    places: Sequence[str] = (),
) -> dict[str, float | str]:
    """The few-shot trainer on CLINC's in-scope intents: accuracy at each k of the config, no out-of-scope.

    Only the largest k examples per intent are labelled for the embedding model too (training it on all
    15,000 would take minutes and would not be few-shot); the tokenizer and the character TF-IDF see
    the whole train split unlabelled.
    """
    from mlops.modeling.embedding import train_embedding
    from mlops.modeling.few_shot import build_few_shot_model, sample_k
    from mlops.modeling.text import PhraseTranslator

    emb, cfg, seed = settings.training.embedding_model, settings.training.few_shot_model, settings.training.seed
    tic = time.perf_counter()
    labelled = Split(*sample_k(clinc.train.texts, clinc.train.labels, max(cfg.k_values), seed))
    progress(f"{clinc.name}: training the embedding model on {len(labelled.texts)} labelled in-scope examples")
    _, encoder = train_embedding(
        list(zip(labelled.texts, labelled.labels, strict=True)),
        same_intent_pairs(labelled),
        clinc.train.texts,
        vocab_size=emb.vocab_size,
        embedding_dim=emb.embedding_dim,
        epochs=emb.epochs,
        batch_size=emb.batch_size,
        learning_rate=emb.learning_rate,
        seed=seed,
        workdir=workdir,
        triplet_margin=emb.triplet_margin,
    )
    embedding_s = time.perf_counter() - tic
    progress(f"{clinc.name}: few-shot prototypes at k = {', '.join(map(str, cfg.k_values))}")
    empty = build_few_shot_model(cfg, encoder, clinc.train.texts, PhraseTranslator(phrases or {}, keep=places))
    in_scope = [i for i, label in enumerate(clinc.test.labels) if label != OUT_OF_SCOPE]
    test_texts = [clinc.test.texts[i] for i in in_scope]
    truth = np.asarray([clinc.test.labels[i] for i in in_scope], dtype=object)
    row: dict[str, float | str] = {"setting": clinc.name, "method": "few-shot", "embedding_s": embedding_s}
    for k in cfg.k_values:
        scores = []
        for draw in range(cfg.seeds):
            texts, labels = sample_k(clinc.train.texts, clinc.train.labels, k, seed + draw)
            model = empty.without_intents().fit(texts, labels)
            scores.append(float(np.mean(model.predict(test_texts) == truth)))
        row[f"accuracy_k{k}"] = float(np.mean(scores))
    row["train_s"] = time.perf_counter() - tic
    return row


# ------------------------------------------------------------------------------------ orchestration
def project_knowledge(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """What the project's intent models know beyond their examples: the place names ``llm_model`` masks
    (from the knowledge base) and the courtesy phrases it translates (read, never written)."""
    from mlops.data import load_datasets
    from mlops.modeling.intent import place_vocabulary
    from mlops.training import knowledge_base_places

    data = load_datasets(settings.data_dir)
    return place_vocabulary(knowledge_base_places(data)), data.courtesy_map


def run_benchmark(
    data_dir: Path,
    settings: Settings,
    setting_names: Sequence[str] = ("full", "small"),
    few_shot: bool = True,
    progress: Progress | None = None,
) -> list[dict[str, float | str]]:
    """Every requested setting × method, plus the few-shot model on Full.

    Raises:
        DataMissing: The data folder or a setting's file is absent.
    """
    say = progress or (lambda message: None)
    cfg, seed = settings.training.llm_model, settings.training.seed
    places, phrases = project_knowledge(settings)
    rows = []
    for name in setting_names:
        clinc = load_setting(data_dir, name)
        for method in METHODS:
            say(f"{name}: intent model, {method} ({len(clinc.training(method).texts)} training examples)")
            rows.append(run_intent(clinc, method, cfg, places, seed, phrases))
            say(
                f"{name}: {method}: in-scope accuracy {rows[-1]['in_scope_accuracy']:.3f}, "
                f"OOS recall {rows[-1]['oos_recall']:.3f}, {rows[-1]['train_s']:.1f}s"
            )
        if few_shot and name == "full":
            with tempfile.TemporaryDirectory(prefix="clinc-embedding-") as tmp:
                rows.append(run_few_shot(clinc, settings, Path(tmp), say, phrases, places))
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def render_table(rows: Sequence[Mapping[str, float | str]]) -> str:
    """One markdown table: our rows first, then the paper's, for each method."""
    ours = {(row["method"], row["setting"]): row for row in rows}
    names = [s for s in FILES if any(row["setting"] == s and row["method"] in METHODS for row in rows)]
    names = names or ["full", "small"]
    header = (
        "| method | classifier | "
        + " | ".join(f"in-scope acc {n.title()}" for n in names)
        + " | "
        + " | ".join(f"OOS recall {n.title()}" for n in names)
        + " | training time (s) | serving size (MB) |"
    )
    lines = [header, "|" + " --- |" * (2 * len(names) + 4)]
    for method in METHODS:
        mine = [ours.get((method, n)) for n in names]
        accs = [_pct(r and float(r["in_scope_accuracy"])) for r in mine]
        recs = [_pct(r and float(r["oos_recall"])) for r in mine]
        times = " / ".join(f"{float(r['train_s']):.0f}" for r in mine if r)
        sizes = " / ".join(f"{float(r['size_mb']):.1f}" for r in mine if r)
        lines.append(
            f"| {method} | **ours (llm_model)** | {' | '.join(accs)} | {' | '.join(recs)} | {times} | {sizes} |"
        )
        for classifier, numbers in PAPER[method].items():
            accs = [f"{numbers[n][0]:.1f}" for n in names]
            recs = [f"{numbers[n][1]:.1f}" for n in names]
            lines.append(f"| {method} | {classifier} (paper) | {' | '.join(accs)} | {' | '.join(recs)} | – | – |")
    return "\n".join(lines) + "\n"


def render_few_shot(rows: Sequence[Mapping[str, float | str]]) -> str:
    few = [row for row in rows if row["method"] == "few-shot"]
    if not few:
        return ""
    ks = sorted(int(key.removeprefix("accuracy_k")) for key in few[0] if key.startswith("accuracy_k"))
    lines = [
        "| setting | " + " | ".join(f"in-scope acc k={k}" for k in ks) + " | training time (s) |",
        "|" + " --- |" * (len(ks) + 2),
    ]
    for row in few:
        accs = " | ".join(_pct(float(row[f"accuracy_k{k}"])) for k in ks)
        lines.append(f"| {str(row['setting']).title()} | {accs} | {float(row['train_s']):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from mlops.cli import StepPrinter, exit_codes, setup_logging
    from mlops.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=f"CLINC150 folder (default: ${ENV_VAR}, else {DEFAULT_DIR})")
    parser.add_argument("--settings", nargs="+", choices=list(FILES), default=["full", "small"])
    parser.add_argument("--no-few-shot", action="store_true", help="skip the few-shot model (saves its embedding)")
    parser.add_argument("--json", type=Path, help="also write the result rows to this JSON file")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if not (data_dir / FILES["full"]).is_file():
        print(missing_message(data_dir))  # noqa: T201 - the CLI's own output
        return
    with exit_codes():
        settings = load_settings()
        setup_logging("WARNING")
        steps = StepPrinter()
        rows = run_benchmark(data_dir, settings, args.settings, not args.no_few_shot, steps)
        steps.done()
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        print(f"\n{render_table(rows)}\n{render_few_shot(rows)}")  # noqa: T201 - the CLI's own output


if __name__ == "__main__":
    sys.exit(main())
