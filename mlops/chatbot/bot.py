"""``TravelChatbot``: the runtime that serves the deployed models from ``models/``.

It imports no torch, sentence-transformers, scikit-learn or training code: the deployed intent and
retrieval models are numpy twins (``mlops.modeling.serving``). ``load`` reads
``models/manifest.json`` and refuses any file whose sha256 differs from the manifest, or whose
path leaves ``models/``, before anything is unpickled.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops.integrity import sha256_file
from mlops.modeling.answers import compose_answer
from mlops.modeling.text import MAX_QUERY_CHARS, normalize

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REQUIRED_MODELS = ("llm_model", "rag_model")  # what answering uses; every listed file is still verified
CONVERSATIONAL = {
    "greeting": "Hello! I'm your travel advisor. Ask me where to go, when to visit, what to do, or about Sri Lanka.",
    "thanks": "You're welcome! Anything else about your trip?",
    "goodbye": "Goodbye, and have a wonderful trip!",
    "out_of_scope": (
        "Sorry, I can only help with travel: destinations, the best time to visit, budgets, visas, transport, "
        "places to stay, food, safety and itineraries. What trip are you planning?"
    ),
}
COUNTRY_LEVEL_INTENTS = ("visa_requirements", "currency_exchange")
EMPTY_QUERY_ANSWER = "Please type a travel question, for example: 'Where can I see leopards in Sri Lanka?'"


class DeploymentError(RuntimeError):
    """Nothing is deployed, or the deployment is incomplete or fails its integrity checks."""


def read_manifest(models_dir: Path) -> dict:
    """Read and structurally check ``models/manifest.json``.

    Raises:
        DeploymentError: The manifest is missing, unreadable or malformed.
    """
    path = Path(models_dir) / MANIFEST
    if not path.is_file():
        raise DeploymentError(
            f"nothing is deployed in {models_dir} ({MANIFEST} not found); "
            "run `python mlops/scripts/deploy_chatbot_models.py` (or `make run`) first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise DeploymentError(f"{path}: expected an object with a 'models' mapping")
    return manifest


def verified_path(models_dir: Path, relative: str, expected: str) -> Path:
    """Resolve a manifest file path inside ``models_dir`` and check its sha256.

    Raises:
        DeploymentError: The path leaves ``models_dir``, the file is missing, or its hash differs.
    """
    root = Path(models_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DeploymentError(f"manifest entry '{relative}' points outside {root}; refusing to load it")
    if not path.is_file():
        raise DeploymentError(f"{path}: listed in the manifest but missing")
    actual = sha256_file(path)
    if actual != expected:
        raise DeploymentError(
            f"{path}: sha256 {actual[:16]}… differs from the manifest's {str(expected)[:16]}…; "
            "the file was modified or replaced, refusing to unpickle it"
        )
    return path


def load_models(models_dir: Path) -> tuple[dict[str, Any], dict]:
    """Verify every file of the manifest, then unpickle the models. Returns ``(models, manifest)``."""
    manifest = read_manifest(models_dir)
    missing = [key for key in REQUIRED_MODELS if key not in manifest["models"]]
    if missing:
        raise DeploymentError(f"{Path(models_dir) / MANIFEST}: required model(s) {', '.join(missing)} not deployed")
    paths = {}
    for key, entry in manifest["models"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or len(files) != 1:
            raise DeploymentError(f"{Path(models_dir) / MANIFEST}: model '{key}' must list exactly one file")
        ((relative, expected),) = files.items()
        paths[key] = verified_path(models_dir, relative, expected)
    return {key: _unpickle(paths[key]) for key in REQUIRED_MODELS}, manifest


def _unpickle(path: Path):
    with open(path, "rb") as handle:
        try:
            return pickle.load(handle)  # only ever called on a file whose sha256 matched the manifest
        except (pickle.UnpicklingError, ModuleNotFoundError, AttributeError, EOFError) as exc:
            raise DeploymentError(
                f"{path}: cannot be loaded by this version ({exc}); it was probably deployed by an older "
                "version: redeploy with `python mlops/scripts/deploy_chatbot_models.py --force`"
            ) from None


class TravelChatbot:
    """Answers travel questions with the deployed intent and retrieval models.

    Args:
        models: ``{"llm_model": IntentTwin, "rag_model": RetrievalTwin}`` (or the sklearn models they twin).
        manifest: The deployment manifest the models came from.
        on_response: Called with each response record (the inference log, metrics...).
        clock: Monotonic clock in seconds, injectable for tests.
    """

    def __init__(
        self,
        models: dict[str, Any],
        manifest: dict | None = None,
        on_response: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.intent_model = models["llm_model"]
        self.rag_model = models["rag_model"]
        self.models = models
        self.manifest = manifest or {}
        self.on_response = on_response
        self.clock = clock

    @classmethod
    def load(cls, models_dir: str | Path = "models", **kwargs) -> TravelChatbot:
        """Load the deployment in ``models_dir`` after verifying every file against the manifest.

        Raises:
            DeploymentError: Nothing deployed, a file missing, tampered with or outside ``models_dir``.
        """
        models, manifest = load_models(Path(models_dir))
        return cls(models, manifest, **kwargs)

    @property
    def versions(self) -> dict[str, str]:
        return {key: str(entry.get("version")) for key, entry in self.manifest.get("models", {}).items()}

    def process_query(self, query: object) -> dict:
        """Answer one query.

        Returns:
            ``{"answer", "intent", "confidence", "sources", "latency_ms"}``; sources best first.
        """
        tic = self.clock()
        text = normalize(query)
        if not text:
            result = {"answer": EMPTY_QUERY_ANSWER, "intent": "out_of_scope", "confidence": 1.0, "sources": []}
        else:
            intent, confidence = self.intent_model.predict_with_confidence([text])[0]
            result = self._respond(text, intent, confidence)
        result["latency_ms"] = (self.clock() - tic) * 1000.0
        if self.on_response is not None:
            self.on_response({"query": str(query)[:MAX_QUERY_CHARS], **result})
        return result

    def _respond(self, text: str, intent: str, confidence: float) -> dict:
        if intent in CONVERSATIONAL:
            return {"answer": CONVERSATIONAL[intent], "intent": intent, "confidence": confidence, "sources": []}
        hits = self.rag_model.retrieve(text, k=3)
        sources = [
            {"name": hit["name"], "score": round(hit["score"], 4), "id": hit["id"], "location": hit["location"]}
            for hit in hits
        ]
        if intent in COUNTRY_LEVEL_INTENTS and hits and hits[0]["source"] == "sri_lanka":
            # the answer is a country-level fact, not something the retrieved places say
            sources = [{"name": "Sri Lanka (country facts)", "score": 1.0, "id": "LK", "location": "Sri Lanka"}]
        return {"answer": compose_answer(intent, hits), "intent": intent, "confidence": confidence, "sources": sources}
