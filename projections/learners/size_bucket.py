"""Review challenger: smoothed defect rate of changes of similar size and kind."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from projections.learners.base import StateLearner, num, project_of


class SizeBucket(StateLearner):
    """Beta-smoothed defect rate per (log2 size bucket, is-fix) of the project.

    The prior of each bucket rises with size (``prior_rate * (1 + bucket) / 8``
    with strength ``prior_n``), so before any outcome arrives the ranking is
    the size heuristic's; learned rates take over as outcomes accumulate.
    Ties inside a bucket are broken by the exact size, scaled to stay below
    the gap between buckets.

    >>> m = SizeBucket()
    >>> small, big = {"project": "p", "la": 0.01, "lt": 50.0, "nf": 1.0}, {
    ...     "project": "p", "la": 0.5, "lt": 900.0, "nf": 9.0}
    >>> m.predict_one(big) > m.predict_one(small)
    True
    >>> for _ in range(100):
    ...     m.learn_one(small, 1.0)
    >>> m.predict_one(small) > m.predict_one(big)
    True
    """

    name: ClassVar[str] = "size_bucket"

    def __init__(self, prior_rate: float = 0.15, prior_n: float = 20.0) -> None:
        self.prior_rate = float(prior_rate)
        self.prior_n = float(prior_n)
        self.counts: dict[str, dict[str, list[float]]] = {}

    @staticmethod
    def _bucket(x: dict[str, Any]) -> tuple[str, float]:
        size = max(num(x, "la"), 0.0) * max(num(x, "lt"), 0.0) + max(num(x, "nf"), 0.0)
        level = math.log2(1.0 + size)
        fix = "f" if num(x, "fix") > 0 else "n"
        return f"{fix}{int(level)}", level

    def predict_one(self, x: dict[str, Any]) -> float:
        key, level = self._bucket(x)
        prior = min(self.prior_rate * (1.0 + int(level)) / 8.0, 0.95)
        pos, n = self.counts.get(project_of(x), {}).get(key, [0.0, 0.0])
        rate = (pos + self.prior_n * prior) / (n + self.prior_n)
        return rate * (1.0 + 1e-3 * (level - int(level)))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        key, _ = self._bucket(x)
        cell = self.counts.setdefault(project_of(x), {}).setdefault(key, [0.0, 0.0])
        cell[0] += float(y)
        cell[1] += 1.0
