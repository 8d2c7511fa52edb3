"""Input fingerprints of each model: its data, its config and the code that trains it.

A registered version carries its fingerprint as the tag ``input_fingerprint``; when nothing that
goes into a model changed, ``simple_mlops.py`` reuses that version instead of training again (like
DVC skipping a stage whose dependencies did not change).
"""

from __future__ import annotations

import json
from pathlib import Path

from mlops.config import MODEL_KEYS, PROJ_ROOT, Settings
from mlops.data import Datasets
from mlops.integrity import sha256_bytes, sha256_file

TAG = "input_fingerprint"
_PACKAGE = PROJ_ROOT / "mlops"
# modeling/serving.py: every model's serving twin is made at training and logged with it
_COMMON_CODE = ("training.py", "evaluation.py", "data.py", "taxonomy.py", "modeling/text.py", "modeling/serving.py")
CODE = {
    "embedding_model": ("modeling/embedding.py", "modeling/retrieval.py"),
    "llm_model": ("modeling/intent.py", "modeling/embedding.py"),
    "few_shot_model": ("modeling/few_shot.py", "modeling/embedding.py", "modeling/intent.py"),
    "rag_model": ("modeling/retrieval.py", "modeling/serving.py", "modeling/embedding.py", "modeling/intent.py"),
}
DATA = {
    "embedding_model": ("intents", "destinations", "sri_lanka"),  # never the retrieval queries (they tune rag)
    # the knowledge base names the places to mask; the courtesy phrases are translated
    "llm_model": ("intents", "destinations", "sri_lanka", "courtesy"),
    "few_shot_model": ("intents", "destinations", "sri_lanka", "courtesy"),
    "rag_model": ("destinations", "sri_lanka", "retrieval"),
}
DEPENDS_ON_EMBEDDING = ("few_shot_model", "rag_model")


def embedding_dependents(settings: Settings) -> tuple[str, ...]:
    """The models trained on top of ``embedding_model`` with these settings."""
    uses = settings.training.llm_model.embedding_weight > 0
    return ("llm_model", *DEPENDS_ON_EMBEDDING) if uses else DEPENDS_ON_EMBEDDING


def model_fingerprints(settings: Settings, data: Datasets) -> dict[str, str]:
    """sha256 of everything each model's training reads; a dependent includes the embedding's."""
    training = settings.training
    prints: dict[str, str] = {}
    for key in MODEL_KEYS:
        parts = {
            "config": getattr(training, key).model_dump(mode="json"),
            "seed": training.seed,
            "data": {name: data.digests[name] for name in DATA[key]},
            "code": {path: sha256_file(_PACKAGE / path) for path in sorted({*_COMMON_CODE, *CODE[key]})},
        }
        if key in embedding_dependents(settings):
            parts["embedding_model"] = prints["embedding_model"]
        prints[key] = sha256_bytes(json.dumps(parts, sort_keys=True).encode())
    return prints


def cached_version(key: str, fingerprint: str):
    """The newest registered version of ``key`` trained from exactly these inputs, or None."""
    import mlflow

    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name='{key}' and tags.{TAG} = '{fingerprint}'")
    except mlflow.exceptions.MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def code_paths() -> list[Path]:
    """Every source file any fingerprint covers (for documentation and tests)."""
    return sorted({_PACKAGE / p for paths in CODE.values() for p in paths} | {_PACKAGE / p for p in _COMMON_CODE})
