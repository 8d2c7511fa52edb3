"""``few_shot_model``: an intent classifier built from k examples per intent.

Each intent is a prototype — the mean of its examples' embedding vectors and of their character
TF-IDF vectors. A query goes to the intent whose prototypes are most similar (a weighted sum of the
dense and the sparse cosine). Adding an intent only adds a prototype: nothing else is retrained.

Before the cosine, embedding vectors are whitened: centred and decorrelated with a transform fitted
on unlabelled text, so that the few directions every sentence shares stop dominating the cosine
(the idea of SIF / BERT-whitening). Whitening makes the broad ``out_of_scope`` prototype weak, so
its score gets a fixed bonus. Both are label-free or one number: adding an intent stays one prototype.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mlops.modeling.embedding import StaticEncoder, fit_whitening, whiten
from mlops.modeling.serving import TfidfTwin
from mlops.modeling.text import PhraseTranslator, normalize_batch
from mlops.taxonomy import OUT_OF_SCOPE

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mlops.config import FewShotSettings


def _unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to length 1 (a zero vector stays zero), as sklearn's ``normalize`` does."""
    norm = float(np.sqrt(vector @ vector))
    return vector / norm if norm > 0 else vector


def fit_sparse_vectorizer(corpus: Sequence[str]) -> TfidfVectorizer:
    """Character n-gram TF-IDF fitted on unlabelled text (labels are never seen)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # training only: serving uses the twin

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2)
    vectorizer.fit(normalize_batch(corpus))
    return vectorizer


class FewShotClassifier:
    """Prototype classifier over dense + sparse features.

    Args:
        encoder: The embedding model.
        vectorizer: A fitted character TF-IDF vectorizer.
        dense_weight: Weight of the dense cosine; the sparse cosine gets ``1 - dense_weight``.
        whitening: ``(mean, matrix)`` from :func:`fit_whitening`, or None for raw embedding vectors.
        oos_bias: Added to the ``out_of_scope`` score (when that intent exists).
        translator: Replaces courtesy phrases of other languages by their English word before both
            feature views (see :class:`mlops.modeling.text.PhraseTranslator`); None translates nothing.
    """

    # class-level defaults: a classifier pickled before these existed loads and scores as it did
    whitening: tuple[np.ndarray, np.ndarray] | None = None
    oos_bias: float = 0.0
    translator: PhraseTranslator | None = None

    def __init__(
        self,
        encoder: StaticEncoder,
        vectorizer: TfidfVectorizer,
        dense_weight: float = 0.6,
        whitening: tuple[np.ndarray, np.ndarray] | None = None,
        oos_bias: float = 0.0,
        translator: PhraseTranslator | None = None,
    ):
        self.encoder = encoder
        self.vectorizer = vectorizer
        self.dense_weight = dense_weight
        self.whitening = whitening
        self.oos_bias = oos_bias
        self.translator = translator
        self.labels: list[str] = []
        self._dense = np.zeros((0, encoder.dim), dtype=np.float32)
        self._sparse = np.zeros((0, len(vectorizer.vocabulary_)), dtype=np.float32)
        self.examples_per_label: dict[str, int] = {}

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        texts = normalize_batch(texts)
        return self.translator.batch(texts) if self.translator is not None else texts

    def _dense_features(self, prepared: list[str]) -> np.ndarray:
        dense = self.encoder.encode(prepared)
        return dense if self.whitening is None else whiten(dense, self.whitening)

    def _features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Dense and sparse feature rows of ``texts`` (the sparse ones as full TF-IDF vectors)."""
        prepared = self._prepare(texts)
        if isinstance(self.vectorizer, TfidfTwin):
            sparse = np.zeros((len(prepared), self._sparse.shape[1]), dtype=np.float32)
            for row, text in enumerate(prepared):
                columns, values = self.vectorizer.transform_one(text)
                sparse[row, columns] = values
        else:
            sparse = self.vectorizer.transform(prepared).toarray().astype(np.float32)
        return self._dense_features(prepared), sparse

    def _sparse_similarity(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Dense features and the sparse cosine to each prototype, without materialising TF-IDF rows."""
        if not isinstance(self.vectorizer, TfidfTwin):
            dense, sparse = self._features(texts)
            return dense, sparse @ self._sparse.T
        prepared = self._prepare(texts)
        similarity = np.zeros((len(prepared), len(self.labels)), dtype=np.float32)
        for row, text in enumerate(prepared):
            columns, values = self.vectorizer.transform_one(text)
            if len(columns):  # only the query's n-grams: a few dozen columns instead of the vocabulary
                similarity[row] = self._sparse[:, columns] @ values.astype(np.float32)
        return self._dense_features(prepared), similarity

    def without_intents(self) -> FewShotClassifier:
        """A classifier with the same encoder, vectorizer, whitening and settings (shared) and no intent yet."""
        empty = copy.copy(self)
        empty.labels, empty.examples_per_label = [], {}
        empty._dense, empty._sparse = self._dense[:0].copy(), self._sparse[:0].copy()
        return empty

    def serving_twin(self) -> FewShotClassifier:
        """The same classifier with the TF-IDF step as numpy (see :mod:`mlops.modeling.serving`).

        Same scores, a fraction of sklearn's per-call overhead; ``add_intent`` still works on it.
        """
        twin = copy.copy(self)
        if not isinstance(self.vectorizer, TfidfTwin):
            twin.vectorizer = TfidfTwin.from_sklearn(self.vectorizer)
        twin.labels = list(self.labels)
        twin._dense, twin._sparse = self._dense.copy(), self._sparse.copy()
        twin.examples_per_label = dict(self.examples_per_label)
        return twin

    def add_intent(self, label: str, examples: Sequence[str]) -> None:
        """Add (or replace) one intent from a handful of examples, leaving the others as they are.

        Raises:
            ValueError: No usable example was given.
        """
        examples = [text for text in examples if str(text).strip()]
        if not examples:
            raise ValueError(f"intent '{label}': give at least one non-empty example")
        dense, sparse = self._features(examples)
        dense_proto = _unit(dense.mean(axis=0))
        sparse_proto = _unit(sparse.mean(axis=0))
        if label in self.labels:
            idx = self.labels.index(label)
            self._dense[idx], self._sparse[idx] = dense_proto, sparse_proto
        else:
            self.labels.append(label)
            self._dense = np.vstack([self._dense, dense_proto])
            self._sparse = np.vstack([self._sparse, sparse_proto])
        self.examples_per_label[label] = len(examples)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> FewShotClassifier:
        grouped: dict[str, list[str]] = {}
        for text, label in zip(texts, labels, strict=True):
            grouped.setdefault(label, []).append(text)
        for label in sorted(grouped):
            self.add_intent(label, grouped[label])
        return self

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        dense, sparse_similarity = self._sparse_similarity(texts)
        scores = self.dense_weight * dense @ self._dense.T + (1 - self.dense_weight) * sparse_similarity
        if self.oos_bias and OUT_OF_SCOPE in self.labels:
            scores[:, self.labels.index(OUT_OF_SCOPE)] += self.oos_bias
        return scores

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if not self.labels:
            raise ValueError("the few-shot classifier has no intents yet; call fit() or add_intent()")
        return np.asarray(self.labels, dtype=object)[self.scores(texts).argmax(axis=1)]


def build_few_shot_model(
    cfg: FewShotSettings,
    encoder: StaticEncoder,
    unlabelled: Sequence[str],
    translator: PhraseTranslator | None = None,
) -> FewShotClassifier:
    """An empty classifier with the configured settings (the one factory of training and the CLINC150 bench).

    Args:
        unlabelled: Text the sparse vectorizer and the whitening are fitted on (labels are never seen).
        translator: See :class:`FewShotClassifier`; applied to ``unlabelled`` too.
    """
    unlabelled = normalize_batch(unlabelled)
    if translator is not None:
        unlabelled = translator.batch(unlabelled)
    whitening = None if cfg.whiten_eps is None else fit_whitening(encoder, unlabelled, cfg.whiten_eps)
    return FewShotClassifier(
        encoder, fit_sparse_vectorizer(unlabelled), cfg.dense_weight, whitening, cfg.oos_bias, translator
    )


def sample_k(texts: Sequence[str], labels: Sequence[str], k: int, seed: int) -> tuple[list[str], list[str]]:
    """Draw k examples per label (all of them when a label has fewer), reproducibly."""
    rng = random.Random(seed)
    grouped: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        grouped.setdefault(label, []).append(text)
    out_texts, out_labels = [], []
    for label in sorted(grouped):
        chosen = rng.sample(grouped[label], min(k, len(grouped[label])))
        out_texts += chosen
        out_labels += [label] * len(chosen)
    return out_texts, out_labels
