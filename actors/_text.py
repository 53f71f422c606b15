"""Cleaning the short texts players send that others will see (display names).

Text from players is data, never markup: the relay stores and relays it as
plain strings and interprets nothing in it. What it does do is make it safe
to show: NFC normalisation, every kind of whitespace turned into one space,
control characters, lone surrogates and the bidirectional overrides (used to
disguise text) removed, the ends trimmed.
"""

from __future__ import annotations

import unicodedata

__all__ = ["BIDI_CONTROLS", "clean_text"]

#: embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069)
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(text: str) -> str:
    """``text`` as it may be stored and shown to other players (see the module doc).

    Length limits are the caller's: check the cleaned length. Raises
    ``TypeError`` for anything but a string (a caller's bug).
    """
    if type(text) is not str:
        raise TypeError(f"clean_text takes a string, not {type(text).__name__}")
    if text.isascii() and text.isprintable() and "  " not in text and text == text.strip():
        return text  # the common case: nothing to clean
    kept = []
    for char in unicodedata.normalize("NFC", text):
        if char.isspace():
            kept.append(" ")
        elif char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs"):
            continue
        else:
            kept.append(char)
    return " ".join("".join(kept).split())
