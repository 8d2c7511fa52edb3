"""The deployed ``rag_model`` against BM25 and its own sparse-only and dense-only ablations.

``python -m mlops.benchmarks.retrieval [--models-dir DIR] [--data-dir DIR] [--split test]``

Every method ranks the same documents: the ones ``rag_model`` indexes (``build_documents`` over
the destinations and Sri Lanka CSVs: name twice, country or district/province, category,
description, attractions/highlights, activities, climate/best time, dishes, budget). The
``rag_model`` rows use the deployed serving twin (``models/``, hashes verified), i.e. what answers
users; the ablations are that twin with its fusion weights changed. BM25 is ``rank_bm25.BM25Okapi``
(k1 = 1.5, b = 0.75) over :func:`bm25_tokens`. Scored on the ``retrieval_eval.csv`` split with the
same ``ranking_metrics`` as training (hit@1, hit@3, MRR; a query with two relevant places counts
its first hit). Latency is one query at a time, scoring every document and sorting, in this process.
"""

from __future__ import annotations

import argparse
import copy
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlops.modeling.text import normalize

# sklearn's English stop-word list (the one rag_model's TF-IDF drops), frozen here so the
# tokenizer needs no scikit-learn import
STOP_WORDS = frozenset(
    "a about above across after afterwards again against all almost alone along already also although always am "
    "among amongst amoungst amount an and another any anyhow anyone anything anyway anywhere are around as at back "
    "be became because become becomes becoming been before beforehand behind being below beside besides between "
    "beyond bill both bottom but by call can cannot cant co con could couldnt cry de describe detail do done down "
    "due during each eg eight either eleven else elsewhere empty enough etc even ever every everyone everything "
    "everywhere except few fifteen fifty fill find fire first five for former formerly forty found four from front "
    "full further get give go had has hasnt have he hence her here hereafter hereby herein hereupon hers herself "
    "him himself his how however hundred i ie if in inc indeed interest into is it its itself keep last latter "
    "latterly least less ltd made many may me meanwhile might mill mine more moreover most mostly move much must my "
    "myself name namely neither never nevertheless next nine no nobody none noone nor not nothing now nowhere of off "
    "often on once one only onto or other others otherwise our ours ourselves out over own part per perhaps please "
    "put rather re same see seem seemed seeming seems serious several she should show side since sincere six sixty "
    "so some somehow someone something sometime sometimes somewhere still such system take ten than that the their "
    "them themselves then thence there thereafter thereby therefore therein thereupon these they thick thin third "
    "this those though three through throughout thru thus to together too top toward towards twelve twenty two un "
    "under until up upon us very via was we well were what whatever when whence whenever where whereafter whereas "
    "whereby wherein whereupon wherever whether which while whither who whoever whole whom whose why will with "
    "within without would yet you your yours yourself yourselves".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def _s_stem(token: str) -> str:
    """Harman's S-stemmer: plural endings only (``beaches`` → ``beache``, ``cities`` → ``city``)."""
    if len(token) > 4 and token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("us", "ss")):
        return token[:-1]
    return token


def bm25_tokens(text: str) -> list[str]:
    """The BM25 tokenizer: the project's ``normalize``, accents folded, word tokens of 2+ characters,
    English stop words dropped, plural endings stripped."""
    folded = unicodedata.normalize("NFKD", normalize(text))
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [_s_stem(tok) for tok in _WORD.findall(folded) if len(tok) > 1 and tok not in STOP_WORDS]


class BM25Ranker:
    """``rank_bm25.BM25Okapi`` over the documents' search texts."""

    def __init__(self, documents: Sequence[dict], k1: float = 1.5, b: float = 0.75):
        from rank_bm25 import BM25Okapi

        self.ids = [doc["id"] for doc in documents]
        self.index = BM25Okapi([bm25_tokens(doc["text"]) for doc in documents], k1=k1, b=b)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return np.vstack([self.index.get_scores(bm25_tokens(q)) for q in queries]) if queries else np.zeros((0, 0))


def ablation(twin, dense_weight: float, boosts: bool = True):
    """A copy of the retrieval twin with another dense weight, optionally without mention boosts."""
    variant = copy.copy(twin)
    variant.dense_weight = dense_weight
    if not boosts:
        variant.name_boost = variant.country_boost = 0.0
    return variant


def methods(twin) -> dict[str, Callable[[Sequence[str]], np.ndarray]]:
    """Every method to compare: name → batch scoring function over ``twin.ids``."""
    w = twin.dense_weight
    return {
        f"rag_model (deployed: dense weight {w:g} + mention boosts)": twin.scores,
        "BM25 (rank-bm25 Okapi, k1 1.5, b 0.75)": BM25Ranker(twin.documents).scores,
        "sparse-only (rag_model TF-IDF + mention boosts)": ablation(twin, 0.0).scores,
        "dense-only (embedding_model + mention boosts)": ablation(twin, 1.0).scores,
        "TF-IDF alone (no boosts)": ablation(twin, 0.0, boosts=False).scores,
        "embedding alone (no boosts)": ablation(twin, 1.0, boosts=False).scores,
    }


def evaluate(
    scorer: Callable[[Sequence[str]], np.ndarray],
    ids: Sequence[str],
    queries: Sequence[str],
    relevant: Sequence[Sequence[str]],
) -> dict[str, float]:
    """hit@1, hit@3, MRR of ``scorer`` and its per-query latency (one query at a time, top-3 sorted)."""
    from mlops.evaluation import ranking_metrics

    rows, latencies = [], []
    for query in queries:
        tic = time.perf_counter()
        row = scorer([query])[0]
        np.argsort(-row, kind="stable")[:3]
        latencies.append((time.perf_counter() - tic) * 1000.0)
        rows.append(row)
    metrics = ranking_metrics(np.vstack(rows), ids, relevant)
    return {
        "hit_at_1": metrics["hit_at_1"],
        "hit_at_3": metrics["hit_at_3"],
        "mrr": metrics["mrr"],
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "queries": len(queries),
    }


def run_benchmark(models_dir: Path, data_dir: Path, split: str = "test") -> list[dict]:
    """One row per method on the ``split`` queries of ``retrieval_eval.csv``.

    Raises:
        DeploymentError: Nothing deployed in ``models_dir`` or a file fails its hash check.
    """
    from mlops.chatbot.bot import load_models
    from mlops.data import load_datasets

    twin = load_models(Path(models_dir))[0]["rag_model"]
    frame = load_datasets(Path(data_dir)).retrieval_split(split)
    queries, relevant = list(frame["query"]), [list(ids) for ids in frame["relevant_ids"]]
    for query in queries[:5]:  # warm caches (tokenizer, regexes) before timing
        twin.scores([query])
    return [{"method": name, **evaluate(fn, twin.ids, queries, relevant)} for name, fn in methods(twin).items()]


def render_table(rows: Sequence[dict]) -> str:
    lines = [
        "| method | hit@1 | hit@3 | MRR | latency p50 (ms) | latency p95 (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['hit_at_1']:.3f} | {row['hit_at_3']:.3f} | {row['mrr']:.3f} | "
            f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from mlops.cli import exit_codes, setup_logging
    from mlops.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, help="deployed models (default: the configured models/)")
    parser.add_argument("--data-dir", type=Path, help="folder of retrieval_eval.csv and the knowledge base")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    args = parser.parse_args(argv)
    with exit_codes():
        setup_logging("WARNING")
        settings = load_settings()
        rows = run_benchmark(args.models_dir or settings.models_dir, args.data_dir or settings.data_dir, args.split)
        print(render_table(rows))  # noqa: T201 - the CLI's own output


if __name__ == "__main__":
    main()
