"""River estimators written here, for code changes; usable in specs as ``selflearn.<Class>``.

Both pass ``river.checks.check_estimator`` (tested in tests/test_river.py).

* :class:`JitLogScaler` — the just-in-time change metrics on a log scale, with
  ``la``/``ld`` turned back into absolute lines and a ``size`` feature
  (``log1p(lines added + files)``). River has no log transform, and the raw
  metrics span six orders of magnitude (``lt`` up to 10⁵ lines), which no
  online standardisation fixes in time.
* :class:`OffsetLogisticRegression` — River's logistic regression plus a fixed
  ``offset_weight * x[offset]`` in its logit. Outcomes of code changes arrive a
  year late, so a plain model answers a constant for a project's whole first
  year; with the offset it ranks by size until labels arrive, then learns the
  rest (the offset's own weight keeps learning on top of it).

>>> from river import compose
>>> model = JitLogScaler() | OffsetLogisticRegression(offset="size")
>>> small = {"la": 0.01, "lt": 50.0, "nf": 1.0}
>>> big = {"la": 0.5, "lt": 900.0, "nf": 9.0}
>>> model.predict_proba_one(big)[True] > model.predict_proba_one(small)[True]
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from river import base, linear_model

__all__ = ["JitLogScaler", "OffsetLogisticRegression"]

#: metrics that are counts or sizes (log-scaled); the others pass through
_COUNTS = ("ns", "nm", "nf", "ndev", "pd", "exp", "rexp", "sexp")


def _pos(x: dict[Hashable, Any], key: str) -> float:
    value = x.get(key, 0.0)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(float(value), 0.0)


class JitLogScaler(base.Transformer):
    """Log-scaled just-in-time change metrics (stateless).

    Missing or invalid metrics count as 0. ``entropy``, ``fix`` and ``npt``
    (already bounded) pass through; every other feature is dropped.

    >>> f = JitLogScaler().transform_one({"la": 0.5, "lt": 100.0, "nf": 3.0, "x": "?"})
    >>> round(f["size"], 3), round(f["la"], 3), f["fix"], "x" in f
    (3.989, 3.932, 0.0, False)
    """

    def transform_one(self, x: dict[Hashable, Any]) -> dict[Hashable, Any]:
        lt = _pos(x, "lt")
        la, ld = _pos(x, "la") * lt, _pos(x, "ld") * lt
        log1p = math.log1p
        out: dict[Hashable, Any] = {"size": log1p(la + _pos(x, "nf")), "la": log1p(la),
                                    "ld": log1p(ld), "lt": log1p(lt)}
        for key in _COUNTS:
            out[key] = log1p(_pos(x, key))
        out["entropy"] = _pos(x, "entropy")
        out["fix"] = 1.0 if _pos(x, "fix") > 0 else 0.0
        out["npt"] = _pos(x, "npt")
        return out


class OffsetLogisticRegression(linear_model.LogisticRegression):
    """Logistic regression whose logit also has ``offset_weight * x[offset]``.

    Parameters
    ----------
    offset
        Feature whose value is added (times ``offset_weight``) to the logit;
        a missing feature adds 0.
    offset_weight
        Fixed weight of the offset (the prior belief, e.g. "bigger is riskier").
    **kwargs
        Everything :class:`river.linear_model.LogisticRegression` takes.

    >>> m = OffsetLogisticRegression(offset="size", offset_weight=1.0, intercept_init=-3.0)
    >>> round(m.predict_proba_one({"size": 3.0})[True], 3)
    0.5
    """

    def __init__(self, offset: str = "size", offset_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offset = offset
        self.offset_weight = offset_weight

    def _raw_dot_one(self, x: dict[str, Any]) -> float:
        value = x.get(self.offset, 0.0)
        extra = self.offset_weight * value if isinstance(value, int | float) else 0.0
        return super()._raw_dot_one(x) + extra

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"offset": "size", "offset_weight": 1.0}
        yield {"offset": "missing", "offset_weight": 0.5}
