"""Text normalisation shared by every model, so training and serving see the same strings."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_QUERY_CHARS = 2000  # longer input is truncated: no travel question needs more
_SPACE = re.compile(r"\s+")


def normalize(text: object) -> str:
    """Lower-case, NFKC-normalise, drop control characters and collapse whitespace."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = unicodedata.normalize("NFKC", text[: MAX_QUERY_CHARS * 2])
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACE.sub(" ", text).strip().lower()[:MAX_QUERY_CHARS]


def normalize_batch(texts: Sequence[str]) -> list[str]:
    return [normalize(text) for text in texts]


def split_list(value: str) -> list[str]:
    """Split a ';'-separated cell into its stripped, non-empty items."""
    return [item.strip() for item in str(value).split(";") if item.strip()]
