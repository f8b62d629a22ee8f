"""Keys for per-subject envelope encryption: a versioned master key wraps data keys.

Two narrow interfaces, so production can swap where keys live:

:class:`MasterKey`  the key-encryption key (KEK): ``wrap``/``unwrap`` data keys,
                    ``rotate`` to a new version. Embedded default:
                    :class:`FileMasterKey` (a JSON file, AES key wrap, RFC 3394).
                    Production slot: a KMS or Vault transit key — ``wrap`` is
                    transit ``encrypt``, ``unwrap`` is ``decrypt``, ``rotate`` is
                    ``keys/<name>/rotate``, ``rewrap`` is transit ``rewrap`` (the
                    data key never leaves the KMS unwrapped during rotation).
                    Only these four methods need implementing.
:class:`KeyStore`   data keys (DEKs) per data subject, wrapped by a MasterKey:
                    the current key, any older version, ``erase`` (crypto-
                    shredding: every version destroyed, a tombstone kept) and
                    ``rotate_master`` (new KEK version, every DEK re-wrapped; no
                    event is touched). :class:`MemoryKeyStore` here,
                    :class:`schemas.keystore_file.FileKeyStore` on disk.

Why in ``schemas``: the encrypted field's wire form is part of what an event may
contain, the catalog that marks fields personal is here, and every layer needs
it — the SDK (agents) encrypts, the worker and the projections decrypt, ops
erases and rotates. Only the bottom layer is importable from all of them.

Subject ids must be pseudonyms (never a name or an e-mail address): they stay
readable in events after erasure, so audit can say *whose* data was erased.

>>> store = MemoryKeyStore(MemoryMasterKey())
>>> k1 = store.data_key("subject-1")
>>> (k1.version, len(k1.key)), store.data_key("subject-1") == k1
((1, 32), True)
>>> store.erase("subject-1"), store.data_key_version("subject-1", 1), store.is_erased("subject-1")
(1, None, True)
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

KEY_BYTES = 32  # AES-256


class CryptoError(Exception):
    """Base of every error the encryption layer raises; messages never hold plaintext."""


class SubjectErased(CryptoError):
    """The subject was erased: no new data can be encrypted for them."""


class UnknownKey(CryptoError):
    """No such key (never created here): a wrong key store, not an erased subject."""


class TamperedField(CryptoError):
    """Authentication failed: wrong key, wrong event/field/subject, or altered bytes."""


class MalformedField(CryptoError):
    """Not an encrypted field's wire form."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """One version of a subject's data key; ``key`` is never printed."""

    subject_id: str
    version: int
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rotation:
    """Result of a master-key rotation: the new KEK version, how many DEKs were re-wrapped."""

    kek_version: int
    rewrapped: int


class MasterKey(ABC):
    """The key-encryption key: versioned, wraps data keys, never stored with them."""

    @property
    @abstractmethod
    def current_version(self) -> int:
        """The version new wraps use."""

    @abstractmethod
    def wrap(self, dek: bytes) -> tuple[int, bytes]:
        """``(kek_version, wrapped)`` of a data key under the current version."""

    @abstractmethod
    def unwrap(self, version: int, wrapped: bytes) -> bytes:
        """The data key; :class:`UnknownKey` / :class:`TamperedField` on failure."""

    @abstractmethod
    def rotate(self) -> int:
        """Make a new current version (old ones stay for unwrapping); returns it."""

    def rewrap(self, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """Wrap again under the current version (a KMS does this server-side)."""
        return self.wrap(self.unwrap(version, wrapped))

    def refresh(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Pick up versions another process added (no-op for a single-process key)."""


class _LocalMasterKey(MasterKey):
    """AES key wrap under locally held KEK versions."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}
        self._current = 0

    @property
    def current_version(self) -> int:
        return self._current

    def wrap(self, dek: bytes) -> tuple[int, bytes]:
        version = self._current
        return version, aes_key_wrap(self._keys[version], dek)

    def unwrap(self, version: int, wrapped: bytes) -> bytes:
        if version not in self._keys:
            self.refresh()
        kek = self._keys.get(version)
        if kek is None:
            raise UnknownKey(f"master key version {version} is not known here")
        try:
            return aes_key_unwrap(kek, wrapped)
        except (InvalidUnwrap, ValueError) as exc:
            raise TamperedField(f"data key does not unwrap under master key v{version}") from exc


class MemoryMasterKey(_LocalMasterKey):
    """A KEK held in memory only (tests, throw-away stacks).

    >>> mk = MemoryMasterKey()
    >>> v, blob = mk.wrap(bytes(32))
    >>> mk.rotate(), mk.unwrap(v, blob) == bytes(32), mk.rewrap(v, blob)[0]
    (2, True, 2)
    """

    def __init__(self) -> None:
        super().__init__()
        self.rotate()

    def rotate(self) -> int:
        self._current += 1
        self._keys[self._current] = os.urandom(KEY_BYTES)
        return self._current


class KeyStore(ABC):
    """Data keys per subject. Implementations are safe to share between threads."""

    def __init__(self, master: MasterKey) -> None:
        self.master = master

    @abstractmethod
    def data_key(self, subject_id: str) -> DataKey:
        """The subject's current data key, made on first use; :class:`SubjectErased` if erased."""

    @abstractmethod
    def data_key_version(self, subject_id: str, version: int) -> DataKey | None:
        """One version; ``None`` if the subject was erased, :class:`UnknownKey` if never made."""

    @abstractmethod
    def new_version(self, subject_id: str) -> DataKey:
        """Start a new data-key version for the subject (older ones stay readable)."""

    @abstractmethod
    def erase(self, subject_id: str) -> int:
        """Destroy every version of the subject's key, keep a tombstone; returns the count."""

    @abstractmethod
    def is_erased(self, subject_id: str) -> bool:
        """Whether the subject was erased."""

    @abstractmethod
    def rotate_master(self) -> Rotation:
        """New master-key version; every data key re-wrapped under it. No event is rewritten."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts for reports: ``subjects``, ``data_keys``, ``erased``, ``kek_version``."""

    def forget(self, subject_id: str) -> None:  # noqa: B027 - only caching stores need it
        """Drop cached keys of a subject another process erased (on ``subject.erased``)."""


class MemoryKeyStore(KeyStore):
    """Data keys in a dict: the same semantics as the file store, nothing on disk."""

    def __init__(self, master: MasterKey | None = None) -> None:
        super().__init__(master or MemoryMasterKey())
        self._lock = threading.Lock()
        self._wrapped: dict[str, dict[int, tuple[int, bytes]]] = {}
        self._erased: set[str] = set()

    def _add(self, subject_id: str) -> DataKey:
        if subject_id in self._erased:
            raise SubjectErased(f"subject {subject_id!r} was erased")
        versions = self._wrapped.setdefault(subject_id, {})
        version = max(versions, default=0) + 1
        dek = os.urandom(KEY_BYTES)
        versions[version] = self.master.wrap(dek)
        return DataKey(subject_id, version, dek)

    def data_key(self, subject_id: str) -> DataKey:
        with self._lock:
            versions = self._wrapped.get(subject_id)
            if not versions:
                return self._add(subject_id)
            version = max(versions)
            return DataKey(subject_id, version, self.master.unwrap(*versions[version]))

    def data_key_version(self, subject_id: str, version: int) -> DataKey | None:
        with self._lock:
            if subject_id in self._erased:
                return None
            wrapped = self._wrapped.get(subject_id, {}).get(version)
            if wrapped is None:
                raise UnknownKey(f"no data key v{version} for subject {subject_id!r}")
            return DataKey(subject_id, version, self.master.unwrap(*wrapped))

    def new_version(self, subject_id: str) -> DataKey:
        with self._lock:
            return self._add(subject_id)

    def erase(self, subject_id: str) -> int:
        with self._lock:
            self._erased.add(subject_id)
            return len(self._wrapped.pop(subject_id, {}))

    def is_erased(self, subject_id: str) -> bool:
        return subject_id in self._erased

    def rotate_master(self) -> Rotation:
        with self._lock:
            new = self.master.rotate()
            count = 0
            for versions in self._wrapped.values():
                for version, (kek_version, blob) in list(versions.items()):
                    if kek_version != new:
                        versions[version] = self.master.rewrap(kek_version, blob)
                        count += 1
            return Rotation(new, count)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"subjects": len(self._wrapped),
                    "data_keys": sum(len(v) for v in self._wrapped.values()),
                    "erased": len(self._erased), "kek_version": self.master.current_version}
