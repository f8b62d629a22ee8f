"""Signed checkpoints of the audit log, kept outside the database.

A checkpoint is a C2SP ``tlog-checkpoint`` signed note (https://c2sp.org/tlog-checkpoint,
https://c2sp.org/signed-note)::

    <origin>
    <number of records>
    <base64 RFC 6962 Merkle root of those records>

    — <key name> <base64(4-byte key id || Ed25519 signature of the three lines)>

The key id is the first 4 bytes of SHA-256(key name || "\\n" || 0x01 || public
key). Files, in ``<data_dir>/audit/`` by default:

- ``checkpoint.key``: the Ed25519 signing key (PKCS#8 PEM, mode 0600);
- ``checkpoint.vkey``: its C2SP verifier key (``name+keyid+base64(0x01||key)``), the
  string an auditor pins (``selflearn audit-log verify --vkey``);
- ``<table>.checkpoint``: the newest note; ``<table>.checkpoints``: every note
  ever written, one JSON line each, so a root that no longer matches can be
  found however far back the history was rewritten.

>>> import tempfile
>>> keys = SigningKey.load_or_create(Path(tempfile.mkdtemp()))
>>> note = keys.sign(Checkpoint("example.org/log", 3, bytes(32)))
>>> note.splitlines()[:3]
['example.org/log', '3', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=']
>>> parse_note(note, keys.vkey) == Checkpoint("example.org/log", 3, bytes(32))
True
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

KEY_FILE = "checkpoint.key"
VKEY_FILE = "checkpoint.vkey"
DASH = "\u2014"  # the em dash that starts a signature line
ED25519 = b"\x01"  # C2SP signature type of Ed25519


class BadCheckpoint(ValueError):
    """A note that is malformed, signed by another key, or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint commits to: origin, size and Merkle root."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """The signed body: three lines, each ending in a newline."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def key_id(name: str, public: bytes) -> bytes:
    """C2SP key id: 4 bytes of SHA-256(name, newline, signature type, public key)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def parse_vkey(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """``(name, key id, public key)`` of a verifier key string."""
    try:
        name, kid_hex, b64 = vkey.strip().split("+", 2)
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise BadCheckpoint(f"not a verifier key: {vkey!r}") from exc
    if raw[:1] != ED25519 or len(raw) != 33 or key_id(name, raw[1:]).hex() != kid_hex:
        raise BadCheckpoint(f"verifier key {name!r} is not a consistent Ed25519 key")
    return name, bytes.fromhex(kid_hex), Ed25519PublicKey.from_public_bytes(raw[1:])


class SigningKey:
    """The log's Ed25519 key, created on first use in ``folder``."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name, self.private = name, private
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        self.id = key_id(name, public)
        self.vkey = f"{name}+{self.id.hex()}+{base64.b64encode(ED25519 + public).decode()}"

    @classmethod
    def load_or_create(cls, folder: Path) -> SigningKey:
        folder.mkdir(parents=True, exist_ok=True)
        key_path, vkey_path = folder / KEY_FILE, folder / VKEY_FILE
        with _locked(folder):
            if not key_path.exists():
                fresh = Ed25519PrivateKey.generate()
                pem = fresh.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                name = f"selflearn-audit-{secrets.token_hex(4)}"
                vkey_path.write_text(cls(name, fresh).vkey + "\n")
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise BadCheckpoint(f"{key_path} is not an Ed25519 key")
        name = vkey_path.read_text().split("+", 1)[0]
        return cls(name, private)

    def sign(self, cp: Checkpoint) -> str:
        """The signed note of ``cp``."""
        body = cp.text()
        sig = self.private.sign(body.encode())
        return f"{body}\n{DASH} {self.name} {base64.b64encode(self.id + sig).decode()}\n"


def parse_note(note: str, vkey: str) -> Checkpoint:
    """Check the note's signature by ``vkey`` and return what it commits to.

    Raises
    ------
    BadCheckpoint
        Malformed note, no signature by this key, or a signature that does not verify.
    """
    name, kid, public = parse_vkey(vkey)
    body, sep, sigs = note.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) < 3:
        raise BadCheckpoint("not a checkpoint note (origin, size, root, blank line, signature)")
    text = body + "\n"
    for line in sigs.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or parts[1] != name:
            continue
        raw = base64.b64decode(parts[2])
        if raw[:4] != kid:
            continue
        try:
            public.verify(raw[4:], text.encode())
        except InvalidSignature as exc:
            raise BadCheckpoint(f"the signature of {name} does not verify") from exc
        try:
            return Checkpoint(lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True))
        except ValueError as exc:
            raise BadCheckpoint(f"malformed size or root: {exc}") from exc
    raise BadCheckpoint(f"no signature by {name} (key id {kid.hex()})")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class CheckpointStore:
    """The newest note and the history of notes of one audit table, in ``folder``."""

    def __init__(self, folder: Path, table: str) -> None:
        self.folder = folder
        self.latest = folder / f"{table}.checkpoint"
        self.history = folder / f"{table}.checkpoints"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers (several CLI processes and workers share one data folder)."""
        with _locked(self.folder):
            yield

    def notes(self) -> list[tuple[str, str]]:
        """Every note ever written, oldest first, with when it was written (unsigned)."""
        try:
            lines = self.history.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                raw = orjson.loads(line)
                out.append((str(raw["note"]), str(raw.get("written_at", ""))))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                out.append((line, ""))  # a damaged line still fails verification, visibly
        return out

    def write(self, note: str) -> None:
        """Append ``note`` to the history, then make it the newest (atomically)."""
        entry = orjson.dumps({"note": note, "written_at": datetime.now(UTC).isoformat()})
        with open(self.history, "ab") as out:
            out.write(entry + b"\n")
            out.flush()
            os.fsync(out.fileno())
        tmp = self.latest.with_suffix(".tmp")
        tmp.write_text(note)
        os.replace(tmp, self.latest)
