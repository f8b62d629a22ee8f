"""Task challenger: online median (pinball-loss) regression on title/description tokens."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from projections.learners.base import (
    StateLearner,
    decayed_add,
    project_of,
    tokens,
    weighted_median,
)


class TokenQuantile(StateLearner):
    """Median regression in log space on tokens, on top of the recent project median.

    ``log(pred) = log(recent median) + bias[project] + sum_t w[project, t] / sqrt(n)``.
    The median commutes with ``log``, so minimising the pinball loss at
    ``tau = 0.5`` in log space still targets the MAE-optimal median. Each
    weight steps by ``lr / sqrt(updates of that weight)`` (AdaGrad-like for
    sign gradients), so rare words move fast and common ones settle.

    >>> m = TokenQuantile()
    >>> for t, y in [("big refactor", 13.0), ("small typo", 1.0)] * 30:
    ...     m.learn_one({"project": "a", "title": t, "description": ""}, y)
    >>> big = m.predict_one({"project": "a", "title": "refactor", "description": ""})
    >>> small = m.predict_one({"project": "a", "title": "typo", "description": ""})
    >>> big > small
    True
    """

    name: ClassVar[str] = "token_quantile"

    def __init__(self, lr: float = 0.3, half_life: float = 40.0, default: float = 4.0) -> None:
        self.lr = float(lr)
        self.half_life = float(half_life)
        self.default = float(default)
        self.w: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.recent: dict[str, dict[str, float]] = {}
        self.scale: dict[str, float] = {}

    def _log_pred(self, project: str, toks: tuple[str, ...]) -> float:
        base = math.log(max(weighted_median(self.recent.get(project, {}), self.default), 0.5))
        w = self.w
        v = 1.0 / math.sqrt(max(len(toks), 1))
        z = base + w.get(project + "|", 0.0)
        for tok in toks:
            z += w.get(project + "|" + tok, 0.0) * v
        return z

    def predict_one(self, x: dict[str, Any]) -> float:
        z = self._log_pred(project_of(x), tokens(x))
        return math.exp(max(min(z, 6.0), -3.0))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        project = project_of(x)
        toks = tokens(x)
        z = self._log_pred(project, toks)
        target = math.log(max(float(y), 0.5))
        if target != z:
            g = 0.5 if target > z else -0.5
            v = 1.0 / math.sqrt(max(len(toks), 1))
            keys = [project + "|"] + [project + "|" + t for t in toks]
            for key, scale in zip(keys, [1.0] + [v] * len(toks), strict=True):
                count = self.n.get(key, 0) + 1
                self.n[key] = count
                self.w[key] = self.w.get(key, 0.0) + self.lr * g * scale / math.sqrt(count)
        self.scale[project] = decayed_add(
            self.recent.setdefault(project, {}), self.scale.get(project, 1.0), y, self.half_life
        )
