"""Review baseline: bigger changes are riskier (score = lines added + files touched)."""

from __future__ import annotations

from typing import Any, ClassVar

from projections.learners.base import StateLearner, num


class SizeHeuristic(StateLearner):
    """Risk score ``la * lt + nf`` (``la`` is normalised by ``lt``); never learns.

    The score is a ranking, not a probability.

    >>> m = SizeHeuristic()
    >>> m.predict_one({"la": 0.5, "lt": 100.0, "nf": 3.0})
    53.0
    >>> m.learn_one({"la": 0.5}, 1.0)
    >>> m.predict_one({})
    0.0
    """

    name: ClassVar[str] = "size_heuristic"

    def predict_one(self, x: dict[str, Any]) -> float:
        return num(x, "la") * num(x, "lt") + num(x, "nf")

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        return None
