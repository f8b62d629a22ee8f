"""Task baseline: always predict the pooled median, 4 story points."""

from __future__ import annotations

from typing import Any, ClassVar

from projections.learners.base import StateLearner


class Constant(StateLearner):
    """An agent that never learns: predicts ``value`` (default 4) for every task.

    >>> m = Constant()
    >>> m.learn_one({"project": "p", "title": "x"}, 13.0)
    >>> m.predict_one({"project": "p"})
    4.0
    >>> Constant.restore(m.snapshot()).predict_one({})
    4.0
    """

    name: ClassVar[str] = "constant"

    def __init__(self, value: float = 4.0) -> None:
        self.value = float(value)

    def predict_one(self, x: dict[str, Any]) -> float:
        return self.value

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        return None
