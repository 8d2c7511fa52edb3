"""Text normalisation shared by every model, so training and serving see the same strings."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

MAX_QUERY_CHARS = 2000  # longer input is truncated: no travel question needs more
_SPACE = re.compile(r"\s+")
# typographic quotes (phones insert them: "what’s") -> the ASCII ones the training text uses
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})


def normalize(text: object) -> str:
    """Lower-case, NFKC-normalise, straighten typographic quotes, drop control characters, collapse whitespace."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = unicodedata.normalize("NFKC", text[: MAX_QUERY_CHARS * 2]).translate(_QUOTES)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACE.sub(" ", text).strip().lower()[:MAX_QUERY_CHARS]


def normalize_batch(texts: Sequence[str]) -> list[str]:
    return [normalize(text) for text in texts]


def split_list(value: str) -> list[str]:
    """Split a ';'-separated cell into its stripped, non-empty items."""
    return [item.strip() for item in str(value).split(";") if item.strip()]


class PhraseTranslator:
    """Replace whole phrases of normalised text by a word the models know: "danke schön" -> "thanks".

    Built from ``data/courtesy_phrases.csv`` (greetings, thanks and farewells in other languages and
    chat shorthand). A sparse model cannot guess that a word it never saw means "thank you"; this
    table tells it. Phrases match on word boundaries, the longest first.

    Args:
        mapping: Phrase -> replacement; both are normalised.
        keep: Longer phrases to leave as they are when they contain one of ``mapping`` (place names:
            "dar es salaam" is not a greeting).
    """

    def __init__(self, mapping: Mapping[str, str], keep: Sequence[str] = ()):
        self.mapping = {normalize(k): normalize(v) for k, v in mapping.items() if normalize(k)}
        found = _phrase_pattern(self.mapping)
        if found is not None:
            kept = {phrase for phrase in map(normalize, keep) if phrase not in self.mapping and found.search(phrase)}
            self.mapping.update({phrase: phrase for phrase in kept})
        self.pattern = _phrase_pattern(self.mapping)

    def __call__(self, text: str) -> str:
        """``text`` (already normalised) with every known phrase replaced."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda match: self.mapping[match.group(0)], text)

    def batch(self, texts: Sequence[str]) -> list[str]:
        return [self(text) for text in texts]


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern | None:
    """One regex matching any of ``phrases`` on word boundaries; at one position the longest wins."""
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=lambda p: (-len(p), p)))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)") if alternatives else None
