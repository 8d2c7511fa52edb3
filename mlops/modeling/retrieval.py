"""``rag_model``: retrieval over the destination and Sri Lanka knowledge base, and answers from it.

Each record becomes one document. A query is scored against every document by a sparse score
(word TF-IDF cosine) and a dense score (cosine of ``embedding_model`` vectors), fused as
``w * dense + (1 - w) * sparse`` plus a boost when the query names the place; ``w`` is tuned on the
``dev`` split. The answer is composed (``mlops.modeling.answers``) only from the records retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import product
from typing import TYPE_CHECKING

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from mlops.evaluation import ranking_metrics
from mlops.modeling.embedding import StaticEncoder
from mlops.modeling.serving import PhraseIndex, RetrievalTwin, TfidfTwin
from mlops.modeling.text import normalize, normalize_batch

if TYPE_CHECKING:
    import pandas as pd

MIN_RELEVANT_SCORE = 0.12  # below this fused score the best hit is not about the query at all


def build_documents(destinations: pd.DataFrame, sri_lanka: pd.DataFrame) -> list[dict]:
    """Turn both knowledge bases into documents with a search text and the original record."""
    docs = []
    for record in destinations.to_dict("records"):
        docs.append(
            {
                "id": record["id"],
                "name": record["name"],
                "source": "destinations",
                "location": f"{record['country']}, {record['continent']}",
                "record": record,
                "text": " . ".join(
                    str(record.get(col, ""))
                    for col in (
                        "name",
                        "name",
                        "country",
                        "continent",
                        "category",
                        "description",
                        "top_attractions",
                        "activities",
                        "climate",
                        "local_dishes",
                        "budget_level",
                    )
                ),  # fmt: skip
            }
        )
    for record in sri_lanka.to_dict("records"):
        docs.append(
            {
                "id": record["id"],
                "name": record["name"],
                "source": "sri_lanka",
                "location": f"{record['district']} District, {record['province']} Province, Sri Lanka",
                "record": record,
                "text": " . ".join(
                    str(record.get(col, ""))
                    for col in (
                        "name",
                        "name",
                        "district",
                        "province",
                        "category",
                        "description",
                        "highlights",
                        "activities",
                        "best_time",
                    )
                )
                + " . sri lanka",
            }  # fmt: skip
        )
    return docs


def _name_variants(name: str) -> set[str]:
    base = normalize(re.sub(r"\(.*?\)", "", name))
    return {base, *(part.strip() for part in re.split(r"[/,&]| and ", base) if len(part.strip()) >= 4)} - {""}


def _index(documents: list[dict], variants) -> PhraseIndex:
    phrases: dict[str, set[int]] = {}
    for i, doc in enumerate(documents):
        for phrase in variants(doc):
            phrases.setdefault(phrase, set()).add(i)
    return PhraseIndex(phrases)


def _country_variants(doc: dict) -> set[str]:
    if doc["source"] == "sri_lanka":
        return {"sri lanka", "srilanka", "ceylon"}
    return _name_variants(doc["record"]["country"])


class RetrievalModel:
    """Hybrid sparse + dense retriever with an answer composer.

    Args:
        documents: Output of :func:`build_documents`.
        encoder: The embedding model used for the dense score.
        dense_weight: Weight ``w`` of the dense score in the fused score.
        name_boost: Added to the fused score of a document the query names.
        country_boost: Added to the fused score of a document in a country the query names.
    """

    def __init__(
        self,
        documents: list[dict],
        encoder: StaticEncoder,
        dense_weight: float = 0.5,
        name_boost: float = 0.3,
        country_boost: float = 0.1,
    ):
        self.documents = documents
        self.encoder = encoder
        self.dense_weight = dense_weight
        self.name_boost = name_boost
        self.country_boost = country_boost
        texts = normalize_batch([doc["text"] for doc in documents])
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
        self.doc_sparse = self.vectorizer.fit_transform(texts).astype(np.float32).tocsr()
        self.doc_dense = encoder.encode(texts)
        self.names = _index(documents, lambda doc: _name_variants(doc["name"]))
        self.countries = _index(documents, _country_variants)
        self.ids = [doc["id"] for doc in documents]

    def component_scores(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse, dense and mention scores of shape ``(len(queries), len(documents))``.

        The mention score is ``name_boost`` for a document the query names plus ``country_boost``
        for a document in a country the query names.
        """
        sparse, dense, names, countries = self._parts(queries)
        return sparse, dense, self.name_boost * names + self.country_boost * countries

    def _parts(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sparse and dense scores, and 0/1 matrices of the documents each query names (or names the country of)."""
        normalized = normalize_batch(queries)
        sparse = (self.vectorizer.transform(normalized) @ self.doc_sparse.T).toarray()
        dense = self.encoder.encode(normalized) @ self.doc_dense.T
        names, countries = np.zeros_like(sparse), np.zeros_like(sparse)
        for row, query in enumerate(normalized):
            names[row, list(self.names.matches(query))] = 1.0
            countries[row, list(self.countries.matches(query))] = 1.0
        return sparse, dense, names, countries

    def fuse(self, sparse: np.ndarray, dense: np.ndarray, mentions: np.ndarray, dense_weight: float) -> np.ndarray:
        return dense_weight * dense + (1 - dense_weight) * sparse + mentions

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.fuse(*self.component_scores(queries), self.dense_weight)

    def retrieve(self, query: str, k: int = 3) -> list[dict]:
        """The ``k`` best documents for ``query``, best first, each with its fused score."""
        scores = self.scores([query])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [{**self.documents[i], "score": float(scores[i])} for i in order if scores[i] >= MIN_RELEVANT_SCORE]

    def tune(
        self,
        queries: Sequence[str],
        relevant: Sequence[Sequence[str]],
        weights: Sequence[float],
        name_boosts: Sequence[float] = (),
        country_boosts: Sequence[float] = (),
    ) -> float:
        """Keep the dense weight and mention boosts with the best MRR on the given (dev) queries.

        Ties go to the boosts closest to the ones the model was built with, then to the dense weight
        closest to 0.5. Empty boost grids keep the current boosts.

        Returns:
            The chosen dense weight (the boosts are set on the model).
        """
        sparse, dense, names, countries = self._parts(queries)
        prior_name, prior_country = self.name_boost, self.country_boost

        def score(candidate: tuple[float, float, float]) -> tuple[float, float, float]:
            w, name, country = candidate
            fused = w * dense + (1 - w) * sparse + name * names + country * countries
            distance = abs(name - prior_name) + abs(country - prior_country)
            return ranking_metrics(fused, self.ids, relevant)["mrr"], -distance, -abs(w - 0.5)

        grid = product(weights, name_boosts or [prior_name], country_boosts or [prior_country])
        self.dense_weight, self.name_boost, self.country_boost = map(float, max(grid, key=score))
        return self.dense_weight

    def evaluate(self, queries: Sequence[str], relevant: Sequence[Sequence[str]]) -> dict[str, float]:
        return ranking_metrics(self.scores(queries), self.ids, relevant)

    def serving_twin(self) -> RetrievalTwin:
        """The same retriever as numpy arrays (see :mod:`mlops.modeling.serving`)."""
        columns = self.doc_sparse.tocsc()
        postings = (columns.indptr.copy(), columns.indices.copy(), columns.data.astype(np.float64))
        weights = (self.dense_weight, self.name_boost, self.country_boost)
        return RetrievalTwin(
            self.documents, self.ids, TfidfTwin.from_sklearn(self.vectorizer), postings, self.encoder,
            self.doc_dense, self.names, self.countries, weights, MIN_RELEVANT_SCORE,
        )  # fmt: skip
