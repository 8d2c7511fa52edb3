"""``llm_model``: the intent model — raw text in, one intent of the taxonomy out, with confidence.

One sklearn Pipeline (normalise → mask place names → word + character TF-IDF → a linear SVM blended
with multinomial naive Bayes, with temperature-scaling calibration) is the model. The blend is still
one linear map of the TF-IDF vector, so serving stays a single sparse-dense product. Place names from
the knowledge base are replaced by one token, so "hostels in Lisbon" teaches the model about "hostels
in Kandy" too. Out-of-scope is both a trained class and a rejection rule: a prediction whose
calibrated confidence is below a threshold chosen on the validation split becomes ``out_of_scope``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from mlops.evaluation import intent_metrics
from mlops.modeling.embedding import StaticEncoder, whiten
from mlops.modeling.text import PhraseTranslator, normalize, normalize_batch  # noqa: F401 (pickled pipelines name it here)
from mlops.taxonomy import OUT_OF_SCOPE

if TYPE_CHECKING:
    from mlops.config import IntentSettings

PLACE_TOKEN = " placename "
# Words of place names too generic to stand for a place on their own.
GENERIC_PLACE_WORDS = frozenset(
    "national park parks island islands city lake lakes beach beaches temple fort mount falls valley bay rock forest "
    "reserve peak hill hills garden gardens coast great south north east west central new old town river canyon "
    "kingdom sacred ancient royal palace market street square cathedral church museum tower bridge point cave caves "
    "desert mountain mountains plains gate sanctuary marine botanical world heritage region province district "
    "little grand upper lower saint santa the and of de la el le route range trail road way pass nice".split()
)


def place_vocabulary(names: Sequence[str]) -> list[str]:
    """Phrases that name a place: each full name (and its '/'-separated parts) plus distinctive words."""
    phrases: set[str] = set()
    for name in names:
        for part in re.split(r"[(),/&]| and ", normalize(name)):
            part = part.strip()
            if len(part) >= 4:
                phrases.add(part)
            phrases.update(w for w in part.split() if len(w) >= 5 and w not in GENERIC_PLACE_WORDS)
    phrases -= GENERIC_PLACE_WORDS
    return sorted(phrases, key=lambda p: (-len(p), p))


class PlaceMasker(TransformerMixin, BaseEstimator):
    """Replace known place names in normalised text by one placeholder token.

    Args:
        places: Place-name phrases (see :func:`place_vocabulary`); empty means no masking.
    """

    def __init__(self, places: Sequence[str] = ()):
        self.places = places

    def fit(self, texts=None, labels=None) -> PlaceMasker:
        words = [re.escape(p) for p in self.places]
        self.pattern_ = re.compile(r"\b(" + "|".join(words) + r")\b") if words else None
        return self

    def transform(self, texts: Sequence[str]) -> list[str]:
        if self.pattern_ is None:
            return list(texts)
        return [self.pattern_.sub(PLACE_TOKEN, text) for text in texts]


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


class BlendedLinearClassifier(ClassifierMixin, BaseEstimator):
    """A linear SVM plus a small multiple of multinomial naive Bayes log-likelihoods.

    The two are complementary: the SVM's one-vs-rest margins over-weight a few discriminative
    n-grams, naive Bayes weighs every n-gram a class uses. On CLINC150's validation split the blend
    classifies ~0.6 points more in-scope queries correctly than the SVM alone. Both terms are linear
    in the features, so the blend is one ``coef_`` / ``intercept_`` pair.

    It is off by default (``nb_weight=0``): on the project's data its gain is within noise, and with
    few examples per intent (8) the prior-free naive Bayes term pulls most in-scope queries to
    ``out_of_scope``, whose examples use the broadest vocabulary.

    Args:
        C: Inverse regularisation of the linear SVM.
        nb_alpha: Additive smoothing of naive Bayes.
        nb_weight: Weight of the naive Bayes log-likelihoods (0 turns naive Bayes off).
        seed: Random state of the SVM.
    """

    def __init__(self, C: float = 1.0, nb_alpha: float = 0.01, nb_weight: float = 0.0, seed: int = 42):
        self.C = C
        self.nb_alpha = nb_alpha
        self.nb_weight = nb_weight
        self.seed = seed

    def fit(self, features, labels) -> BlendedLinearClassifier:
        svm = LinearSVC(C=self.C, random_state=self.seed).fit(features, labels)
        if len(svm.classes_) < 3:
            raise ValueError("the intent model needs at least three classes")
        self.classes_ = svm.classes_
        self.coef_ = svm.coef_.astype(np.float64)
        self.intercept_ = svm.intercept_.astype(np.float64)
        if self.nb_weight > 0:
            # The class prior is left out on purpose: out_of_scope's larger share must not bias every query.
            naive_bayes = MultinomialNB(alpha=self.nb_alpha).fit(features, labels)
            self.coef_ = self.coef_ + self.nb_weight * naive_bayes.feature_log_prob_
        return self

    def decision_function(self, features) -> np.ndarray:
        return np.asarray(features @ self.coef_.T) + self.intercept_

    def predict(self, features) -> np.ndarray:
        return self.classes_[self.decision_function(features).argmax(axis=1)]


class IntentClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated intent classifier with out-of-scope rejection.

    After :meth:`fit`, :meth:`attach_prototypes` may blend in a second, dense view: the cosine of the
    query's whitened embedding to each intent's mean embedding, added to the calibrated logits. The
    SVM reads surface n-grams; the embedding, trained on the same intents, knows which words go
    together, so the two disagree usefully on val; on test the gain was small (docs/BENCHMARKS.md, attempt 20).
    That view reads the normalised text as typed (courtesy phrases untranslated), in training and serving alike.

    Args:
        word_ngram_max: Largest word n-gram.
        char_ngram_min: Smallest character n-gram.
        char_ngram_max: Largest character n-gram.
        C: Inverse regularisation of the linear SVM.
        nb_alpha: Smoothing of the naive Bayes term (see :class:`BlendedLinearClassifier`).
        nb_weight: Weight of the naive Bayes term; 0 gives the plain SVM.
        calibration_folds: Folds of the temperature calibration.
        oos_threshold: Confidence below which a prediction becomes out_of_scope.
        places: Place-name phrases to mask before featurising.
        phrases: Courtesy phrases of other languages -> the English word (``data/courtesy_phrases.csv``),
            replaced before place names are masked (a place name that contains one is kept); empty
            translates nothing.
        seed: Random state.
    """

    def __init__(
        self,
        word_ngram_max: int = 2,
        char_ngram_min: int = 2,
        char_ngram_max: int = 5,
        C: float = 1.0,
        nb_alpha: float = 0.01,
        nb_weight: float = 0.0,
        calibration_folds: int = 5,
        oos_threshold: float = 0.0,
        places: Sequence[str] = (),
        phrases: Mapping[str, str] | None = None,
        seed: int = 42,
    ):
        self.word_ngram_max = word_ngram_max
        self.char_ngram_min = char_ngram_min
        self.char_ngram_max = char_ngram_max
        self.C = C
        self.nb_alpha = nb_alpha
        self.nb_weight = nb_weight
        self.calibration_folds = calibration_folds
        self.oos_threshold = oos_threshold
        self.places = places
        self.phrases = phrases
        self.seed = seed

    # class-level defaults: a model pickled before these existed loads and scores as it did
    prototypes_: np.ndarray | None = None
    phrases: Mapping[str, str] | None = None
    translator_: PhraseTranslator | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> IntentClassifier:
        self.prototypes_ = None
        self.translator_ = PhraseTranslator(self.phrases or {}, keep=self.places)
        self.pipeline_ = Pipeline(
            [
                ("normalize", FunctionTransformer(normalize_batch)),
                ("translate", FunctionTransformer(self.translator_.batch)),
                ("mask_places", PlaceMasker(self.places)),
                ("features", sparse_features(self.word_ngram_max, self.char_ngram_min, self.char_ngram_max)),
                (
                    "classifier",
                    CalibratedClassifierCV(
                        BlendedLinearClassifier(self.C, self.nb_alpha, self.nb_weight, self.seed),
                        method="temperature",
                        cv=self.calibration_folds,
                        ensemble=False,
                    ),
                ),
            ]
        )
        self.pipeline_.fit(list(texts), list(labels))
        self.classes_ = self.pipeline_.classes_
        self._compile()
        return self

    def _compile(self) -> None:
        """Keep the fitted SVM and temperature as plain arrays: one sparse-dense product per query.

        sklearn's own ``predict_proba`` gives the same numbers but costs milliseconds of per-call
        overhead, which is most of a query's latency budget.
        """
        calibrated = self.pipeline_.named_steps["classifier"].calibrated_classifiers_[0]
        linear = calibrated.estimator
        if list(calibrated.classes) != list(self.classes_) or list(linear.classes_) != list(range(len(self.classes_))):
            raise RuntimeError("calibrated classes differ from the linear model's classes")
        self.coef_ = np.ascontiguousarray(linear.coef_.T, dtype=np.float64)
        self.intercept_ = linear.intercept_.astype(np.float64)
        self.beta_ = float(calibrated.calibrators[0].beta_)

    def attach_prototypes(
        self,
        encoder: StaticEncoder,
        whitening: tuple[np.ndarray, np.ndarray],
        texts: Sequence[str],
        labels: Sequence[str],
        weight: float,
    ) -> IntentClassifier:
        """Blend ``weight`` × cosine to each intent's whitened mean embedding into the logits.

        Args:
            encoder: The embedding model.
            whitening: From :func:`mlops.modeling.embedding.fit_whitening` on unlabelled text.
            texts, labels: The labelled examples the prototypes are averaged from (the training set).
            weight: Added logit per unit of cosine (the calibrated logits span a few units).
        """
        vectors = whiten(encoder.encode(normalize_batch(texts)), whitening)
        labels = np.asarray(labels, dtype=object)
        prototypes = np.zeros((len(self.classes_), vectors.shape[1]), dtype=np.float32)
        for row, label in enumerate(self.classes_):
            mean = vectors[labels == label].mean(axis=0) if (labels == label).any() else prototypes[row]
            norm = float(np.linalg.norm(mean))
            prototypes[row] = mean / norm if norm > 0 else mean
        self.encoder_, self.whitening_, self.embedding_weight_ = encoder, whitening, weight
        self.prototypes_ = prototypes
        return self

    def _dense_logits(self, texts: Sequence[str]) -> np.ndarray | float:
        if self.prototypes_ is None:
            return 0.0
        vectors = whiten(self.encoder_.encode(normalize_batch(texts)), self.whitening_)
        return self.embedding_weight_ * (vectors @ self.prototypes_.T)

    def serving_twin(self):
        """The same classifier as numpy arrays (see :mod:`mlops.modeling.serving`)."""
        from mlops.modeling.serving import IntentTwin, TfidfTwin

        blocks, offset = [], 0
        for _, vectorizer in self.pipeline_.named_steps["features"].transformer_list:
            blocks.append(TfidfTwin.from_sklearn(vectorizer, offset))
            offset += len(vectorizer.vocabulary_)
        masker = self.pipeline_.named_steps["mask_places"]
        pattern = masker.pattern_.pattern if masker.pattern_ is not None else None
        dense = None
        if self.prototypes_ is not None:
            dense = (self.encoder_, self.whitening_, self.prototypes_, self.embedding_weight_)
        return IntentTwin(
            pattern,
            PLACE_TOKEN,
            blocks,
            self.coef_,
            self.intercept_,
            self.beta_,
            self.classes_,
            self.oos_threshold,
            dense,
            self.translator_,
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        features = self.pipeline_[:-1].transform(list(texts))
        logits = self.beta_ * (features @ self.coef_ + self.intercept_) + self._dense_logits(texts)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

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

    def tune_threshold(self, texts: Sequence[str], labels: Sequence[str], oos_weight: float = 0.1) -> float:
        """Pick the out-of-scope threshold that maximises accuracy + weight × OOS recall on these examples."""
        proba = self.predict_proba(texts)
        truth = np.asarray(labels, dtype=object)
        best_score, best_threshold = -1.0, 0.0
        for threshold in np.round(np.arange(0.0, 0.91, 0.01), 2):
            predicted, _ = self._decide(proba, float(threshold))
            scores = intent_metrics(truth, predicted)
            score = scores["accuracy"] + oos_weight * scores["oos_recall"]
            if score > best_score + 1e-9:
                best_score, best_threshold = score, float(threshold)
        self.oos_threshold = best_threshold
        return best_threshold


COURTESY_PREFIXES = ("hi, ", "hello! ", "hey, ", "good morning, ")
COURTESY_SUFFIXES = (" thanks", " thank you", ", thanks!", " cheers", " thx")
_COURTESY_INTENTS = frozenset({"greeting", "thanks", "goodbye", OUT_OF_SCOPE})


def with_courtesy_variants(
    texts: Sequence[str], labels: Sequence[str], share: float, seed: int
) -> tuple[list[str], list[str]]:
    """The examples plus, for about ``share`` of the travel-intent ones, a copy with a greeting in front
    or a thanks at the end, under the same label.

    Without them a short question that ends in "thanks" is answered as a thank-you: in the examples,
    those words only ever occur in greeting / thanks / goodbye queries.
    """
    rng = random.Random(seed)
    out_texts, out_labels = list(texts), list(labels)
    for text, label in zip(texts, labels, strict=True):
        if label in _COURTESY_INTENTS or rng.random() >= share:
            continue
        if rng.random() < 0.5:
            out_texts.append(rng.choice(COURTESY_PREFIXES) + text)
        else:
            out_texts.append(text.rstrip("?!. ") + rng.choice(COURTESY_SUFFIXES))
        out_labels.append(label)
    return out_texts, out_labels


def build_intent_model(
    cfg: IntentSettings, places: Sequence[str], seed: int, phrases: Mapping[str, str] | None = None
) -> IntentClassifier:
    """An unfitted intent model from its settings (``training.llm_model``): training and CLINC150 alike."""
    return IntentClassifier(
        word_ngram_max=cfg.word_ngram_max,
        char_ngram_min=cfg.char_ngram_min,
        char_ngram_max=cfg.char_ngram_max,
        C=cfg.C,
        calibration_folds=cfg.calibration_folds,
        places=places,
        phrases=phrases,
        seed=seed,
    )
