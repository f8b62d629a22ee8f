"""PII detection: typed spans in free text, and the pattern recognisers behind them.

One narrow interface, :class:`Detector` — ``analyze(text) -> list[Finding]``
— with three implementations of increasing cost:

``pattern``  :class:`PatternDetector`, plain regular expressions (tens of
             microseconds on a 300-character text). The only mode allowed on a
             caller's thread (``emit``, ``decide``).
``presidio`` Presidio's analyzer with its ``no_op`` NLP engine: its own e-mail,
             IP, phone and card recognisers plus ours (``schemas.pii_presidio``).
``ner``      the same plus spaCy's named-entity model for PERSON (about 20 ms).

Where NER runs
--------------
Never on the thread that calls ``emit``/``decide`` (p99 budgets of 50 µs and
1 ms). The caller's thread runs :class:`PatternDetector` only. NER runs in the
SDK's background producer thread, on the in-memory event, *before* the event
is encoded for the broker or written to the outbox on disk: findings are
encrypted under the named person's key (``schemas.cipher``) and the catalog's
personal fields under the event subject's key. An event that must spill to the
outbox before that pass (queue full) is written with its personal fields
already encrypted; the background thread decrypts it in memory, runs NER and
re-encrypts before sending, so plaintext never reaches disk or the network.
Details and measured costs: ``docs/privacy.md``.

Types found: ``PERSON`` (NER only), ``EMAIL``, ``USER`` (Jira ``[~name]`` and
``@name`` mentions), ``HOME`` (the account name in a home-folder path),
``HOST`` (IP addresses and machine names), ``KEY`` (passwords, API keys and
tokens), ``PHONE`` and ``CARD``.

>>> d = PatternDetector()
>>> text = "ask [~cbarber] or a.b@example.org; see /Users/tom/x.log, password=hunter2 on 10.1.2.3"
>>> [(f.type, text[f.start:f.end]) for f in d.analyze(text)]  # doctest: +NORMALIZE_WHITESPACE
[('USER', '[~cbarber]'), ('EMAIL', 'a.b@example.org'), ('HOME', 'tom'),
 ('KEY', 'hunter2'), ('HOST', '10.1.2.3')]
>>> redact(text, d.analyze(text))
'ask <USER> or <EMAIL>; see /Users/<HOME>/x.log, password=<KEY> on <HOST>'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

TYPES: tuple[str, ...] = ("PERSON", "EMAIL", "USER", "HOME", "HOST", "KEY", "PHONE", "CARD")


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span ``text[start:end]`` of PII ``type``, with a confidence score."""

    type: str
    start: int
    end: int
    score: float = 1.0


class Detector(Protocol):
    """What the SDK, the worker and ``evaluate pii`` need from a PII detector."""

    mode: str

    def analyze(self, text: str) -> list[Finding]:
        """Findings in ``text``, sorted by start; never raises for any ``str``."""
        ...


@dataclass(frozen=True, slots=True)
class Recogniser:
    """One pattern: the span is ``group`` of each match that ``valid`` accepts.

    ``needs`` are substrings of which at least one must occur for the pattern to
    run at all: most text has no ``@``, no path, no digits run, and skipping a
    pattern costs nothing while running one over 600 characters costs ~10 µs.
    ``needs_lower`` are the same for the lower-cased text of a case-insensitive
    pattern (ASCII text only: Unicode case folding has more cases), and
    ``gate``, when set, is a cheaper pattern that every match contains: almost
    every text has a full stop, a colon or a digit, and the IP, secret, card and
    phone patterns cost 10–45 µs each on a 400-character text, their gates a few
    (docs/privacy.md, "Gates"). All three are necessary conditions only: the
    findings are the same with or without them.
    """

    name: str
    type: str
    regex: re.Pattern[str]
    score: float
    needs: tuple[str, ...] = ()
    group: int = 0
    valid: Callable[[str, int, int], bool] | None = None
    needs_lower: tuple[str, ...] = ()
    gate: re.Pattern[str] | None = None

    def may_match(self, text: str) -> bool:
        """False when ``text`` cannot hold a match of this recogniser."""
        if self.needs and not any(map(text.__contains__, self.needs)):
            return False
        if self.needs_lower and text.isascii() and \
                not any(map(text.lower().__contains__, self.needs_lower)):
            return False
        return self.gate is None or self.gate.search(text) is not None


def luhn(digits: str) -> bool:
    """Whether the digits of ``digits`` pass the Luhn check of card numbers (13 digits or more)."""
    nums = [int(c) for c in digits if c.isdigit()]
    total = 0
    for i, n in enumerate(reversed(nums)):
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return len(nums) >= 13 and total % 10 == 0


# File names such as "icon@2x.png" look like e-mail addresses.
_FILE_TLDS = frozenset("png jpg jpeg gif svg js css html htm java xml json txt log jar zip "
                       "py rb php gz tar so dll exe".split())
# Account names that stand for "some user" rather than a person.
_PLACEHOLDER_USERS = frozenset("user username user-name users yourname your-name you me name "
                               "shared public default all guest <user> <username>".split())
_PLACEHOLDER_SECRETS = frozenset("none null nil true false undefined empty".split())
# Java/JS annotations and doc tags are written like @mentions.
_NOT_HANDLES = frozenset(
    "param return returns throws throw see since author version code link value link "
    "override deprecated inject test before after beforeclass afterclass configuration "
    "bean component autowired service controller transactional suppresswarnings "
    "functionalinterface nullable nonnull name type platform formatter media import "
    "interface property synthesize end implementation protocol selector objc operation "
    "extensible password parameter config entity table column id override 2x 3x".split())
_VERSIONISH = re.compile(r"(?i)(?:version|ver|release|sdk|hdp|build|v)\W{0,2}$")
_CODE_PATH = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")


# Validators see the whole text and the span, so they can look at the context.
def _email_ok(text: str, start: int, end: int) -> bool:
    span = text[start:end]
    # "git@github.com:org/repo" is an SSH remote, not a mailbox.
    return span.rsplit(".", 1)[-1].lower() not in _FILE_TLDS and not span.startswith("git@")


def _handle_ok(text: str, start: int, end: int) -> bool:
    handle = text[start + 1:end]
    # CamelCase after "@" is an annotation (@XmlRootElement), not a person.
    return handle.lower() not in _NOT_HANDLES and not re.search(r"[a-z][A-Z]", handle)


def _home_ok(text: str, start: int, end: int) -> bool:
    span = text[start:end]
    return span.lower() not in _PLACEHOLDER_USERS and not span.startswith(("<", "$", "%", "{"))


def _secret_ok(text: str, start: int, end: int) -> bool:
    span = text[start:end]
    return (span.lower() not in _PLACEHOLDER_SECRETS
            and not span.startswith(("<", "$", "%", "{", "/", "-"))
            and not set(span) <= {"*", "x", "X"} and not _CODE_PATH.fullmatch(span))


def _luhn_ok(text: str, start: int, end: int) -> bool:
    return luhn(text[start:end])


def ip_ok(text: str, start: int, end: int) -> bool:
    """Loopback, the unspecified address and version numbers name nobody's machine.

    >>> ip_ok("on 10.0.0.1", 3, 11), ip_ok("HDP 2.2.6.0", 4, 11), ip_ok("127.0.0.1", 0, 9)
    (True, False, False)
    """
    span = text[start:end]
    return (not span.startswith(("127.", "0.0.0.0"))
            and not _VERSIONISH.search(text[max(0, start - 10):start]))


_IP = r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b(?!\.\d)"
_SECRET_NAME = (r"(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
                r"|secret[_-]?key|consumer[_-]?key|client[_-]?secret|auth[_-]?token)")

RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser("jira_mention", "USER", re.compile(r"\[~[^\]\s]+\]"), 0.9, ("[~",)),
    Recogniser("at_mention", "USER",
               re.compile(r"(?<![\w@/.>:\\-])@[A-Za-z][A-Za-z0-9_-]{1,38}\b(?![(.@])"),
               0.5, ("@",), valid=_handle_ok),
    Recogniser("email", "EMAIL",
               re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                          r"\.[A-Za-z]{2,}\b(?![\w.-]*:\d)"), 0.9, ("@",), valid=_email_ok),
    Recogniser("home_folder", "HOME",
               re.compile(r"(?:/Users/|/home/|\\Users\\|Documents and Settings\\|\\DOCUME~1\\)"
                          r"([^/\\\s:;\"',)]+)"), 0.8,
               ("/Users/", "/home/", "\\Users\\", "Documents and Settings", "DOCUME~1"),
               group=1, valid=_home_ok),
    Recogniser("url_credentials", "KEY", re.compile(r"(?<=://)([^/\s:@]+:[^/\s@]+)@"), 0.9,
               ("://",), group=1),
    Recogniser("named_secret", "KEY",
               re.compile(_SECRET_NAME + r"[\w.]*[\"']?\s*[:=]\s*[\"']?([^\s\"'<>{}(),;|&]{3,})"),
               0.7, ("=", ":"), group=1, valid=_secret_ok,
               needs_lower=("pass", "pwd", "secret", "token", "key")),
    Recogniser("token_shape", "KEY",
               re.compile(r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[\w-]{10,}"
                          r"|sk_live_[A-Za-z0-9]{16,}|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,})"),
               0.9, ("AKIA", "gh", "xox", "sk_live_", "eyJ")),
    Recogniser("ip_address", "HOST", re.compile(_IP), 0.6, (".",), valid=ip_ok,
               gate=re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")),
    Recogniser("prompt_host", "HOST",
               re.compile(r"(?<=[\w.-]@)([A-Za-z][\w-]*)(?=:~|:/|\s+[~\w./-]*\]?\$|\s?~?\]?[$#])"),
               0.6, ("@",), group=1),
    Recogniser("login_host", "HOST",
               re.compile(r"(?<=[\w.-]@)[A-Za-z][\w-]*(?:\.[\w-]+)+(?=:\d)"), 0.6, ("@",)),
    Recogniser("personal_machine", "HOST",
               re.compile(r"\b[A-Za-z][\w-]*?(?:-?(?:mbp|MBP|macbook|MacBook|laptop|desktop)|-pc|-vm)"
                          r"[\w-]*(?:\.[\w-]+)*"), 0.5,
               ("mbp", "MBP", "acbook", "laptop", "desktop", "-pc", "-vm")),
    Recogniser("internal_host", "HOST",
               re.compile(r"\b[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:local|internal|lan|corp"
                          r"|intranet|localdomain)\b(?![.\w-])"), 0.6,
               (".local", ".internal", ".lan", ".corp", ".intranet", ".localdomain")),
    Recogniser("card", "CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b"), 0.9,
               tuple("0123456789"), valid=_luhn_ok,
               gate=re.compile(r"\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d")),
    Recogniser("phone", "PHONE",
               re.compile(r"(?<![\w.])\+?\d{0,3}[ .-]?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"), 0.4,
               tuple("0123456789"), gate=re.compile(r"\d{3}[ .-]\d{4}")),
)


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """Of overlapping findings of one type keep the longest (then the surest)."""
    ranked = sorted(findings, key=lambda f: (-(f.end - f.start), -f.score, f.start))
    kept: list[Finding] = []
    for f in ranked:
        if not any(k.type == f.type and f.start < k.end and k.start < f.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: (f.start, f.end, f.type))


class PatternDetector:
    """Regex-only detection; cheap enough for a caller's thread.

    >>> PatternDetector().analyze("nothing personal here")
    []
    >>> PatternDetector(types={"EMAIL"}).analyze("[~bob] bob@example.com")
    [Finding(type='EMAIL', start=7, end=22, score=0.9)]
    """

    mode = "pattern"

    def __init__(self, recognisers: Sequence[Recogniser] = RECOGNISERS,
                 types: Iterable[str] | None = None) -> None:
        wanted = set(types) if types is not None else None
        self.recognisers = tuple(r for r in recognisers if wanted is None or r.type in wanted)

    def analyze(self, text: str) -> list[Finding]:
        """Findings in ``text`` sorted by position (see :class:`Detector`)."""
        found: list[Finding] = []
        for rec in self.recognisers:
            if not rec.may_match(text):
                continue
            for m in rec.regex.finditer(text):
                start, end = m.span(rec.group)
                if end > start and (rec.valid is None or rec.valid(text, start, end)):
                    found.append(Finding(rec.type, start, end, rec.score))
        return dedupe(found)


def redact(text: str, findings: Iterable[Finding], template: str = "<{type}>") -> str:
    """``text`` with every finding replaced by ``template``; overlapping spans merge.

    >>> redact("mail a@b.io now", [Finding("EMAIL", 5, 11)])
    'mail <EMAIL> now'
    >>> redact("[~a@b.io]", [Finding("USER", 0, 9), Finding("EMAIL", 2, 8)])
    '<USER>'
    """
    spans: list[tuple[int, int, str]] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if spans and f.start < spans[-1][1]:
            first, last, kind = spans[-1]
            spans[-1] = (first, max(last, f.end), kind)
        else:
            spans.append((f.start, f.end, f.type))
    parts: list[str] = []
    pos = 0
    for start, end, kind in spans:
        parts += [text[pos:start], template.format(type=kind)]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)
