"""Drift of live traffic against a reference profile of the deployed models.

The reference profile is what the deployed bot does on the held-out queries of ``data/intents.csv``
(val and test splits): its intent mix, out-of-scope rate and confidence distribution, plus the
vocabulary of the training data and the mean query embedding. It is built once per deployment and
cached as JSON under ``monitoring.drift_reference_dir`` (in ``mlruns/``), keyed by the manifest's
``deployed_at``; monitoring never writes ``models/``.

``drift_report`` compares a window of the inference log with it, signal by signal. Every signal has
its own threshold; the overall ``score`` is the worst signal's score divided by its threshold, so
0 means identical and 1 or more means at least one signal drifted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.modeling.text import normalize
from mlops.taxonomy import OUT_OF_SCOPE

logger = logging.getLogger(__name__)

PROFILE_VERSION = 2  # 2: the embedding spread and count are profiled too (older caches are rebuilt)
CONFIDENCE_BINS = 10
MAX_EMBEDDED_QUERIES = 2000  # the live mean embedding is stable long before this; bounds the cost
_TOKEN = re.compile(r"[^\W\d_]+")

# signal -> threshold of its score; PSI above 0.25 is the usual "significant shift"
THRESHOLDS = {
    "intent_psi": 0.25,
    "oos_rate": 0.15,
    "mean_confidence": 0.15,
    "confidence_psi": 0.25,
    "oov_rate": 0.10,
    # squared shift of the mean query embedding in units of the reference's per-query variance, less
    # what sampling alone gives: 0.15 = the mean moved by ~0.39 of the typical query's distance to it
    "embedding_shift": 0.15,
}


def psi(expected: Mapping[str, float], actual: Mapping[str, float], eps: float = 1e-4) -> float:
    """Population stability index of two categorical distributions over the union of their categories.

    Both mappings may hold counts or shares; each is normalised to sum to 1, and shares below
    ``eps`` are clamped to ``eps`` so a category missing on one side gives a large, finite term.

    Args:
        expected: The reference distribution, category -> count or share.
        actual: The live distribution, category -> count or share.
        eps: Smallest share used in the logarithm.

    Returns:
        ``sum((a - e) * ln(a / e))``: 0 for identical distributions, above 0.25 for a large shift;
        0 when either side is empty (nothing to compare).
    """
    categories = sorted(set(expected) | set(actual))
    e = np.array([float(expected.get(c, 0.0)) for c in categories])
    a = np.array([float(actual.get(c, 0.0)) for c in categories])
    if not categories or e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def tokenize(texts: pd.Series) -> pd.Series:
    """Token counts of a series of texts (lower-cased words of letters only), most frequent first."""
    if texts.empty:
        return pd.Series(dtype="int64")
    return texts.astype(str).str.lower().str.findall(_TOKEN).explode().dropna().value_counts()


def _shares(values: pd.Series) -> dict[str, float]:
    counts = values.value_counts(normalize=True)
    return {str(key): float(share) for key, share in counts.items()}


def confidence_histogram(confidence: pd.Series) -> dict[str, float]:
    """Shares of confidences in ``CONFIDENCE_BINS`` equal bins over [0, 1], keyed ``"0.0"``, ``"0.1"``..."""
    if confidence.empty:
        return {}
    bins = np.clip((confidence.to_numpy(dtype=float) * CONFIDENCE_BINS).astype(int), 0, CONFIDENCE_BINS - 1)
    counts = np.bincount(bins, minlength=CONFIDENCE_BINS) / len(bins)
    return {f"{i / CONFIDENCE_BINS:.1f}": float(share) for i, share in enumerate(counts)}


def oov_rate(tokens: pd.Series, vocabulary: Iterable[str]) -> float | None:
    """Share of token occurrences (``tokens``: token -> count) outside ``vocabulary``; None without tokens."""
    total = int(tokens.sum()) if len(tokens) else 0
    if total == 0:
        return None
    known = tokens.index.isin(list(vocabulary))
    return float(tokens[~known].sum() / total)


def profile(frame: pd.DataFrame, vocabulary_texts: Iterable[str] | None = None) -> dict:
    """The drift profile of a frame of answered queries (``query``, ``intent``, ``confidence``).

    Args:
        frame: Queries with the deployed bot's predictions (an inference-log window, or held-out data).
        vocabulary_texts: Texts whose words are the known vocabulary; defaults to the frame's queries.

    Returns:
        A JSON-ready dict: ``n``, ``intent_dist``, ``oos_rate``, ``mean_confidence``, ``confidence_hist``,
        ``tokens`` (vocabulary word -> count) and ``oov_rate`` (share of the frame's words outside it).
    """
    texts = pd.Series(list(vocabulary_texts), dtype=str) if vocabulary_texts is not None else frame["query"]
    vocabulary = tokenize(texts)
    return {
        "version": PROFILE_VERSION,
        "n": len(frame),
        "intent_dist": _shares(frame["intent"]),
        "oos_rate": float((frame["intent"] == OUT_OF_SCOPE).mean()) if len(frame) else None,
        "mean_confidence": float(frame["confidence"].mean()) if len(frame) else None,
        "confidence_hist": confidence_histogram(frame["confidence"]),
        "tokens": {str(token): int(count) for token, count in vocabulary.items()},
        "oov_rate": oov_rate(tokenize(frame["query"]), vocabulary.index) if len(frame) else None,
    }


@dataclass
class DriftReport:
    """Drift of one live window against the reference, signal by signal.

    ``rows``: one dict per signal with ``signal``, ``reference``, ``live``, ``score``, ``threshold``,
    ``drifted`` and ``detail`` (what moved most). ``score``: the worst ``score / threshold``.
    """

    rows: list[dict] = field(default_factory=list)
    score: float = 0.0
    n_live: int = 0
    n_reference: int = 0
    deployed_at: str | None = None

    @property
    def drifted(self) -> bool:
        return self.score >= 1.0

    def frame(self) -> pd.DataFrame:
        """The rows as a table (for the dashboard)."""
        columns = ["signal", "reference", "live", "score", "threshold", "drifted", "detail"]
        return pd.DataFrame(self.rows, columns=columns)


def _row(signal: str, reference: float | None, live: float | None, score: float | None, detail: str = "") -> dict:
    threshold = THRESHOLDS[signal]
    score = None if score is None or not math.isfinite(score) else max(0.0, float(score))
    return {
        "signal": signal,
        "reference": reference,
        "live": live,
        "score": score,
        "threshold": threshold,
        "drifted": score is not None and score >= threshold,
        "detail": detail,
    }


def _largest_change(reference: Mapping[str, float], live: Mapping[str, float]) -> str:
    changes = {key: live.get(key, 0.0) - reference.get(key, 0.0) for key in set(reference) | set(live)}
    if not changes:
        return ""
    key = max(changes, key=lambda k: (abs(changes[k]), k))
    return f"largest change: {key} {reference.get(key, 0.0):.0%} → {live.get(key, 0.0):.0%}"


def _diff(reference: float | None, live: float | None) -> float | None:
    return None if reference is None or live is None else abs(live - reference)


def embedding_shift(reference: dict, vectors: np.ndarray) -> float | None:
    """How far the mean of ``vectors`` moved from the reference mean, as an effect size.

    ``|mean - reference mean|² / reference variance`` (the variance being the mean squared distance of
    a reference query to its mean), less ``1/n_live + 1/n_reference``, what that ratio averages when
    both are samples of one distribution; floored at 0. Unlike the cosine of the two means, it does
    not swing with the sample: the mean of unit vectors spread over many intents is short, and its
    direction is mostly noise.
    """
    variance, n_reference = reference.get("embedding_variance"), reference.get("embedding_n")
    if not reference.get("mean_embedding") or not variance or not n_reference or not len(vectors):
        return None
    delta = np.asarray(vectors, dtype=float).mean(axis=0) - np.asarray(reference["mean_embedding"], dtype=float)
    return max(0.0, float(delta @ delta) / variance - (1.0 / len(vectors) + 1.0 / n_reference))


def _embedding_row(reference: dict, live: pd.DataFrame, encoder) -> dict | None:
    if encoder is None or live.empty:
        return None
    queries = [normalize(q) for q in live["query"].tail(MAX_EMBEDDED_QUERIES)]
    shift = embedding_shift(reference, encoder.encode(queries))
    if shift is None:
        return None
    return _row("embedding_shift", 0.0, shift, shift, "squared shift of the mean query embedding / its variance")


def drift_report(reference: dict, live_df: pd.DataFrame, encoder=None) -> DriftReport:
    """Compare a live window of the inference log with a reference profile.

    Args:
        reference: A profile from :func:`profile` or :func:`reference_profile`.
        live_df: Inference-log rows (``query``, ``intent``, ``confidence``); may be empty.
        encoder: Optional query encoder (the deployed ``rag_model.encoder``) for the embedding signal.

    Returns:
        The report; with no live rows every score is None and the overall score 0.
    """
    live_df = live_df if live_df is not None else pd.DataFrame(columns=["query", "intent", "confidence"])
    live = profile(live_df) if len(live_df) else None
    ref_intents = reference.get("intent_dist", {})
    ref_conf = reference.get("confidence_hist", {})
    rows = []
    if live is None:
        for signal in ("intent_psi", "oos_rate", "mean_confidence", "confidence_psi", "oov_rate"):
            rows.append(_row(signal, reference.get(signal), None, None, "no live queries in the window"))
    else:
        live_oov = oov_rate(tokenize(live_df["query"]), reference.get("tokens", {}))
        rows += [
            _row("intent_psi", None, None, psi(ref_intents, live["intent_dist"]),
                 _largest_change(ref_intents, live["intent_dist"])),
            _row("oos_rate", reference.get("oos_rate"), live["oos_rate"],
                 _diff(reference.get("oos_rate"), live["oos_rate"])),
            _row("mean_confidence", reference.get("mean_confidence"), live["mean_confidence"],
                 _diff(reference.get("mean_confidence"), live["mean_confidence"])),
            _row("confidence_psi", None, None, psi(ref_conf, live["confidence_hist"]),
                 _largest_change(ref_conf, live["confidence_hist"]).replace("change: ", "change: bin ")),
            _row("oov_rate", reference.get("oov_rate"), live_oov,
                 None if live_oov is None else live_oov - (reference.get("oov_rate") or 0.0),
                 "share of live words outside the training vocabulary"),
        ]  # fmt: skip
        embedding = _embedding_row(reference, live_df, encoder)
        if embedding is not None:
            rows.append(embedding)
    ratios = [row["score"] / row["threshold"] for row in rows if row["score"] is not None]
    return DriftReport(
        rows=rows,
        score=max(ratios, default=0.0),
        n_live=len(live_df),
        n_reference=int(reference.get("n", 0)),
        deployed_at=reference.get("deployed_at"),
    )


# ----------------------------------------------------------------------------- the cached reference
def reference_dir(settings: Settings) -> Path:
    """Folder of the cached reference profiles.

    Raises:
        ValueError: It is configured inside the models folder (only deployment writes there).
    """
    folder = settings.path(settings.monitoring.drift_reference_dir)
    if folder.resolve().is_relative_to(settings.models_dir.resolve()):
        raise ValueError(f"monitoring.drift_reference_dir {folder} is inside {settings.models_dir}; "
                         "only deployment writes there, choose a folder under mlruns/")  # fmt: skip
    return folder


def reference_path(settings: Settings, deployed_at: str) -> Path:
    """The cache file of the reference profile of the deployment made at ``deployed_at``."""
    return reference_dir(settings) / f"reference_{re.sub(r'[^0-9A-Za-z]+', '_', deployed_at).strip('_')}.json"


def embedding_profile(vectors: np.ndarray) -> dict:
    """The mean, the variance (mean squared distance to the mean) and the count of reference vectors."""
    vectors = np.asarray(vectors, dtype=float)
    mean = vectors.mean(axis=0)
    return {
        "mean_embedding": [float(x) for x in mean],
        "embedding_variance": float(((vectors - mean) ** 2).sum(axis=1).mean()),
        "embedding_n": len(vectors),
    }


def build_reference(bot, datasets) -> dict:
    """Profile the deployed ``bot`` on the held-out (val + test) intent queries of ``datasets``.

    The vocabulary is the training split's words plus the knowledge base's place and country names.
    """
    held_out = datasets.intents[datasets.intents["split"] != "train"]
    texts = held_out["text"].tolist()
    predictions = bot.intent_model.predict_with_confidence(texts)
    frame = pd.DataFrame(
        {"query": texts, "intent": [p[0] for p in predictions], "confidence": [p[1] for p in predictions]}
    )
    vocabulary = [
        *datasets.intent_split("train")["text"],
        *datasets.destinations["name"], *datasets.destinations["country"], *datasets.sri_lanka["name"],
        *datasets.sri_lanka["district"],
    ]  # fmt: skip
    result = profile(frame, vocabulary)
    encoder = getattr(bot.rag_model, "encoder", None)
    if encoder is not None:
        result.update(embedding_profile(encoder.encode([normalize(t) for t in texts])))
    result.update(
        deployed_at=bot.manifest.get("deployed_at"),
        versions=bot.versions,
        data_fingerprint=datasets.fingerprint,
        created_at=datetime.now(UTC).isoformat(),
    )
    return result


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(data, handle)
    os.replace(handle.name, path)


_ENCODERS: dict[tuple[str, str], object] = {}  # (models folder, deployed_at) -> encoder, per process


def deployed_encoder(settings: Settings):
    """The deployed ``rag_model``'s query encoder (for the embedding signal), or None if nothing loads.

    Loaded once per deployment in a process, so the alert loop does not re-verify the files each cycle.
    """
    from mlops.chatbot.bot import DeploymentError, TravelChatbot, read_manifest

    try:
        key = (str(settings.models_dir), read_manifest(settings.models_dir).get("deployed_at") or "unknown")
        if key not in _ENCODERS:
            _ENCODERS.clear()
            _ENCODERS[key] = getattr(TravelChatbot.load(settings.models_dir).rag_model, "encoder", None)
        return _ENCODERS[key]
    except DeploymentError as exc:
        logger.info("drift: no deployed encoder, the embedding signal is left out: %s", exc)
        return None


def reference_profile(settings: Settings, bot=None, datasets=None) -> dict:
    """The reference profile of the current deployment, from the cache or built (and cached) now.

    Args:
        settings: Where the models, data and cache folder are.
        bot: The loaded ``TravelChatbot``, if the caller has one; loaded from ``models/`` otherwise.
        datasets: The loaded datasets, if the caller has them; loaded from the data folder otherwise.

    Raises:
        DeploymentError: Nothing is deployed, or the deployment fails its integrity checks.
        DataValidationError: The data files are missing or invalid.
    """
    from mlops.chatbot.bot import TravelChatbot, read_manifest

    deployed_at = read_manifest(settings.models_dir).get("deployed_at") or "unknown"
    path = reference_path(settings, deployed_at)
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("version") == PROFILE_VERSION and cached.get("deployed_at") == deployed_at:
                return cached
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("%s: unreadable reference profile; rebuilding it", path)
    if datasets is None:
        from mlops.data import load_datasets

        datasets = load_datasets(settings.data_dir)
    bot = bot or TravelChatbot.load(settings.models_dir)
    result = build_reference(bot, datasets)
    _write_atomic(reference_path(settings, result["deployed_at"] or "unknown"), result)
    logger.info("drift reference profile of the deployment of %s written to %s", deployed_at, path)
    return result
