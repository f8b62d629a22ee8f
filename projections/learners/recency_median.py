"""Task challenger: recency-weighted median of the project's story points."""

from __future__ import annotations

from typing import Any, ClassVar

from projections.learners.base import StateLearner, decayed_add, project_of, weighted_median


class RecencyMedian(StateLearner):
    """Weighted median where an issue's weight halves every ``half_life`` issues.

    Teams re-calibrate their scale over time; a recency-weighted median follows
    that drift while staying robust (it is still a median, the MAE optimum).

    >>> m = RecencyMedian(half_life=2.0)
    >>> for y in (1.0, 1.0, 1.0, 8.0, 8.0):
    ...     m.learn_one({"project": "a"}, y)
    >>> m.predict_one({"project": "a"}), m.predict_one({"project": "new"})
    (8.0, 4.0)
    """

    name: ClassVar[str] = "recency_median"

    def __init__(self, half_life: float = 40.0, default: float = 4.0) -> None:
        self.half_life = float(half_life)
        self.default = float(default)
        self.weights: dict[str, dict[str, float]] = {}
        self.scale: dict[str, float] = {}

    def predict_one(self, x: dict[str, Any]) -> float:
        return weighted_median(self.weights.get(project_of(x), {}), self.default)

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        project = project_of(x)
        weights = self.weights.setdefault(project, {})
        self.scale[project] = decayed_add(
            weights, self.scale.get(project, 1.0), float(y), self.half_life
        )
