"""Authenticated pickles: model state that is an object graph, sealed with HMAC-SHA256.

A River model or drift detector is a Python object graph; pickle is the only
general way to store it, and unpickling bytes is running code chosen by
whoever wrote them. Redis, PostgreSQL and MLflow are writable by more people
than the worker, so every pickle this project stores is *sealed*: base64 of
the pickle plus an HMAC-SHA256 over it and over what it claims to be (the
``context``: which learner, which detector). :func:`loads_sealed` compares the
MAC (in constant time) **before** it unpickles anything and raises
:class:`SnapshotTampered`, naming the object, on any mismatch.

The key comes from configuration (:func:`schemas.settings.snapshot_key`:
``SELFLEARN_SNAPSHOT_KEY``, a key file, or ``<data_dir>/snapshot.key``), never
from the data. A process uses one key; :func:`use_key` sets it explicitly
(tests, tools that were given other settings), else it is read from the
environment's settings on first use; :func:`use_settings` names the settings
to read it from (the CLI's ``--data-dir``, a test's data folder).

>>> key = b"k" * 32
>>> sealed = dumps_sealed({"w": 1.5}, "learner 'demo'", key=key)
>>> sorted(sealed), loads_sealed(sealed, "learner 'demo'", key=key)
(['mac', 'pickle'], {'w': 1.5})
>>> try:
...     loads_sealed(sealed, "learner 'other'", key=key)
... except SnapshotTampered as exc:
...     print(str(exc)[:45])
learner 'other': HMAC-SHA256 check failed: th
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import pickle
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["SnapshotTampered", "canonical_pickle", "current_key", "dumps_sealed", "loads_sealed",
           "use_key", "use_settings"]

_DOMAIN = b"selflearn-sealed-pickle-v1\x00"
_lock = threading.Lock()
_key: bytes | None = None
_settings: Settings | None = None


class SnapshotTampered(ValueError):
    """Sealed state whose MAC does not match: changed, forged, or sealed with another key.

    ``what`` names the object (e.g. ``"learner 'river_bow_linear'"``).
    """

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what


def use_key(key: bytes) -> None:
    """Seal and check with ``key`` in this process from now on."""
    global _key
    if len(key) < 32:
        raise ValueError("a snapshot key needs at least 32 bytes")
    with _lock:
        _key = bytes(key)


def use_settings(settings: Settings) -> None:
    """Read the key from ``settings`` (on first use) instead of the environment's."""
    global _key, _settings
    with _lock:
        _key, _settings = None, settings


def current_key() -> bytes:
    """The process's key: :func:`use_key`'s, else read once from the settings."""
    global _key
    with _lock:
        if _key is None:
            from schemas.settings import Settings, snapshot_key

            _key = snapshot_key(_settings if _settings is not None else Settings())
        return _key


def _mac(context: str, body: bytes, key: bytes | None) -> str:
    msg = _DOMAIN + context.encode() + b"\x00" + body
    return hmac.new(key or current_key(), msg, hashlib.sha256).hexdigest()


def dumps_sealed(obj: Any, context: str, *, key: bytes | None = None) -> dict[str, str]:
    """``{"mac", "pickle"}`` (hex, base64): ``obj`` pickled and bound to ``context``.

    ``key`` defaults to :func:`current_key`.
    """
    body = base64.b64encode(canonical_pickle(obj))
    return {"mac": _mac(context, body, key), "pickle": body.decode("ascii")}


def canonical_pickle(obj: Any) -> bytes:
    """Pickle bytes that a restored copy of ``obj`` reproduces exactly.

    Pickle shares a string written twice only when both places hold the *same*
    object; a live model often does (a pipeline step's key is its class's
    ``__name__``), its unpickled copy does not, so the two pickle differently.
    Pickling the object as it comes back from one round trip removes those
    accidents: ``canonical_pickle(pickle.loads(canonical_pickle(m)))`` equals
    ``canonical_pickle(m)`` (tested for every registered River learner).

    >>> key = "Step" + str(1)  # not interned
    >>> obj = {"cls": key, "again": key}
    >>> canonical_pickle(pickle.loads(canonical_pickle(obj))) == canonical_pickle(obj)
    True
    """
    first = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(pickle.loads(first), protocol=pickle.HIGHEST_PROTOCOL)  # noqa: S301


def loads_sealed(sealed: Any, context: str, *, key: bytes | None = None) -> Any:
    """The object of :func:`dumps_sealed`, after checking its MAC against ``context``.

    Raises
    ------
    SnapshotTampered
        When the sealed value is malformed or its MAC does not match; nothing
        has been unpickled then.
    """
    if not isinstance(sealed, dict) or not isinstance(sealed.get("mac"), str) \
            or not isinstance(sealed.get("pickle"), str):
        raise SnapshotTampered(context, "not a sealed state (expected {mac, pickle}); "
                                        "refusing to unpickle it")
    try:
        body = sealed["pickle"].encode("ascii")
    except UnicodeEncodeError as exc:
        raise SnapshotTampered(context, "sealed state is not ASCII base64; refusing to "
                                        "unpickle it") from exc
    if not hmac.compare_digest(_mac(context, body, key), sealed["mac"]):
        raise SnapshotTampered(context, (
            "HMAC-SHA256 check failed: the state was changed after it was sealed, or "
            "sealed with another key (SELFLEARN_SNAPSHOT_KEY / <data_dir>/snapshot.key); "
            "refusing to unpickle it"))
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error as exc:  # only reachable with the key: a bug, not an attack
        raise SnapshotTampered(context, f"sealed state is not base64 ({exc})") from exc
    return pickle.loads(raw)  # noqa: S301 - authenticated above
