"""Field encryption: AES-256-GCM under the data subject's key, bound to subject, event and field.

The narrow interface (eventsourcing's ``Cipher`` habit): :meth:`Cipher.encrypt`
and :meth:`Cipher.decrypt`, honest errors (:class:`schemas.keys.CryptoError`
subclasses whose messages name the subject, event and field but never the
plaintext). Unlike eventsourcing's ``AESCipher`` (one key for everything:
encryption at rest), every subject has their own data key, so destroying it
erases their data wherever copies went — broker, archive, cold files, backups.

Wire form — a string, so it fits any JSON field and can replace a span inside
free text::

    enc1.<key id, base64url>.<DEK version>.<nonce, base64url>.<ciphertext+tag, base64url>

The key id is the subject id; no key is ever in it. The associated data binds
``(subject_id, event_id, field)``: a ciphertext copied to another event, field
or subject fails authentication (:class:`~schemas.keys.TamperedField`).
Reading a field of an erased subject returns :data:`ERASED`, never an
exception and never ciphertext posing as text.

>>> from schemas.keys import MemoryKeyStore
>>> keys = MemoryKeyStore()
>>> cipher = FieldCipher(keys)
>>> token = cipher.encrypt("Mario Juric", subject_id="s-1", event_id="e-1", field="title")
>>> token.startswith("enc1."), "Mario" in token
(True, False)
>>> cipher.decrypt(token, event_id="e-1", field="title")
'Mario Juric'
>>> cipher.decrypt(token, event_id="e-2", field="title")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
schemas.keys.TamperedField: field 'title' of event 'e-2' (subject 's-1', key v1) does not ...
>>> keys.erase("s-1"), cipher.decrypt(token, event_id="e-1", field="title")
(1, '[erased]')
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.keys import KeyStore, MalformedField, TamperedField

PREFIX = "enc1"
ERASED = "[erased]"
NONCE_BYTES = 12
_AAD_DOMAIN = b"selflearn.field.v1"
# Shape check before any decoding work: five dot-separated parts, base64url alphabet.
_WIRE = re.compile(r"enc1\.([A-Za-z0-9_-]*)\.([1-9][0-9]{0,9})\.([A-Za-z0-9_-]{16})\."
                   r"([A-Za-z0-9_-]{22,})")


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utf8(text: str) -> bytes:
    # surrogatepass: any Python str round-trips, even one a fuzzer made.
    return text.encode("utf-8", "surrogatepass")


def associated_data(subject_id: str, event_id: str, field: str) -> bytes:
    """Length-prefixed ``(subject, event, field)``: no two triples share an encoding.

    >>> associated_data("a", "b", "c") != associated_data("a", "bc", "")
    True
    """
    parts = [_AAD_DOMAIN] + [_utf8(p) for p in (subject_id, event_id, field)]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@dataclass(frozen=True, slots=True)
class EncryptedField:
    """The parts of the wire form: key id (subject), DEK version, nonce, ciphertext+tag."""

    key_id: str
    version: int
    nonce: bytes
    ciphertext: bytes

    def to_wire(self) -> str:
        return ".".join((PREFIX, _b64e(_utf8(self.key_id)), str(self.version),
                         _b64e(self.nonce), _b64e(self.ciphertext)))

    @classmethod
    def from_wire(cls, token: Any) -> EncryptedField:
        """Parse a wire string; :class:`~schemas.keys.MalformedField` for anything else."""
        match = _WIRE.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            raise MalformedField("not an encrypted field (expected enc1.<kid>.<v>.<nonce>.<ct>)")
        try:
            key_id = _b64d(match[1]).decode("utf-8", "surrogatepass")
            nonce, ciphertext = _b64d(match[3]), _b64d(match[4])
        except (binascii.Error, ValueError) as exc:
            raise MalformedField("encrypted field has bad base64 or key id") from exc
        if len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
            raise MalformedField("encrypted field has a bad nonce or a truncated ciphertext")
        return cls(key_id, int(match[2]), nonce, ciphertext)


def is_encrypted(value: Any) -> bool:
    """Whether ``value`` looks like an encrypted field (cheap; no decoding).

    >>> is_encrypted("enc1.czE.1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"), is_encrypted("hi")
    (True, False)
    """
    return isinstance(value, str) and _WIRE.fullmatch(value) is not None


class Cipher(ABC):
    """Encrypt/decrypt one personal field of one event for one data subject."""

    @abstractmethod
    def encrypt(self, plaintext: str, *, subject_id: str, event_id: str, field: str) -> str:
        """The wire form of ``plaintext``; :class:`~schemas.keys.SubjectErased` after erasure."""

    @abstractmethod
    def decrypt(self, token: str, *, event_id: str, field: str,
                subject_id: str | None = None) -> str:
        """The plaintext, or :data:`ERASED` if its subject was erased.

        ``subject_id``, when given, must be the token's key id (the event's
        subject). Raises only :class:`~schemas.keys.CryptoError` subclasses.
        """


class FieldCipher(Cipher):
    """AES-256-GCM with a random 96-bit nonce per field, keys from a :class:`KeyStore`."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def encrypt(self, plaintext: str, *, subject_id: str, event_id: str, field: str) -> str:
        if not isinstance(plaintext, str):
            kind = type(plaintext).__name__
            raise TypeError(f"field {field!r}: only str is encrypted, got {kind}")
        dek = self.keys.data_key(subject_id)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(dek.key).encrypt(nonce, _utf8(plaintext),
                                         associated_data(subject_id, event_id, field))
        return EncryptedField(subject_id, dek.version, nonce, sealed).to_wire()

    def decrypt(self, token: str, *, event_id: str, field: str,
                subject_id: str | None = None) -> str:
        enc = EncryptedField.from_wire(token)
        where = (f"field {field!r} of event {event_id!r} "
                 f"(subject {enc.key_id!r}, key v{enc.version})")
        if subject_id is not None and subject_id != enc.key_id:
            raise TamperedField(f"{where} belongs to another subject than {subject_id!r}")
        dek = self.keys.data_key_version(enc.key_id, enc.version)
        if dek is None:
            return ERASED
        try:
            plain = AESGCM(dek.key).decrypt(enc.nonce, enc.ciphertext,
                                            associated_data(enc.key_id, event_id, field))
        except InvalidTag:
            raise TamperedField(f"{where} does not authenticate") from None
        return plain.decode("utf-8", "surrogatepass")
