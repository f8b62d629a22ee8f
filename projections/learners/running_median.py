"""Task baseline: the median of the project's earlier story points."""

from __future__ import annotations

from typing import Any, ClassVar

from projections.learners.base import StateLearner, insort_list, median_sorted, project_of


class RunningMedian(StateLearner):
    """Median of all earlier targets of the same project; ``default`` before the first.

    >>> m = RunningMedian()
    >>> m.predict_one({"project": "a"})
    4.0
    >>> for y in (1.0, 2.0, 8.0):
    ...     m.learn_one({"project": "a"}, y)
    >>> m.predict_one({"project": "a"}), m.predict_one({"project": "b"})
    (2.0, 4.0)
    """

    name: ClassVar[str] = "running_median"

    def __init__(self, default: float = 4.0) -> None:
        self.default = float(default)
        self.values: dict[str, list[float]] = {}

    def predict_one(self, x: dict[str, Any]) -> float:
        return median_sorted(self.values.get(project_of(x), []), self.default)

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        insort_list(self.values.setdefault(project_of(x), []), float(y))
