"""PII scanning of free text before it becomes an event.

Pattern recognisers for what real issue text carries (the story-point data
is full of it): e-mail addresses, Jira/GitHub user mentions (``[~jdoe]``,
``@jdoe``), user home folders in paths and stack traces (``/Users/tom``,
``C:\\Users\\tom``), phone numbers, IP addresses, payment card numbers
(Luhn-checked) and credential-looking URLs. Each finding is replaced by a
typed placeholder (``<EMAIL>``), so learners still see that an address was
there. Presidio would add NER for personal names, but its models download
from a hub at run time, which our machines cannot do; this scanner is the
dependency-free core, and names stay in fields marked personal.

>>> redact("mail gw2001jp@gmail.com or ask [~cbarber]; log in /Users/tom/app.log")
'mail <EMAIL> or ask <USER>; log in /Users/<USER>/app.log'
>>> scan("call +1 (415) 555-0100 from 10.0.0.12")
[('PHONE', '+1 (415) 555-0100'), ('IP', '10.0.0.12')]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from schemas.pii import luhn

_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    ("URL_CREDENTIALS", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), "<CREDENTIALS>@"),
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
     "<EMAIL>"),
    ("USER", re.compile(r"\[~[^\]\s]+\]"), "<USER>"),
    ("USER", re.compile(r"(?<![\w@/.>])@[A-Za-z][A-Za-z0-9_-]{1,38}\b"), "<USER>"),
    ("HOME", re.compile(r"(?<=/Users/)[^/\s]+|(?<=/home/)[^/\s]+|(?<=\\Users\\)[^\\\s]+"),
     "<USER>"),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b"), "<CARD>"),
    ("PHONE", re.compile(r"(?<![\w.])\+?\d{0,3}[ .-]?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"),
     "<PHONE>"),
    ("IP", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
     "<IP>"),
]
# Fast pre-check: text without any of these characters cannot match a pattern.
_TRIGGER = re.compile(r"[@~/\\\d]")
# Per recogniser, a cheap test that must hold for it to match at all: scanning
# 600 characters with a pattern that starts with a character class costs tens
# of microseconds, and most text holds no e-mail, path or number run at all.
_NEEDS: dict[str, re.Pattern[str]] = {
    "URL_CREDENTIALS": re.compile(r"://[^/\s]*@"),
    "EMAIL": re.compile(r"@"),
    "USER": re.compile(r"\[~|@"),
    "HOME": re.compile(r"/Users/|/home/|\\Users\\"),
    "CARD": re.compile(r"\d{4}[ -]?\d{4}"),
    "PHONE": re.compile(r"\d{3}[ .-]\d{4}"),
    "IP": re.compile(r"\d\.\d{1,3}\.\d"),
}


def _active(text: str) -> list[tuple[str, re.Pattern[str], str]]:
    return [entry for entry in _PATTERNS if _NEEDS[entry[0]].search(text)]


def scan(text: str) -> list[tuple[str, str]]:
    """Every PII finding as ``(kind, matched text)``, in pattern order."""
    if not _TRIGGER.search(text):
        return []
    found = []
    for kind, pattern, _ in _active(text):
        for m in pattern.finditer(text):
            if kind == "CARD" and not luhn(m.group()):
                continue
            found.append((kind, m.group()))
    return found


def findings(text: str) -> list[tuple[str, int, int]]:
    """Every finding as ``(kind, start, end)``, in pattern order (for ``evaluate pii``).

    >>> findings("ask [~cbarber]")
    [('USER', 4, 14)]
    """
    if not _TRIGGER.search(text):
        return []
    found = []
    for kind, pattern, _ in _active(text):
        for m in pattern.finditer(text):
            if kind != "CARD" or luhn(m.group()):
                found.append((kind, m.start(), m.end()))
    return found


def redact(text: str) -> str:
    """``text`` with every finding replaced by its placeholder."""
    if not _TRIGGER.search(text):
        return text
    for kind, pattern, placeholder in _active(text):
        if kind == "CARD":
            text = pattern.sub(lambda m: "<CARD>" if luhn(m.group()) else m.group(), text)
        else:
            text = pattern.sub(placeholder, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value) if len(value) > 3 else value
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# Free-text fields, wherever they appear (payload or a decision's context).
TEXT_FIELDS = frozenset({"title", "description", "summary", "comment", "text", "message"})


def scrub_payload(event_type: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The SDK's default scrubber: redact PII in every free-text field, at any depth."""
    return _walk(payload)


def _walk(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if k in TEXT_FIELDS:
            out[k] = _scrub(v)
        elif isinstance(v, Mapping):
            out[k] = _walk(v)
        else:
            out[k] = v
    return out
