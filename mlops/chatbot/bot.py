"""``TravelChatbot``: the runtime that serves the deployed models from ``models/``.

It imports no torch, sentence-transformers, scikit-learn or training code: the deployed intent and
retrieval models are numpy twins (``mlops.modeling.serving``). ``load`` reads
``models/manifest.json`` and refuses any file whose sha256 differs from the manifest, or whose
path leaves ``models/``, before anything is unpickled.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import pickle
import threading
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


# What a deployed serving model may reference: our own model classes, numpy arrays and compiled regexes.
# Anything else (os.system, builtins.eval, subprocess...) is refused before it can be called, so even a
# pickle whose hash was also rewritten in the manifest cannot run code.
_SAFE_PREFIXES = ("mlops.modeling.",)
_SAFE_GLOBALS = {
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy", "float64"), ("numpy", "float32"), ("numpy", "int64"),
    ("numpy", "int32"), ("numpy", "bool_"), ("numpy", "str_"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("re", "_compile"), ("copyreg", "_reconstructor"), ("builtins", "object"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"), ("collections", "OrderedDict"), ("collections", "Counter"),
}  # fmt: skip


class _ServingUnpickler(pickle.Unpickler):
    """Unpickles only model classes of ``mlops.modeling`` and the numpy/regex pieces they hold."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(_SAFE_PREFIXES) and "." not in name:
            found = getattr(importlib.import_module(module), name)  # gone: AttributeError, "cannot be loaded"
            # a class (never a function that could be called with crafted arguments) defined in that
            # module, not one it merely imports (an sklearn or pathlib class)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}': not a serving model class")


def load_serving_model(payload: bytes, origin: str, remedy: str):
    """Unpickle a serving twin, allowing only serving model classes and the numpy/regex pieces they hold.

    Only ever called on bytes whose sha256 was verified (against the manifest or the registry tag).

    Args:
        origin: Where the bytes come from, for the error message.
        remedy: What to do when this version of the code cannot load them.

    Raises:
        DeploymentError: A forbidden global, unreadable bytes, or classes this code no longer has.
    """
    try:
        return _ServingUnpickler(io.BytesIO(payload)).load()
    except pickle.UnpicklingError as exc:
        if "refusing to load global" in str(exc):
            raise DeploymentError(f"{origin}: {exc}; the file is not a model this code deployed") from None
        raise DeploymentError(f"{origin}: not a readable model file ({exc})") from None
    except (ModuleNotFoundError, AttributeError, EOFError) as exc:
        raise DeploymentError(f"{origin}: cannot be loaded by this version ({exc}); {remedy}") from None


def _unpickle(path: Path):
    remedy = "it was probably deployed by an older version: redeploy with "
    remedy += "`python mlops/scripts/deploy_chatbot_models.py --force`"
    return load_serving_model(path.read_bytes(), str(path), remedy)


class TravelChatbot:
    """Answers travel questions with the deployed intent and retrieval models.

    The models and the manifest they came from are held as one snapshot: a query reads it once, so
    even while :meth:`refresh` swaps in a new deployment every answer comes from one whole model set.

    Args:
        models: ``{"llm_model": IntentTwin, "rag_model": RetrievalTwin}`` (or the sklearn models they twin).
        manifest: The deployment manifest the models came from.
        on_response: Called with each response record (the inference log, metrics...); the record also
            carries ``versions``, the model versions that answered.
        clock: Monotonic clock in seconds, injectable for tests.
        models_dir: Where the models were loaded from (what :meth:`refresh` re-reads).
    """

    def __init__(
        self,
        models: dict[str, Any],
        manifest: dict | None = None,
        on_response: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        models_dir: Path | None = None,
    ):
        self._snapshot = _Snapshot(models, manifest or {})
        self.on_response = on_response
        self.clock = clock
        self.models_dir = models_dir
        self._manifest_stamp = _stamp(models_dir)
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, models_dir: str | Path = "models", **kwargs) -> TravelChatbot:
        """Load the deployment in ``models_dir`` after verifying every file against the manifest.

        Raises:
            DeploymentError: Nothing deployed, a file missing, tampered with or outside ``models_dir``.
        """
        stamp = _stamp(Path(models_dir))
        models, manifest = load_models(Path(models_dir))
        bot = cls(models, manifest, models_dir=Path(models_dir), **kwargs)
        bot._manifest_stamp = stamp
        return bot

    # the current snapshot's parts, for callers that read them directly
    @property
    def models(self) -> dict[str, Any]:
        return self._snapshot.models

    @property
    def manifest(self) -> dict:
        return self._snapshot.manifest

    @property
    def intent_model(self):
        return self._snapshot.models["llm_model"]

    @property
    def rag_model(self):
        return self._snapshot.models["rag_model"]

    @property
    def versions(self) -> dict[str, str]:
        return self._snapshot.versions

    def refresh(self) -> bool:
        """Load a new deployment if ``manifest.json`` changed since the last load (one ``stat`` otherwise).

        A new deployment that fails its checks is logged and ignored: the loaded models keep serving.

        Returns:
            True when a new model set was swapped in.
        """
        if self.models_dir is None or _stamp(self.models_dir) == self._manifest_stamp:
            return False
        with self._reload_lock:
            stamp = _stamp(self.models_dir)
            if stamp == self._manifest_stamp:
                return False  # another thread reloaded it meanwhile
            try:
                models, manifest = load_models(self.models_dir)
            except DeploymentError as exc:
                logger.error(
                    "new deployment in %s not loaded, still serving the previous one: %s", self.models_dir, exc
                )
                self._manifest_stamp = stamp  # do not retry on every query; the next change is tried again
                return False
            self._snapshot = _Snapshot(models, manifest)  # one reference assignment: atomic for readers
            self._manifest_stamp = stamp
            logger.info("now serving release %s (%s)", manifest.get("release"), self._snapshot.versions)
            return True

    def process_query(self, query: object) -> dict:
        """Answer one query.

        Returns:
            ``{"answer", "intent", "confidence", "sources", "latency_ms"}``; sources best first.
        """
        return self.answer(query)[0]

    def answer(self, query: object) -> tuple[dict, dict[str, str]]:
        """Answer one query and say which model versions answered it.

        Returns:
            The :meth:`process_query` result and the versions of the model set that produced it.
        """
        tic = self.clock()
        snapshot = self._snapshot  # read once: the whole answer comes from one model set
        text = normalize(_decoded(query))
        if not text:
            result = {"answer": EMPTY_QUERY_ANSWER, "intent": "out_of_scope", "confidence": 1.0, "sources": []}
        else:
            intent, confidence = snapshot.models["llm_model"].predict_with_confidence([text])[0]
            result = _respond(snapshot.models["rag_model"], text, intent, confidence)
        result["latency_ms"] = (self.clock() - tic) * 1000.0
        if self.on_response is not None:
            self.on_response({"query": query_text(query), "versions": snapshot.versions, **result})
        return result, snapshot.versions


class _Snapshot:
    """One deployment's models and manifest, never modified after creation."""

    __slots__ = ("models", "manifest", "versions")

    def __init__(self, models: dict[str, Any], manifest: dict):
        self.models = models
        self.manifest = manifest
        self.versions = {
            key: str(entry.get("version") if isinstance(entry, dict) else entry)
            for key, entry in manifest.get("models", {}).items()
        }


def _stamp(models_dir: Path | None) -> tuple[int, int, int] | None:
    """Identity of the live manifest file: it is replaced (new inode) by every deployment and rollback."""
    if models_dir is None:
        return None
    try:
        info = (Path(models_dir) / MANIFEST).stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _decoded(query: object) -> object:
    """Raw bytes from a client as text: invalid UTF-8 becomes U+FFFD, never an error."""
    if isinstance(query, bytes | bytearray):
        return bytes(query[: MAX_QUERY_CHARS * 4]).decode("utf-8", errors="replace")
    return query


def query_text(query: object) -> str:
    """The query as text for logs and displays: bytes decoded, truncated, no NUL or lone surrogates."""
    text = str(_decoded(query))[:MAX_QUERY_CHARS].replace("\x00", "\ufffd")
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _respond(rag_model, text: str, intent: str, confidence: float) -> dict:
    if intent in CONVERSATIONAL:
        return {"answer": CONVERSATIONAL[intent], "intent": intent, "confidence": confidence, "sources": []}
    hits = rag_model.retrieve(text, k=3)
    sources = [
        {"name": hit["name"], "score": round(hit["score"], 4), "id": hit["id"], "location": hit["location"]}
        for hit in hits
    ]
    if intent in COUNTRY_LEVEL_INTENTS and hits and hits[0]["source"] == "sri_lanka":
        # the answer is a country-level fact, not something the retrieved places say
        sources = [{"name": "Sri Lanka (country facts)", "score": 1.0, "id": "LK", "location": "Sri Lanka"}]
    return {"answer": compose_answer(intent, hits), "intent": intent, "confidence": confidence, "sources": sources}
