"""The embedded default key storage: a KEK file and a SQLite table of wrapped data keys.

Both live in the data folder's ``keys/`` (mode 0700, files 0600), never in the
broker, the archive or any event: erasing a subject deletes rows here only.
For production, point ``kek_path`` at a file outside the data folder (a
mounted secret) or replace :class:`FileMasterKey` with a KMS/Vault transit
implementation of :class:`schemas.keys.MasterKey`; the DEK table stays.

Crypto-shredding on a file: SQLite runs with ``secure_delete`` (deleted rows
are overwritten with zeros) and a rollback journal that is deleted at commit,
so after ``erase`` the wrapped key bytes are in no file of ``keys/`` (tested by
scanning the raw bytes). Copies in backups remain wrapped under the KEK:
rotate the master key after an erasure and drop old KEK versions from backups
on the documented schedule (docs/privacy.md).

Several processes (agents, workers, ``selflearn rotate-keys``) share one
folder: every write is one ``BEGIN IMMEDIATE`` transaction, and the KEK version
in force is recorded in the same database, so a process that missed a rotation
reloads the KEK file before wrapping a new key. Unwrapped keys are cached per
process; on a ``subject.erased`` event call :meth:`FileKeyStore.forget`.

>>> import tempfile, pathlib
>>> store = FileKeyStore(pathlib.Path(tempfile.mkdtemp()) / "keys")
>>> store.data_key("s1").version, store.new_version("s1").version
(1, 2)
>>> store.rotate_master(), store.erase("s1"), store.stats()["erased"]
(Rotation(kek_version=2, rewrapped=2), 2, 1)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.keys import (
    KEY_BYTES,
    DataKey,
    KeyStore,
    MasterKey,
    Rotation,
    SubjectErased,
    UnknownKey,
    _LocalMasterKey,
)

KEK_FORMAT = "selflearn-kek-v1"
_CACHE_MAX = 50_000


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``data``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class FileMasterKey(_LocalMasterKey):
    """KEK versions in a JSON file (0600), created on first use; rotation appends a version.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "master.json"
    >>> mk = FileMasterKey(path)
    >>> v, blob = mk.wrap(bytes(32))
    >>> mk.rotate(), FileMasterKey(path).unwrap(v, blob) == bytes(32)
    (2, True)
    >>> oct(path.stat().st_mode & 0o777)
    '0o600'
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            if not self.path.exists():
                self._save({1: os.urandom(KEY_BYTES)}, 1)
        self.refresh()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises creation and rotation between processes; readers need no lock
        # because the file is only ever replaced whole.
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, keys: dict[int, bytes], current: int) -> None:
        doc = {"format": KEK_FORMAT, "current": current,
               "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(keys.items())}}
        _write_private(self.path, json.dumps(doc, indent=1).encode())

    def refresh(self) -> None:
        doc = json.loads(self.path.read_text())
        if doc.get("format") != KEK_FORMAT:
            raise UnknownKey(f"{self.path} is not a {KEK_FORMAT} file")
        self._keys = {int(v): base64.b64decode(k) for v, k in doc["keys"].items()}
        self._current = int(doc["current"])

    def rotate(self) -> int:
        with self._locked():
            self.refresh()
            new = max(self._keys) + 1
            self._save({**self._keys, new: os.urandom(KEY_BYTES)}, new)
        self.refresh()
        return new


class FileKeyStore(KeyStore):
    """Wrapped data keys in ``folder/deks.sqlite``; the KEK in ``kek_path`` (default beside it)."""

    def __init__(self, folder: str | Path, master: MasterKey | None = None,
                 kek_path: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().__init__(master or FileMasterKey(kek_path or self.folder / "master.json"))
        db = self.folder / "deks.sqlite"
        if not db.exists():
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        # Rotation re-wraps every key in one transaction: other processes wait for it.
        self._db = sqlite3.connect(db, timeout=120, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, int], bytes] = {}
        self._current: dict[str, int] = {}
        with self._lock:
            for pragma in ("secure_delete=ON", "journal_mode=DELETE", "synchronous=FULL"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS deks (subject TEXT NOT NULL, version INTEGER NOT NULL,
                    kek_version INTEGER NOT NULL, wrapped BLOB NOT NULL, created REAL NOT NULL,
                    PRIMARY KEY (subject, version));
                CREATE TABLE IF NOT EXISTS erased (subject TEXT PRIMARY KEY,
                    erased_at REAL NOT NULL, versions INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
            """)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _remember(self, subject_id: str, version: int, key: bytes) -> DataKey:
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
            self._current.clear()
        self._cache[(subject_id, version)] = key
        return DataKey(subject_id, version, key)

    def _insert(self, db: sqlite3.Connection, subject_id: str) -> DataKey:
        if db.execute("SELECT 1 FROM erased WHERE subject = ?", (subject_id,)).fetchone():
            raise SubjectErased(f"subject {subject_id!r} was erased")
        row = db.execute("SELECT v FROM meta WHERE k = 'kek_version'").fetchone()
        if row and row[0] > self.master.current_version:
            self.master.refresh()  # another process rotated: wrap under the new version
        (version,) = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM deks WHERE subject = ?",
                                (subject_id,)).fetchone()
        dek = os.urandom(KEY_BYTES)
        kek_version, wrapped = self.master.wrap(dek)
        db.execute("INSERT INTO deks VALUES (?, ?, ?, ?, ?)",
                   (subject_id, version, kek_version, wrapped, time.time()))
        self._current[subject_id] = version
        return self._remember(subject_id, version, dek)

    def data_key(self, subject_id: str) -> DataKey:
        with self._lock:
            version = self._current.get(subject_id)
            if version is not None and (subject_id, version) in self._cache:
                return DataKey(subject_id, version, self._cache[(subject_id, version)])
            with self._tx() as db:
                row = db.execute("SELECT version, kek_version, wrapped FROM deks WHERE subject = ?"
                                 " ORDER BY version DESC LIMIT 1", (subject_id,)).fetchone()
                if row is None:
                    return self._insert(db, subject_id)
            self._current[subject_id] = row[0]
            return self._remember(subject_id, row[0], self.master.unwrap(row[1], row[2]))

    def data_key_version(self, subject_id: str, version: int) -> DataKey | None:
        with self._lock:
            key = self._cache.get((subject_id, version))
            if key is not None:
                return DataKey(subject_id, version, key)
            row = self._db.execute("SELECT kek_version, wrapped FROM deks WHERE subject = ? AND "
                                   "version = ?", (subject_id, version)).fetchone()
            if row is None:
                if self.is_erased(subject_id):
                    return None
                raise UnknownKey(f"no data key v{version} for subject {subject_id!r}")
            return self._remember(subject_id, version, self.master.unwrap(row[0], row[1]))

    def new_version(self, subject_id: str) -> DataKey:
        with self._tx() as db:
            return self._insert(db, subject_id)

    def erase(self, subject_id: str) -> int:
        with self._tx() as db:
            count = db.execute("DELETE FROM deks WHERE subject = ?", (subject_id,)).rowcount
            db.execute("INSERT OR IGNORE INTO erased VALUES (?, ?, ?)",
                       (subject_id, time.time(), count))
        self.forget(subject_id)
        return count

    def is_erased(self, subject_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM erased WHERE subject = ?",
                                    (subject_id,)).fetchone() is not None

    def rotate_master(self) -> Rotation:
        with self._tx() as db:
            new = self.master.rotate()
            rows = db.execute("SELECT subject, version, kek_version, wrapped FROM deks "
                              "WHERE kek_version != ?", (new,)).fetchall()
            for subject, version, kek_version, wrapped in rows:
                kv, blob = self.master.rewrap(kek_version, wrapped)
                db.execute("UPDATE deks SET kek_version = ?, wrapped = ? WHERE subject = ? AND "
                           "version = ?", (kv, blob, subject, version))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('kek_version', ?)", (new,))
        return Rotation(new, len(rows))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            subjects, keys = self._db.execute(
                "SELECT COUNT(DISTINCT subject), COUNT(*) FROM deks").fetchone()
            (erased,) = self._db.execute("SELECT COUNT(*) FROM erased").fetchone()
        return {"subjects": subjects, "data_keys": keys, "erased": erased,
                "kek_version": self.master.current_version}

    def forget(self, subject_id: str) -> None:
        with self._lock:
            self._current.pop(subject_id, None)
            for cached in [k for k in self._cache if k[0] == subject_id]:
                del self._cache[cached]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
