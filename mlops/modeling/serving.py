"""Serving twins: the fitted intent and retrieval models as plain numpy arrays and dicts.

The deployed chatbot must start fast and stay small; importing scikit-learn alone costs ~160 MB
of RSS here (it imports pandas, which imports pyarrow). After training, the sklearn models are
converted into these twins (logged beside each model; the deployment loads only them), which
compute the same numbers — same analyzers, same TF-IDF weights, same linear scores — with numpy
only. The deployment gates evaluate the twins, i.e. what serves.
This module must never import scikit-learn.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from mlops.modeling.embedding import StaticEncoder, whiten
from mlops.modeling.text import normalize
from mlops.taxonomy import OUT_OF_SCOPE

_WHITE_SPACES = re.compile(r"\s\s+")


def to_serving(model):
    """What is deployed for a trained model: its numpy serving twin where it has one."""
    return model.serving_twin() if hasattr(model, "serving_twin") else model


class TfidfTwin:
    """What ``TfidfVectorizer.transform`` computes for one document, for the settings we use.

    Args:
        analyzer: ``"word"`` or ``"char_wb"``.
        ngram_range: Smallest and largest n-gram.
        vocabulary: Term → column.
        idf: Inverse document frequency of each column.
        sublinear_tf: Use ``1 + log(tf)``.
        stop_words: Words dropped before word n-grams.
        token_pattern: Regex of a word token.
        offset: Column offset of this block inside a concatenated feature vector.
    """

    def __init__(self, analyzer, ngram_range, vocabulary, idf, sublinear_tf, stop_words, token_pattern, offset=0):
        if analyzer not in ("word", "char_wb"):
            raise ValueError(f"unsupported analyzer {analyzer!r}")
        self.analyzer = analyzer
        self.ngram_range = tuple(ngram_range)
        self.vocabulary = dict(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.sublinear_tf = sublinear_tf
        self.stop_words = frozenset(stop_words or ())
        self.token_pattern = token_pattern
        self.offset = offset
        self._tokens = re.compile(token_pattern)

    @classmethod
    def from_sklearn(cls, vectorizer, offset: int = 0) -> TfidfTwin:
        """Copy a fitted ``TfidfVectorizer`` (lower-casing, l2 norm, smooth idf, no preprocessor)."""
        if not vectorizer.lowercase or vectorizer.norm != "l2" or vectorizer.preprocessor or vectorizer.tokenizer:
            raise ValueError("only lower-casing, l2-normalised vectorizers without custom callables are supported")
        if vectorizer.strip_accents or not vectorizer.use_idf or vectorizer.binary:
            raise ValueError("strip_accents, use_idf=False and binary are not supported")
        return cls(
            vectorizer.analyzer,
            vectorizer.ngram_range,
            vectorizer.vocabulary_,
            vectorizer.idf_,
            vectorizer.sublinear_tf,
            vectorizer.get_stop_words(),
            vectorizer.token_pattern,
            offset,
        )

    def analyze(self, text: str) -> list[str]:
        text = text.lower()
        low, high = self.ngram_range
        if self.analyzer == "char_wb":
            grams = []
            for word in _WHITE_SPACES.sub(" ", text).split():
                word = f" {word} "
                for n in range(low, high + 1):
                    offset = 0
                    grams.append(word[offset : offset + n])
                    while offset + n < len(word):
                        offset += 1
                        grams.append(word[offset : offset + n])
                    if offset == 0:
                        break
            return grams
        tokens = [t for t in self._tokens.findall(text) if t not in self.stop_words]
        grams = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return grams

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (with ``offset``) and l2-normalised TF-IDF values of one document."""
        counts = Counter(self.vocabulary[g] for g in self.analyze(text) if g in self.vocabulary)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        values = tf * self.idf[columns]
        values /= math.sqrt(float(values @ values))
        return columns + self.offset, values


class IntentTwin:
    """Serving twin of ``IntentClassifier``: normalise → translate → mask places → TF-IDF → linear → softmax."""

    # class-level defaults: a twin pickled before these existed loads and scores as it did
    dense = None
    translator = None

    def __init__(
        self,
        places_pattern,
        placeholder,
        blocks,
        coef,
        intercept,
        beta,
        classes,
        oos_threshold,
        dense=None,
        translator=None,
    ):
        self.places_pattern = places_pattern
        self.placeholder = placeholder
        self.blocks = blocks
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.beta = float(beta)
        self.classes = np.asarray(classes, dtype=object)
        self.oos_threshold = float(oos_threshold)
        self._places = re.compile(places_pattern) if places_pattern else None
        self.dense = dense  # (encoder, whitening, prototypes, weight) or None: see IntentClassifier.attach_prototypes
        self.translator = translator  # a PhraseTranslator or None

    def _prepare(self, text: str) -> str:
        text = normalize(text)
        text = self.translator(text) if self.translator is not None else text
        return self._places.sub(self.placeholder, text) if self._places else text

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), len(self.classes)))
        dense_logits = None
        if self.dense is not None and len(texts):
            encoder, whitening, prototypes, weight = self.dense
            dense_logits = weight * (
                whiten(encoder.encode([normalize(text) for text in texts]), whitening) @ prototypes.T
            )
        for row, text in enumerate(texts):
            prepared = self._prepare(text)
            logits = self.intercept.copy()
            for block in self.blocks:
                columns, values = block.transform_one(prepared)
                if len(columns):
                    logits += values @ self.coef[columns]
            logits = self.beta * logits
            if dense_logits is not None:
                logits += dense_logits[row]
            logits -= logits.max()
            probs = np.exp(logits)
            out[row] = probs / probs.sum()
        return out

    def predict_with_confidence(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        proba = self.predict_proba(texts)
        best = proba.argmax(axis=1)
        result = []
        for row, idx in enumerate(best):
            confidence = float(proba[row, idx])
            label = str(self.classes[idx]) if confidence >= self.oos_threshold else OUT_OF_SCOPE
            result.append((label, confidence))
        return result

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([label for label, _ in self.predict_with_confidence(texts)], dtype=object)


class PhraseIndex:
    """One compiled regex over many phrases, each phrase mapped to the documents it names."""

    def __init__(self, phrases: dict[str, set[int]]):
        self.docs = {phrase: sorted(ids) for phrase, ids in phrases.items()}
        ordered = sorted(self.docs, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, ordered)) + r")\b") if ordered else None

    def matches(self, text: str) -> set[int]:
        if self.pattern is None:
            return set()
        return {doc for match in self.pattern.finditer(text) for doc in self.docs[match.group(1)]}


class RetrievalTwin:
    """Serving twin of ``RetrievalModel``: sparse scores from per-term postings, dense from numpy."""

    def __init__(self, documents, ids, tfidf, postings, encoder, doc_dense, names, countries, weights, top_score):
        self.documents = documents
        self.ids = list(ids)
        self.tfidf = tfidf
        self.indptr, self.doc_index, self.doc_weight = postings
        self.encoder: StaticEncoder = encoder
        self.doc_dense = doc_dense
        self.names, self.countries = names, countries
        self.dense_weight, self.name_boost, self.country_boost = weights
        self.min_score = top_score

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        normalized = [normalize(q) for q in queries]
        dense = self.encoder.encode(normalized) @ self.doc_dense.T
        out = self.dense_weight * dense
        for row, query in enumerate(normalized):
            columns, values = self.tfidf.transform_one(query)
            sparse = np.zeros(len(self.ids))
            for column, value in zip(columns, values, strict=True):
                start, end = self.indptr[column], self.indptr[column + 1]
                sparse[self.doc_index[start:end]] += value * self.doc_weight[start:end]
            out[row] += (1 - self.dense_weight) * sparse
            out[row, list(self.names.matches(query))] += self.name_boost
            out[row, list(self.countries.matches(query))] += self.country_boost
        return out

    def retrieve(self, query: str, k: int = 3) -> list[dict]:
        scores = self.scores([query])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [{**self.documents[i], "score": float(scores[i])} for i in order if scores[i] >= self.min_score]
