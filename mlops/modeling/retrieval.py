"""``rag_model``: retrieval over the destination and Sri Lanka knowledge base, and answers from it.

Each record becomes one document. A query is scored against every document by a sparse score
(word TF-IDF cosine) and a dense score (cosine of ``embedding_model`` vectors), fused as
``w * dense + (1 - w) * sparse`` plus a boost when the query names the place; ``w`` is tuned on the
``dev`` split. The answer is composed only from the records retrieved, and names them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from mlops.modeling.embedding import StaticEncoder
from mlops.modeling.intent import normalize_batch
from mlops.modeling.text import normalize, split_list

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


class _PhraseIndex:
    """One compiled regex over many phrases, each phrase mapped to the documents it names."""

    def __init__(self, phrases: dict[str, set[int]]):
        self.docs = {phrase: sorted(ids) for phrase, ids in phrases.items()}
        ordered = sorted(self.docs, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, ordered)) + r")\b") if ordered else None

    def matches(self, text: str) -> set[int]:
        if self.pattern is None:
            return set()
        return {doc for match in self.pattern.finditer(text) for doc in self.docs[match.group(1)]}


def _index(documents: list[dict], variants) -> _PhraseIndex:
    phrases: dict[str, set[int]] = {}
    for i, doc in enumerate(documents):
        for phrase in variants(doc):
            phrases.setdefault(phrase, set()).add(i)
    return _PhraseIndex(phrases)


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
        normalized = normalize_batch(queries)
        sparse = (self.vectorizer.transform(normalized) @ self.doc_sparse.T).toarray()
        dense = self.encoder.encode(normalized) @ self.doc_dense.T
        mentions = np.zeros_like(sparse)
        for row, query in enumerate(normalized):
            mentions[row, list(self.names.matches(query))] += self.name_boost
            mentions[row, list(self.countries.matches(query))] += self.country_boost
        return sparse, dense, mentions

    def fuse(self, sparse: np.ndarray, dense: np.ndarray, mentions: np.ndarray, dense_weight: float) -> np.ndarray:
        return dense_weight * dense + (1 - dense_weight) * sparse + mentions

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.fuse(*self.component_scores(queries), self.dense_weight)

    def retrieve(self, query: str, k: int = 3) -> list[dict]:
        """The ``k`` best documents for ``query``, best first, each with its fused score."""
        scores = self.scores([query])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [{**self.documents[i], "score": float(scores[i])} for i in order if scores[i] >= MIN_RELEVANT_SCORE]

    def tune(self, queries: Sequence[str], relevant: Sequence[Sequence[str]], weights: Sequence[float]) -> float:
        """Keep the dense weight with the best MRR on the given (dev) queries."""
        parts = self.component_scores(queries)
        best = max(
            weights, key=lambda w: (ranking_metrics(self.fuse(*parts, w), self.ids, relevant)["mrr"], -abs(w - 0.5))
        )
        self.dense_weight = float(best)
        return self.dense_weight

    def evaluate(self, queries: Sequence[str], relevant: Sequence[Sequence[str]]) -> dict[str, float]:
        return ranking_metrics(self.scores(queries), self.ids, relevant)


def ranking_metrics(scores: np.ndarray, ids: Sequence[str], relevant: Sequence[Sequence[str]]) -> dict[str, float]:
    """hit@1, hit@3, hit@5 and MRR of score rows against the relevant ids of each query."""
    ids = np.asarray(ids)
    hits1 = hits3 = hits5 = rr = 0.0
    for row, wanted in zip(scores, relevant, strict=True):
        ranked = ids[np.argsort(-row, kind="stable")]
        positions = np.flatnonzero(np.isin(ranked, list(wanted)))
        first = int(positions[0]) + 1 if len(positions) else None
        if first:
            hits1 += first <= 1
            hits3 += first <= 3
            hits5 += first <= 5
            rr += 1.0 / first
    n = max(len(relevant), 1)
    return {"hit_at_1": hits1 / n, "hit_at_3": hits3 / n, "hit_at_5": hits5 / n, "mrr": rr / n}


# ------------------------------------------------------------------------------------------ answers
SRI_LANKA_FACTS = {
    # Country-level facts the place records do not carry.
    "currency": "The currency is the Sri Lankan rupee (LKR); ATMs are common in towns and cards work in most hotels, "
    "but carry cash for tuk-tuks, buses and small shops.",
    "visa": "Most visitors to Sri Lanka need an Electronic Travel Authorization (ETA) before arrival; rules and fees "
    "depend on your nationality, so check the official Department of Immigration and Emigration website.",
}


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip())
    return match.group(1) if match else text.strip()


def _months(record: dict) -> str:
    months = split_list(record.get("best_months", ""))
    return ", ".join(months)


def _describe(doc: dict) -> str:
    record = doc["record"]
    parts = [f"{doc['name']} ({doc['location']}): {_first_sentence(record['description'])}"]
    if doc["source"] == "destinations":
        parts.append(f"Best months: {_months(record)}.")
        parts.append(f"Typical cost: about ${record['avg_daily_cost_usd']} a day ({record['budget_level']}).")
    else:
        parts.append(f"Best time: {record['best_time']}.")
        parts.append(f"Getting there: {record['how_to_get_there']}")
    return " ".join(parts)


def _field_answer(doc: dict, intent: str) -> str | None:
    """The fact the intent asks for, from one record, or None when the record does not hold it."""
    record, name, is_sl = doc["record"], doc["name"], doc["source"] == "sri_lanka"
    if intent == "best_time_to_visit":
        return (
            f"Best time to visit {name}: {record['best_time']}."
            if is_sl
            else (f"The best months to visit {name} are {_months(record)} ({record['climate']}).")
        )
    if intent == "weather":
        return f"{name}: {record['best_time']}." if is_sl else f"Climate in {name}: {record['climate']}."
    if intent == "budget_planning" and not is_sl:
        return f"{name} costs about ${record['avg_daily_cost_usd']} a day for one traveller ({record['budget_level']})."
    if intent == "transportation":
        return (
            f"Getting to {name}: {record['how_to_get_there']}"
            if is_sl
            else (
                f"Getting around {name}: {record.get('getting_around', '')}" if record.get("getting_around") else None
            )
        )
    if intent == "food_and_cuisine" and record.get("local_dishes"):
        return f"Dishes to try in {name}: {', '.join(split_list(record['local_dishes']))}."
    if intent == "safety_and_health" and record.get("safety_notes"):
        return f"Safety in {name}: {record['safety_notes']}"
    if intent == "currency_exchange":
        if is_sl:
            return SRI_LANKA_FACTS["currency"]
        return f"The currency in {name} is the {record['currency']}." if record.get("currency") else None
    if intent == "visa_requirements":
        return SRI_LANKA_FACTS["visa"] if is_sl else None
    if intent == "activities":
        return f"Things to do in {name}: {', '.join(split_list(record['activities']))}."
    return None


def compose_answer(intent: str, hits: list[dict]) -> str:
    """Write a helpful answer for ``intent`` from the retrieved documents only.

    Args:
        intent: The predicted intent of the query.
        hits: Retrieved documents, best first (may be empty).

    Returns:
        The answer text, naming the places it draws on, or an honest "I don't know".
    """
    if not hits:
        return (
            "I couldn't find a destination in my knowledge base that matches that. "
            "Try naming a place or describing what you'd like (beaches, wildlife, hiking, culture...)."
        )
    top = hits[0]
    if intent in ("destination_recommendation", "itinerary_planning"):
        lines = [f"{i}. {_describe(doc)}" for i, doc in enumerate(hits, start=1)]
        lead = (
            "Here are places that fit:"
            if intent == "destination_recommendation"
            else ("A route could take in these places:")
        )
        return "\n".join([lead, *lines])
    if intent in ("destination_info", "accommodation") or intent not in _FIELD_INTENTS:
        answer = _describe(top)
        highlights = top["record"].get("top_attractions") or top["record"].get("highlights", "")
        if highlights:
            answer += f" Highlights: {', '.join(split_list(highlights))}."
        if intent == "accommodation":
            answer = "I don't have hotel listings, but here is what I know about the area. " + answer
        return answer
    fact = _field_answer(top, intent)
    if fact is None:
        return (
            f"I don't know that for {top['name']}: my knowledge base has no reliable data on it. "
            "Please check an official source. What I do know: " + _describe(top)
        )
    return f"{fact} (Source: {top['name']}, {top['location']}.)"


_FIELD_INTENTS = {
    "best_time_to_visit", "weather", "budget_planning", "transportation", "food_and_cuisine",
    "safety_and_health", "currency_exchange", "visa_requirements", "activities",
}  # fmt: skip
