"""Whole events in and out of encryption: what the SDK seals and what readers open.

:class:`Protector` seals an event before it leaves the SDK (docs/privacy.md):

* every field the catalog marks personal, and the free-text keys of a
  decision context (:data:`CONTEXT_PERSONAL`), is encrypted whole under the
  event's data subject (``subject_id``; an event without one uses the
  producer's pseudonym ``agent:<producer>``);
* inside that text, first, every span the detector finds is encrypted on its
  own: a person's (:data:`NAMED_TYPES`) under the *named* person's subject,
  :meth:`Protector.person_subject` — an HMAC of the normalised name keyed by a
  data key of the key store, so the same name always gives the same pseudonym
  and the name itself is never a key id; other PII (paths, hosts, secrets)
  under the event's subject. Erasing the reporter makes the whole field
  unreadable; erasing a named person makes only their spans unreadable.

:func:`reveal` opens an event for a reader: personal values decrypted, an
erased one read as :data:`~schemas.cipher.ERASED` (never an exception, never
ciphertext as text), and the PII spans either decrypted or, for learners,
replaced by :data:`REDACTED` (learners never featurise names or secrets).

>>> from schemas import new_event
>>> from schemas.keys import MemoryKeyStore
>>> from schemas.pii import Finding
>>> class Names:  # a toy detector: "Ada Lovelace" is a person
...     mode = "toy"
...     def analyze(self, text):
...         i = text.find("Ada Lovelace")
...         return [] if i < 0 else [Finding("PERSON", i, i + 12)]
>>> keys = MemoryKeyStore()
>>> p = Protector(keys, Names())
>>> ev = new_event("task.estimated", {"task_id": "t1", "project": "p", "title": "Fix login",
...     "description": "Ada Lovelace saw it", "estimate": 3.0}, producer="a", subject_id="r-1")
>>> sealed = p.protect(ev)
>>> "Fix" in str(sealed.payload), sealed.payload["task_id"]
(False, 't1')
>>> reveal(sealed, p.cipher).payload["description"]
'Ada Lovelace saw it'
>>> reveal(sealed, p.cipher, names=False).payload["description"]
'[pii] saw it'
>>> _ = keys.erase(p.person_subject("ada  lovelace"))
>>> reveal(sealed, p.cipher).payload["description"]
'[erased] saw it'
>>> _ = keys.erase("r-1"); opened = reveal(sealed, p.cipher)
>>> opened.payload["title"], sorted(opened.erased)
('[erased]', ['description', 'title'])
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.catalog import CATALOG
from schemas.cipher import ERASED, FieldCipher
from schemas.envelope import Envelope, freeze, thaw
from schemas.keys import CryptoError, KeyStore, SubjectErased
from schemas.pii import Detector, Finding

log = logging.getLogger(__name__)

#: Free-text keys of a decision context (the same text as ``task.estimated``'s fields).
CONTEXT_PERSONAL = frozenset({"title", "description", "author"})
#: Detector types that name a person: their spans get the named person's own key.
NAMED_TYPES = frozenset({"PERSON", "USER", "EMAIL"})
REDACTED = "[pii]"
UNREADABLE = "[unreadable]"
#: The key store subject whose data key keys the HMAC of named persons' pseudonyms.
PSEUDONYM_KEY = "_pseudonyms"
_TOKEN = re.compile(r"enc1\.[A-Za-z0-9_-]*\.[1-9][0-9]{0,9}\.[A-Za-z0-9_-]{16}\."
                    r"[A-Za-z0-9_-]{22,}")


def personal_paths(event_type: str, payload: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Where personal text sits in a payload: top-level fields and decision-context keys."""
    spec = CATALOG.get(event_type)
    out: list[tuple[str, ...]] = [] if spec is None else [
        (f,) for f in spec.personal_fields if isinstance(payload.get(f), str)]
    context = payload.get("context") if event_type == "decision.requested" else None
    if isinstance(context, Mapping):
        out += [("context", k) for k in sorted(CONTEXT_PERSONAL)
                if isinstance(context.get(k), str)]
    return out


def subject_of(event: Envelope) -> str:
    """The subject whose key seals an event's personal fields (``agent:<producer>`` if none)."""
    return event.subject_id or f"agent:{event.producer}"


def _normalise(name: str) -> str:
    return " ".join(name.casefold().split())


def _disjoint(found: list[Finding]) -> list[Finding]:
    """Findings sorted by start, overlapping ones dropped (the first one wins)."""
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if f.end > f.start and (not out or f.start >= out[-1].end):
            out.append(f)
    return out


class Protector:
    """Seals an event's personal text (the SDK's background thread calls :meth:`protect`)."""

    def __init__(self, keys: KeyStore, detector: Detector | None = None) -> None:
        self.keys = keys
        self.cipher = FieldCipher(keys)
        self.detector = detector
        self.sealed = 0  # fields encrypted
        self.named = 0  # person spans encrypted under their own subject
        self._secret: bytes | None = None

    def person_subject(self, name: str) -> str:
        """Stable pseudonym of a person named in free text (``p-`` + 20 hex of an HMAC)."""
        if self._secret is None:
            self._secret = self.keys.data_key(PSEUDONYM_KEY).key
        digest = hmac.new(self._secret, _normalise(name).encode(), hashlib.sha256)
        return "p-" + digest.hexdigest()[:20]

    def _seal_text(self, text: str, subject: str, event_id: str, where: str) -> str:
        if text == ERASED or _TOKEN.fullmatch(text):
            return text  # already sealed (a forwarded event): never wrap twice
        if self.detector is not None:
            found = _disjoint(self.detector.analyze(text))
            for k, f in reversed(list(enumerate(found))):
                owner = subject
                if f.type in NAMED_TYPES:
                    owner = self.person_subject(text[f.start:f.end])
                    self.named += 1
                try:
                    token = self.cipher.encrypt(text[f.start:f.end], subject_id=owner,
                                                event_id=event_id, field=f"{where}#{k}")
                except SubjectErased:
                    token = ERASED
                text = text[:f.start] + token + text[f.end:]
        self.sealed += 1
        try:
            return self.cipher.encrypt(text, subject_id=subject, event_id=event_id, field=where)
        except SubjectErased:
            return ERASED  # the subject is gone: nothing of theirs may be stored again

    def protect(self, event: Envelope) -> Envelope:
        """The event with its personal text sealed (the same event if it has none)."""
        payload = self.sealed_payload(event)
        return event if payload is None else dataclasses.replace(event, payload=freeze(payload))

    def sealed_payload(self, event: Envelope) -> dict[str, Any] | None:
        """A plain copy of the payload with its personal text sealed; None if it has none.

        ``encode(event, protector.sealed_payload(event))`` is ``encode(protect(event))``
        without freezing the copy only to thaw it again (the SDK's producer thread).
        """
        paths = personal_paths(event.type, event.payload)
        if not paths:
            return None
        payload = thaw(event.payload)
        subject, event_id = subject_of(event), str(event.event_id)
        for path in paths:
            holder = payload if len(path) == 1 else payload[path[0]]
            holder[path[-1]] = self._seal_text(holder[path[-1]], subject, event_id,
                                               ".".join(path))
        return payload  # type: ignore[no-any-return]


@dataclass
class Opened:
    """A revealed payload and the personal paths that read as erased (or unreadable)."""

    payload: dict[str, Any]
    erased: list[str] = field(default_factory=list)


def _open_text(cipher: FieldCipher, token: str, event_id: str, where: str,
               names: bool) -> tuple[str, bool]:
    try:
        text = cipher.decrypt(token, event_id=event_id, field=where)
    except CryptoError as exc:
        log.warning("field %s of event %s unreadable: %s", where, event_id, type(exc).__name__)
        return UNREADABLE, True
    if text == ERASED:
        return ERASED, True
    spans = list(_TOKEN.finditer(text))
    for k, m in reversed(list(enumerate(spans))):
        value = REDACTED
        if names:
            try:
                value = cipher.decrypt(m[0], event_id=event_id, field=f"{where}#{k}")
            except CryptoError:
                value = UNREADABLE
        text = text[:m.start()] + value + text[m.end():]
    return text, False


def reveal_context(context: Mapping[str, Any], event_id: str, cipher: FieldCipher | None,
                   *, names: bool = False) -> dict[str, Any]:
    """A decision context with its free text opened (persons redacted by default).

    What learners featurise: an erased text reads :data:`~schemas.cipher.ERASED`.

    >>> reveal_context({"title": "plain", "project": "p"}, "e-1", None)
    {'title': 'plain', 'project': 'p'}
    """
    out = thaw(context)
    for k in CONTEXT_PERSONAL:
        value = out.get(k)
        if isinstance(value, str) and _TOKEN.fullmatch(value):
            out[k] = UNREADABLE if cipher is None else _open_text(
                cipher, value, event_id, f"context.{k}", names)[0]
    return out


def reveal(event: Envelope, cipher: FieldCipher | None, *, names: bool = True) -> Opened:
    """The event's payload with personal text decrypted (``names=False``: persons redacted)."""
    payload = thaw(event.payload)
    opened = Opened(payload)
    for path in personal_paths(event.type, payload):
        holder = payload if len(path) == 1 else payload[path[0]]
        value = holder[path[-1]]
        where = ".".join(path)
        if value == ERASED:
            opened.erased.append(where)
        elif _TOKEN.fullmatch(value):
            if cipher is None:
                holder[path[-1]] = UNREADABLE
                opened.erased.append(where)
                continue
            holder[path[-1]], gone = _open_text(cipher, value, str(event.event_id), where, names)
            if gone:
                opened.erased.append(where)
    return opened


def detector_for(mode: str) -> Detector | None:
    """The detector of a ``pii_detector`` setting (``none`` → no detection)."""
    if mode == "none":
        return None
    if mode == "pattern":
        from schemas.pii import PatternDetector

        return PatternDetector()
    from schemas.pii_presidio import PresidioDetector

    return PresidioDetector(ner=mode == "ner")


def key_store(settings: Any) -> KeyStore:
    """The configured key store: a :class:`~schemas.keystore_file.FileKeyStore`."""
    from schemas.keystore_file import FileKeyStore

    return FileKeyStore(settings.key_folder(), kek_path=settings.kek_path)
