"""``llm_model``: the intent model — raw text in, one intent of the taxonomy out, with confidence.

One sklearn Pipeline (normalise → word + character TF-IDF → linear SVM with sigmoid calibration)
is the model. Out-of-scope is both a trained class and a rejection rule: a prediction whose
calibrated confidence is below a threshold chosen on the validation split becomes ``out_of_scope``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from mlops.data import OUT_OF_SCOPE
from mlops.modeling.text import normalize


def normalize_batch(texts: Sequence[str]) -> list[str]:
    return [normalize(text) for text in texts]


def sparse_features(word_ngram_max: int = 2, char_ngram_min: int = 2, char_ngram_max: int = 5) -> FeatureUnion:
    """Word and character n-gram TF-IDF; character n-grams make the model robust to typos."""
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, word_ngram_max), sublinear_tf=True, min_df=1)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(char_ngram_min, char_ngram_max), sublinear_tf=True, min_df=2
                ),
            ),
        ]
    )


class IntentClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated intent classifier with out-of-scope rejection.

    Args:
        word_ngram_max: Largest word n-gram.
        char_ngram_min: Smallest character n-gram.
        char_ngram_max: Largest character n-gram.
        C: Inverse regularisation of the linear SVM.
        calibration_folds: Folds of the sigmoid calibration.
        oos_threshold: Confidence below which a prediction becomes out_of_scope.
        seed: Random state.
    """

    def __init__(
        self,
        word_ngram_max: int = 2,
        char_ngram_min: int = 2,
        char_ngram_max: int = 5,
        C: float = 1.0,
        calibration_folds: int = 5,
        oos_threshold: float = 0.0,
        seed: int = 42,
    ):
        self.word_ngram_max = word_ngram_max
        self.char_ngram_min = char_ngram_min
        self.char_ngram_max = char_ngram_max
        self.C = C
        self.calibration_folds = calibration_folds
        self.oos_threshold = oos_threshold
        self.seed = seed

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> IntentClassifier:
        self.pipeline_ = Pipeline(
            [
                ("normalize", FunctionTransformer(normalize_batch)),
                ("features", sparse_features(self.word_ngram_max, self.char_ngram_min, self.char_ngram_max)),
                (
                    "classifier",
                    CalibratedClassifierCV(
                        LinearSVC(C=self.C, random_state=self.seed), method="sigmoid", cv=self.calibration_folds
                    ),
                ),
            ]
        )
        self.pipeline_.fit(list(texts), list(labels))
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline_.predict_proba(list(texts))

    def _decide(self, proba: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        best = proba.argmax(axis=1)
        labels = self.classes_[best].astype(object)
        confidence = proba[np.arange(len(proba)), best]
        labels[confidence < threshold] = OUT_OF_SCOPE
        return labels, confidence

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self._decide(self.predict_proba(texts), self.oos_threshold)[0]

    def predict_with_confidence(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        labels, confidence = self._decide(self.predict_proba(texts), self.oos_threshold)
        return [(str(label), float(conf)) for label, conf in zip(labels, confidence, strict=True)]

    def tune_threshold(self, texts: Sequence[str], labels: Sequence[str], oos_weight: float = 1.0) -> float:
        """Pick the out-of-scope threshold that maximises in-scope accuracy + weight × OOS recall."""
        proba = self.predict_proba(texts)
        truth = np.asarray(labels, dtype=object)
        best_score, best_threshold = -1.0, 0.0
        for threshold in np.round(np.arange(0.0, 0.91, 0.01), 2):
            predicted, _ = self._decide(proba, float(threshold))
            scores = intent_metrics(truth, predicted)
            score = scores["in_scope_accuracy"] + oos_weight * scores["oos_recall"]
            if score > best_score + 1e-9:
                best_score, best_threshold = score, float(threshold)
        self.oos_threshold = best_threshold
        return best_threshold


def intent_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy over all classes, macro F1, in-scope accuracy and out-of-scope recall/precision."""
    truth = np.asarray(truth, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    is_oos = truth == OUT_OF_SCOPE
    said_oos = predicted == OUT_OF_SCOPE
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "in_scope_accuracy": float(np.mean(predicted[~is_oos] == truth[~is_oos])) if (~is_oos).any() else 0.0,
        "oos_recall": float(np.mean(said_oos[is_oos])) if is_oos.any() else 0.0,
        "oos_precision": float(np.mean(is_oos[said_oos])) if said_oos.any() else 0.0,
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)
