"""Spot requests that fix the answer to a small set ("answer only yes or no", "only the letter A-D",
"reply with true or false", "classify as positive, negative or neutral"), so decoding is held to that set."""

from __future__ import annotations

import re

_WORD = r"[A-Za-z0-9][\w\-']{0,30}"
_FIXED: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"\byes\s*(?:or|/)\s*no\b", re.I), ("yes", "no")),
    (re.compile(r"\btrue\s*(?:or|/)\s*false\b", re.I), ("true", "false")),
)
#: "the letter A-D", "letters A to E", "a number from 1-5", "digit 1 to 3".
_RANGE = re.compile(
    r"\b(?:letter|letters|option|options|choice|number|digit)s?\s+(?:from\s+|between\s+)?"
    r"([A-Za-z]|\d)\s*(?:-|–|to|and|through)\s*([A-Za-z]|\d)\b",
    re.I,
)
#: "one of: a, b, c", "as positive, negative or neutral", "with either spam or ham".
_LIST = re.compile(
    rf"\b(?:one of|among|either|as|into|with|labels?|categories|options?)\s*[:\-]?\s*"
    rf"((?:[\"'`]?{_WORD}[\"'`]?\s*(?:,|/|\bor\b|,\s*or\b)\s*)+[\"'`]?{_WORD}[\"'`]?)",
    re.I,
)
_MAX_CHOICES = 20


def detect_choices(prompt: str, *, lists: bool = False) -> tuple[str, ...] | None:
    """The fixed answers ``prompt`` asks for, or None. ``lists`` also accepts a spelled-out list of labels
    (for classification requests, where "as a, b or c" names the labels)."""
    for pattern, choices in _FIXED:
        if pattern.search(prompt):
            return choices
    if m := _RANGE.search(prompt):
        low, high = m.group(1), m.group(2)
        if low.isdigit() == high.isdigit() and ord(low.upper()) < ord(high.upper()):
            first, last = (low, high) if low.isdigit() else (low.upper(), high.upper())
            span = tuple(chr(c) for c in range(ord(first), ord(last) + 1))
            if len(span) <= _MAX_CHOICES:
                return span
    if lists and (m := _LIST.search(prompt)):
        words = [w.strip("\"'` ") for w in re.split(r",\s*or\b|,|/|\bor\b", m.group(1), flags=re.I)]
        unique = tuple(dict.fromkeys(w for w in words if w))
        if 2 <= len(unique) <= _MAX_CHOICES:
            return unique
    return None
