"""Any River estimator or pipeline as a :class:`~projections.learners.base.Learner`.

:func:`river_learner` turns a River spec (:mod:`projections.learners.river_spec`)
into a learner class with a fixed ``name``: calling the class builds a fresh
model, so the class is the factory the registries and agent specs hold.

What the model sees
-------------------
An agent's context holds whatever its caller sent. The adapter hands River a
clean, canonical view of it, per kind:

* ``task_estimate``: the text fields ``project``, ``title`` and
  ``description`` as strings (``""`` when missing or not text) — River's own
  feature extraction (``feature_extraction.BagOfWords(on="title")``, ``TFIDF``)
  turns them into features. A spec that names some of them in quotes
  (``on='title'``) gets only those: hashing a 600-character description that
  the model never reads cost a fifth of the default River challenger's time.
  Title and description words reach River as digests
  (:func:`~projections.learners.base.hashed_text`): the pickled model state
  (vocabulary, weights) must hold no word of a reporter's text
  (docs/privacy.md);
* ``review_risk``: the just-in-time change metrics (``la``, ``nf``, …) that
  are finite numbers, as floats; anything else is left out.

Keys are passed in sorted order, so the caller's key order cannot change a
float sum inside the model: the same events give the same model, bit for bit.
Classifiers answer the probability of ``True`` (the change needs another
round) and learn ``y >= 0.5``; regressors answer their prediction. A model
that overflows answers NaN (the shadow scores that as the kind's neutral
answer) and skips that update: a diverging challenger loses, it does not stop
the worker.

Snapshots
---------
A River model is an object graph, so its snapshot is a pickle, sealed with
:mod:`projections.sealing` (HMAC-SHA256 bound to the learner's name, checked
before unpickling). The bytes are JSON ``{"learner", "mac", "pickle"}``.

>>> Bow = river_learner("bow", "river.feature_extraction.BagOfWords(on='title')"
...                     "|linear_model.LinearRegression", "task_estimate")
>>> m = Bow()
>>> for _ in range(20):
...     m.learn_one({"title": "Add login page"}, 5.0)
>>> round(m.predict_one({"title": "Add login page", "extra": [1]}), 2)
4.06
>>> clone = Bow.restore(m.snapshot())
>>> clone.predict_one({"title": "login"}) == m.predict_one({"title": "login"})
True
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, ClassVar, Self

import orjson

from projections.learners.base import hashed_text
from projections.sealing import SnapshotTampered, dumps_sealed, loads_sealed

__all__ = ["RiverLearner", "check_river_learner", "river_learner"]

HASHED = frozenset({"title", "description"})  # personal text: words as digests
TEXT = {"task_estimate": ("description", "project", "title"), "review_risk": ()}
NUMERIC: dict[str, tuple[str, ...]] = {
    "task_estimate": (),
    "review_risk": tuple(sorted((
        "ns", "nm", "nf", "entropy", "la", "ld", "lt", "fix",
        "ndev", "pd", "npt", "exp", "rexp", "sexp"))),
}  # fmt: skip
_PROBE: dict[str, list[tuple[dict[str, Any], float]]] = {
    "task_estimate": [({"project": "p", "title": "Fix the login page",
                        "description": "It fails"}, 3.0),
                      ({"project": "p", "title": "Add export", "description": ""}, 8.0)],
    "review_risk": [({k: float(i + 1) for i, k in enumerate(NUMERIC["review_risk"])}, 1.0),
                    ({k: 0.5 for k in NUMERIC["review_risk"]}, 0.0)],
}


def _named_text(spec: str, kind: str) -> tuple[str, ...]:
    """The kind's text fields that ``spec`` names in quotes; all of them if it names none.

    >>> _named_text("river.feature_extraction.BagOfWords(on='title')|x", "task_estimate")
    ('title',)
    >>> _named_text("river.linear_model.LinearRegression", "task_estimate")
    ('description', 'project', 'title')
    """
    named = tuple(k for k in TEXT[kind] if f"'{k}'" in spec or f'"{k}"' in spec)
    return named or TEXT[kind]


def _is_classifier(model: Any) -> bool:
    """Whether the model (a pipeline's last step) classifies."""
    from river import base, compose

    while isinstance(model, compose.Pipeline):
        model = model._last_step
    return isinstance(model, base.Classifier)


class RiverLearner:
    """A River model learning one event at a time; see the module docstring.

    Subclasses made by :func:`river_learner` fix ``name``, ``spec`` and ``kind``.
    """

    name: ClassVar[str] = "river"
    spec: ClassVar[str] = ""
    kind: ClassVar[str] = "task_estimate"

    def __init__(self, model: Any = None) -> None:
        if model is None:
            # River is imported on first use: agents that never run a River model
            # do not pay its import time (seconds for some modules).
            from projections.learners.river_spec import build

            model = build(self.spec)
        self.model = model
        self._proba = _is_classifier(self.model)
        self._text = _named_text(self.spec, self.kind)
        self._numeric = NUMERIC[self.kind]

    def features(self, x: dict[str, Any]) -> dict[str, Any]:
        """The canonical view of ``x`` the model sees (sorted keys; see the module doc).

        >>> R = river_learner("r", "river.linear_model.LinearRegression", "review_risk")
        >>> R().features({"nf": 2, "la": "x", "project": "p", "lt": float("nan"), "fix": True})
        {'fix': 1.0, 'nf': 2.0}
        """
        out: dict[str, Any] = {}
        for key in self._text:
            value = x.get(key)
            text = value if isinstance(value, str) else ""
            out[key] = hashed_text(text) if key in HASHED else text
        for key in self._numeric:
            value = x.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                out[key] = float(value)
        if self._text and self._numeric:
            out = dict(sorted(out.items()))
        return out

    def predict_one(self, x: dict[str, Any]) -> float:
        xs = self.features(x)
        try:
            if self._proba:
                return float(self.model.predict_proba_one(xs).get(True, 0.0))
            y = self.model.predict_one(xs)
        except ArithmeticError:  # a diverged model (overflow): no answer, not a dead worker
            return math.nan
        return float(y) if y is not None else 0.0

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        try:
            self.model.learn_one(self.features(x), bool(y >= 0.5) if self._proba else float(y))
        except ArithmeticError:  # overflow inside the model: this update is skipped
            pass

    def snapshot(self) -> bytes:
        return orjson.dumps({"learner": self.name,
                             **dumps_sealed(self.model, f"learner {self.name!r}")})

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild from :meth:`snapshot` bytes; the MAC is checked before unpickling.

        Raises
        ------
        SnapshotTampered
            The bytes were changed, or sealed with another key.
        ValueError
            The snapshot is another learner's.
        """
        what = f"snapshot of learner {cls.name!r}"
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SnapshotTampered(what, f"not a sealed snapshot ({exc}); refused") from exc
        if not isinstance(payload, dict):
            raise SnapshotTampered(what, "not a sealed snapshot (not a JSON object); refused")
        claimed = payload.get("learner")
        if "mac" in payload:
            # The MAC binds the name it was sealed under: a renamed snapshot fails here.
            model = loads_sealed(payload, f"learner {claimed!r}")
        if claimed != cls.name:
            raise ValueError(f"snapshot is of learner {claimed!r}, not {cls.name!r}: "
                             f"restore it with that learner's class")
        if "mac" not in payload:
            raise SnapshotTampered(what, "the snapshot carries no MAC; refusing to unpickle it")
        return cls(model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


@cache
def river_learner(name: str, spec: str, kind: str) -> type[RiverLearner]:
    """The learner class named ``name`` that runs River ``spec`` on ``kind`` events.

    The same arguments give the same class. Nothing is built yet (River is
    imported on first use); :func:`check_river_learner` tries the spec.

    Raises
    ------
    ValueError
        Unknown kind, or a name containing ``:`` (it separates name and version
        in model references).
    """
    if kind not in TEXT:
        raise ValueError(f"unknown agent kind {kind!r}; known: {', '.join(TEXT)}")
    if ":" in name:
        raise ValueError(f"learner name {name!r} contains ':'; model references use "
                         f"'name:version', so register the spec under a plain name")
    return type(f"River[{name}]", (RiverLearner,), {"name": name, "spec": spec, "kind": kind,
                                                    "__module__": __name__})


def check_river_learner(cls: type[RiverLearner]) -> type[RiverLearner]:
    """``cls`` after building its model and running it on two made-up events of its kind.

    A spec that does not build, or a model that cannot take the kind's
    features, fails here with its spec in the message, not inside a worker.

    >>> try:
    ...     check_river_learner(river_learner("r", "river.linear_model.Perceptron",
    ...                                       "task_estimate"))
    ... except ValueError as exc:
    ...     print(exc)
    River spec 'river.linear_model.Perceptron' is a classifier; task estimates need a regressor
    """
    if cls in _CHECKED:
        return cls
    probe = cls()
    if cls.kind == "task_estimate" and probe._proba:
        raise ValueError(f"River spec {cls.spec!r} is a classifier; "
                         f"task estimates need a regressor")
    try:
        for x, y in _PROBE[cls.kind]:
            probe.predict_one(x)
            probe.learn_one(x, y)
        probe.predict_one(_PROBE[cls.kind][0][0])
    except Exception as exc:  # any failure means: not usable for this kind
        raise ValueError(f"River spec {cls.spec!r} cannot learn {cls.kind} features "
                         f"({type(exc).__name__}: {exc})") from exc
    _CHECKED.add(cls)
    return cls


_CHECKED: set[type[RiverLearner]] = set()
