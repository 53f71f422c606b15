"""Cleaning and comparing the short texts of the quiz (answers, decoys)."""

from __future__ import annotations

import unicodedata

from .._errors import RuleViolation

__all__ = ["MAX_ANSWER_CHARS", "clean_answer", "normalise"]

#: longest answer, in characters after cleaning
MAX_ANSWER_CHARS = 80


def clean_answer(text: object, *, what: str = "answer") -> str:
    """``text`` as stored and shown: NFC, control characters removed, spaces collapsed.

    Whitespace of any kind becomes one space, other control characters
    (Unicode category Cc) are dropped, and the ends are trimmed.

    Raises ``RuleViolation(code="bad_args")`` when ``text`` is not a string,
    is empty once cleaned, or is longer than ``MAX_ANSWER_CHARS``.
    """
    if not isinstance(text, str):
        raise RuleViolation(f"{what} must be a string, got {type(text).__name__}", code="bad_args")
    kept = []
    for char in unicodedata.normalize("NFC", text):
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) not in ("Cc", "Cs"):
            kept.append(char)
    cleaned = " ".join("".join(kept).split())
    if not cleaned:
        raise RuleViolation(f"{what} is empty once trimmed", code="bad_args")
    if len(cleaned) > MAX_ANSWER_CHARS:
        raise RuleViolation(
            f"{what} has {len(cleaned)} characters; the limit is {MAX_ANSWER_CHARS}",
            code="bad_args",
        )
    return cleaned


def normalise(text: str) -> str:
    """The comparison key of an answer: case- and whitespace-insensitive."""
    return " ".join(text.split()).casefold()
