"""Review challenger: average log-odds of the logistic model and the size buckets."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import orjson

from projections.learners.base import StateLearner, restore_members
from projections.learners.logistic import OnlineLogistic
from projections.learners.size_bucket import SizeBucket


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


class ReviewBlend(StateLearner):
    """Risk = sigmoid of the mean log-odds of :class:`OnlineLogistic` and :class:`SizeBucket`.

    >>> m = ReviewBlend()
    >>> small, big = {"project": "p", "la": 0.01, "lt": 50.0, "nf": 1.0}, {
    ...     "project": "p", "la": 0.5, "lt": 900.0, "nf": 9.0}
    >>> m.learn_one(small, 0.0)
    >>> 0.0 < m.predict_one(small) < m.predict_one(big) < 1.0
    True
    """

    name: ClassVar[str] = "review_blend"

    def __init__(self) -> None:
        self.parts: dict[str, StateLearner] = {
            OnlineLogistic.name: OnlineLogistic(),
            SizeBucket.name: SizeBucket(),
        }

    def predict_one(self, x: dict[str, Any]) -> float:
        z = sum(_logit(p.predict_one(x)) for p in self.parts.values()) / len(self.parts)
        return 1.0 / (1.0 + math.exp(-z))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        for part in self.parts.values():
            part.learn_one(x, y)

    def snapshot(self) -> bytes:
        parts = {n: p.__dict__ for n, p in self.parts.items()}
        return orjson.dumps({"learner": self.name, "state": {}, "parts": parts})

    @classmethod
    def restore(cls, data: bytes) -> Self:
        payload = orjson.loads(data)
        obj = super().restore(data)
        kinds: dict[str, type[StateLearner]] = {
            OnlineLogistic.name: OnlineLogistic,
            SizeBucket.name: SizeBucket,
        }
        obj.parts = restore_members(payload["parts"], kinds)
        return obj
