"""The learner protocol and the small helpers every learner shares.

A learner is a River-style online model: ``predict_one`` then ``learn_one``,
one event at a time. Its whole state is plain JSON data held in ``self.__dict__``
so that :meth:`StateLearner.snapshot` is a deterministic byte string (orjson of
the attributes in their insertion order) and :meth:`StateLearner.restore`
rebuilds a model that predicts and keeps learning bit-identically.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from bisect import insort
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import orjson

__all__ = [
    "Learner",
    "StateLearner",
    "insort_list",
    "median_sorted",
    "num",
    "restore_members",
    "tokens",
    "weighted_median",
]


@runtime_checkable
class Learner(Protocol):
    """What every task or review learner is: predict, learn, snapshot, restore.

    ``name`` is a class attribute (it names the kind, and a snapshot records it),
    and ``restore`` returns the class it is called on, so
    ``type(model).restore(model.snapshot())`` is typed as the model's own class.

    >>> from projections.learners.constant import Constant
    >>> isinstance(Constant(), Learner), Constant.name
    (True, 'constant')
    """

    name: ClassVar[str]

    def predict_one(self, x: dict[str, Any]) -> float:
        """Return the prediction for features ``x`` (story points, or risk in [0, 1])."""
        ...

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        """Update the model with the revealed target ``y`` of features ``x``."""
        ...

    def snapshot(self) -> bytes:
        """Return deterministic bytes of the full state."""
        ...

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild a learner from :meth:`snapshot` bytes."""
        ...


class StateLearner(ABC):
    """Base class: snapshot/restore of ``__dict__`` (plain JSON data) via orjson.

    Subclasses implement :meth:`predict_one` and :meth:`learn_one` (declared
    here, as River's base classes do, so that an ensemble typed with member
    ``StateLearner`` objects can call them) and keep only str-keyed dicts,
    lists, str, int, float and bool in their attributes. Floats survive the
    round trip bit-identically.
    """

    name: ClassVar[str] = "state"

    @abstractmethod
    def predict_one(self, x: dict[str, Any]) -> float:
        """Return the prediction for features ``x``; must not change the state."""

    @abstractmethod
    def learn_one(self, x: dict[str, Any], y: float) -> None:
        """Update the model with the revealed target ``y`` of features ``x``."""

    def snapshot(self) -> bytes:
        return orjson.dumps({"learner": self.name, "state": self.__dict__})

    @classmethod
    def restore(cls, data: bytes) -> Self:
        payload = orjson.loads(data)
        if payload.get("learner") != cls.name:
            raise ValueError(
                f"snapshot is of learner {payload.get('learner')!r}, not {cls.name!r}: "
                f"restore it with that learner's class"
            )
        obj = cls.__new__(cls)
        obj.__dict__.update(payload["state"])
        return obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def restore_members(
    states: dict[str, Any], kinds: Mapping[str, type[StateLearner]]
) -> dict[str, StateLearner]:
    """Rebuild an ensemble's member learners from their saved ``__dict__`` states."""
    members: dict[str, StateLearner] = {}
    for name, state in states.items():
        member = kinds[name].__new__(kinds[name])
        member.__dict__.update(state)
        members[name] = member
    return members


# ------------------------------------------------------------------- helpers

_WORD = re.compile(r"[a-z][a-z0-9_]{1,24}")
_STOP = frozenset(
    "the and for with that this from are was were will have has not but can "
    "when should would could into all any its our out use using been also "
    "there their them then than which what where who how a an to of in on is "
    "it be as at by or if we you so do no".split()
)
DESCRIPTION_CHARS = 600


@lru_cache(maxsize=65536)
def _hashed(word: str) -> str:
    # Learner state (checkpoints in PostgreSQL, snapshots in Redis and MLflow) keeps
    # tokens, and a task's text is its reporter's personal data: tokens are kept
    # as 48-bit BLAKE2b digests, never as words (same sets, so the same predictions).
    return hashlib.blake2b(word.encode(), digest_size=6).hexdigest()


@lru_cache(maxsize=8192)
def hashed_text(text: str) -> str:
    """``text`` as its lower-cased words, each replaced by its digest (for River's own tokenisers).

    >>> hashed_text("Fix the NPE") == " ".join(_hashed(w) for w in ("fix", "the", "npe"))
    True
    """
    return " ".join(map(_hashed, _WORD.findall(text.lower())))


def _words(text: str) -> list[str]:
    """Distinct words of ``text`` that are not stop words, in first-seen order."""
    return [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in _STOP]


# word -> its token ("t:"/"d:" + digest). Plain dictionaries, read far more
# than written: an LRU cache's bookkeeping on every hit (and the string built
# from the digest each time) made the learn loop ~10 % slower than the first
# wave's plain words. Emptied whole when full, and on an erasure.
_TITLE_TOKENS: dict[str, str] = {}
_DESCRIPTION_TOKENS: dict[str, str] = {}
_TOKEN_CACHE_MAX = 65536


def _new_token(cache: dict[str, str], prefix: str, word: str) -> str:
    if len(cache) >= _TOKEN_CACHE_MAX:
        cache.clear()
    token = cache[word] = prefix + _hashed(word)
    return token


@lru_cache(maxsize=8192)
def _tokens(title: str, description: str) -> tuple[str, ...]:
    # Words are de-duplicated before hashing (a description repeats its words),
    # then tokens, in case two words share a digest.
    seen: dict[str, None] = {}
    for words, cache, prefix in ((_words(title), _TITLE_TOKENS, "t:"),
                                 (_words(description[:DESCRIPTION_CHARS]),
                                  _DESCRIPTION_TOKENS, "d:")):
        get = cache.get
        for word in words:
            seen[get(word) or _new_token(cache, prefix, word)] = None
    return tuple(seen)


def clear_text_caches() -> None:
    """Empty the tokenisation caches of this process (on a subject's erasure).

    They are keyed by plaintext title and description, so they hold personal
    text for as long as an entry lives; they cannot be searched by subject, so
    an erasure empties them whole (they refill at the next events, ~µs each).
    """
    _hashed.cache_clear()
    hashed_text.cache_clear()
    _tokens.cache_clear()
    _TITLE_TOKENS.clear()
    _DESCRIPTION_TOKENS.clear()


def tokens(x: dict[str, Any]) -> tuple[str, ...]:
    """Unique title (``t:``) and description (``d:``) tokens of a task, cached.

    The cache is shared by all learners in the process, so an event is
    tokenised once however many learners see it. Words are hashed
    (:func:`_hashed`): no word of the text is kept in a learner's state.

    >>> toks = tokens({"title": "Fix the NPE in build queue", "description": None})
    >>> len(toks), toks[0] == "t:" + _hashed("fix"), "fix" in str(toks)
    (4, True, False)
    """
    title = x.get("title")
    desc = x.get("description")
    return _tokens(title if isinstance(title, str) else "", desc if isinstance(desc, str) else "")


def num(x: dict[str, Any], key: str) -> float:
    """Feature ``key`` of ``x`` as a finite float, 0.0 when missing or invalid.

    >>> num({"la": "3"}, "la"), num({}, "la"), num({"la": float("nan")}, "la")
    (3.0, 0.0, 0.0)
    """
    # event data: None, str, list... anything; float() rejects the odd ones below
    value: Any = x.get(key)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def project_of(x: dict[str, Any]) -> str:
    """Project name of ``x`` (``""`` when missing)."""
    p = x.get("project")
    return p if isinstance(p, str) else ""


def insort_list(values: list[float], y: float) -> None:
    """Insert ``y`` into the sorted list ``values``."""
    insort(values, y)


def median_sorted(values: list[float], default: float) -> float:
    """Median of a sorted list (mean of the two middles), ``default`` if empty.

    >>> median_sorted([1.0, 2.0, 3.0, 5.0], 4.0), median_sorted([], 4.0)
    (2.5, 4.0)
    """
    n = len(values)
    if n == 0:
        return default
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def weighted_median(weights: dict[str, float], default: float) -> float:
    """Weighted median of the values named by the keys of ``weights``.

    Keys are ``repr``-style floats (JSON needs str keys).

    >>> weighted_median({"1.0": 1.0, "3.0": 1.0, "8.0": 3.0}, 4.0)
    8.0
    """
    items = sorted((float(k), w) for k, w in weights.items() if w > 0.0)
    total = sum(w for _, w in items)
    if total <= 0.0:
        return default
    acc = 0.0
    for value, w in items:
        acc += w
        if acc >= total / 2.0:
            return value
    return items[-1][0]


def decayed_add(weights: dict[str, float], scale: float, y: float, half_life: float) -> float:
    """Add target ``y`` to a recency-weighted histogram; return the new scale.

    Instead of decaying every old weight, each new weight grows by
    ``2 ** (1 / half_life)``; the histogram is renormalised before overflow.

    >>> w: dict[str, float] = {}
    >>> s = decayed_add(w, 1.0, 3.0, 1.0)
    >>> s, w
    (2.0, {'3.0': 2.0})
    """
    scale *= 2.0 ** (1.0 / half_life)
    if scale > 1e100:
        for key in weights:
            weights[key] /= scale
        scale = 1.0
    key = repr(float(y))
    weights[key] = weights.get(key, 0.0) + scale
    return scale
