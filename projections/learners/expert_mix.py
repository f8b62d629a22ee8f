"""Task challenger: choose among experts online by their recent prequential error."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import orjson

from projections.learners.base import StateLearner, project_of, restore_members, weighted_median
from projections.learners.knn_median import KnnMedian
from projections.learners.recency_median import RecencyMedian
from projections.learners.token_quantile import TokenQuantile

_EXPERTS: dict[str, type[StateLearner]] = {
    KnnMedian.name: KnnMedian,
    TokenQuantile.name: TokenQuantile,
    RecencyMedian.name: RecencyMedian,
}


class ExpertMix(StateLearner):
    """Weighted median of expert predictions, weighted by recent accuracy per project.

    Every expert is scored prequentially (before it learns the target), with an
    exponentially discounted absolute error (half-life ``half_life`` issues).
    Weights are ``exp(-eta * error / mean error)``: past data only, no tuning
    per project.

    >>> m = ExpertMix()
    >>> for t, y in [("login crash", 8.0), ("docs typo", 1.0)] * 20:
    ...     m.learn_one({"project": "a", "title": t, "description": ""}, y)
    >>> typo = m.predict_one({"project": "a", "title": "docs typo", "description": ""})
    >>> crash = m.predict_one({"project": "a", "title": "login crash", "description": ""})
    >>> typo < crash
    True
    """

    name: ClassVar[str] = "expert_mix"

    def __init__(self, half_life: float = 50.0, eta: float = 20.0, default: float = 4.0) -> None:
        self.half_life = float(half_life)
        self.eta = float(eta)
        self.default = float(default)
        self.errors: dict[str, dict[str, float]] = {}
        self.experts: dict[str, StateLearner] = {n: cls() for n, cls in _EXPERTS.items()}

    def _predictions(self, x: dict[str, Any]) -> dict[str, float]:
        return {n: e.predict_one(x) for n, e in self.experts.items()}

    def _combine(self, project: str, preds: dict[str, float]) -> float:
        errors = self.errors.get(project)
        if not errors:
            return weighted_median({repr(p): 1.0 for p in preds.values()}, self.default)
        mean = sum(errors.values()) / len(errors) or 1.0
        weights: dict[str, float] = {}
        for n, p in preds.items():
            w = 2.718281828459045 ** (-self.eta * errors[n] / mean)
            weights[repr(p)] = weights.get(repr(p), 0.0) + w
        return weighted_median(weights, self.default)

    def predict_one(self, x: dict[str, Any]) -> float:
        return self._combine(project_of(x), self._predictions(x))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        project = project_of(x)
        preds = self._predictions(x)
        decay = 2.0 ** (-1.0 / self.half_life)
        errors = self.errors.setdefault(project, {n: 0.0 for n in preds})
        for n, p in preds.items():
            errors[n] = decay * errors[n] + (1.0 - decay) * abs(p - float(y))
        for e in self.experts.values():
            e.learn_one(x, y)

    def snapshot(self) -> bytes:
        state = {k: v for k, v in self.__dict__.items() if k != "experts"}
        experts = {n: e.__dict__ for n, e in self.experts.items()}
        return orjson.dumps({"learner": self.name, "state": state, "experts": experts})

    @classmethod
    def restore(cls, data: bytes) -> Self:
        payload = orjson.loads(data)
        obj = super().restore(data)
        obj.experts = restore_members(payload["experts"], _EXPERTS)
        return obj
