"""Review challenger: log-scale change size, discounted by how mature the project is.

Why this shape (measured on the twelve shipped projects, outcomes one year
late, ranking over each project's whole timeline):

* The defect rate of a project's changes falls steeply as the project ages
  (e.g. Ant 18 % in its first year, under 2 % after ten; the last one or two
  years are also censored, since their fixes had not landed when the data were
  mined). A score that ignores this ranks a big late change above a
  medium early one although the early one is far riskier.
* The learner has no clock: ``x`` carries no date. What it does see is the
  outcome stream, and every change matures exactly once, one year after it
  lands, so the number of outcomes learned for a project is a clock in units
  of "changes that are at least a year old". Risk is discounted by
  ``decay * sqrt(outcomes / scale)``: one global shape, no per-project tuning.
* Within a moment, size ranks best: ``log1p(lines added) + log1p(files)``
  (``la`` is normalised by ``lt``, so lines added are ``la * lt``).
  Online-learned feature weights (logistic, pairwise ranking, per-bucket
  rates, recent-rate intercepts) all ranked worse than this fixed score under
  the late labels, so the only thing learned is the project's maturity.

``predict_one`` returns ``sigmoid(score - 8)``: monotone in the score, inside
``[0, 1]``, comparable across time within a project (the scale never moves
except through the maturity term). It is a ranking score, not a calibrated
probability.

>>> m = ReviewRank()
>>> small = {"project": "p", "la": 0.01, "lt": 50.0, "nf": 1.0}
>>> big = {"project": "p", "la": 0.5, "lt": 900.0, "nf": 9.0}
>>> 0.0 < m.predict_one(small) < m.predict_one(big) < 1.0
True
>>> before = m.predict_one(big)
>>> for _ in range(400):
...     m.learn_one(small, 0.0)
>>> m.predict_one(big) < before, m.matured["p"]
(True, 400)
>>> ReviewRank.restore(m.snapshot()).predict_one(big) == m.predict_one(big)
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from projections.learners.base import StateLearner, num, project_of

#: score offset so that ``sigmoid`` keeps typical scores (0..15) well resolved
OFFSET = 8.0


def size_score(x: dict[str, Any]) -> float:
    """``log1p(lines added) + log1p(files touched)``, lines added being ``la * lt``.

    >>> round(size_score({"la": 0.5, "lt": 100.0, "nf": 3.0}), 4)
    5.3181
    >>> size_score({})
    0.0
    """
    lines = max(num(x, "la"), 0.0) * max(num(x, "lt"), 0.0)
    return math.log1p(lines) + math.log1p(max(num(x, "nf"), 0.0))


class ReviewRank(StateLearner):
    """Risk rank ``size_score(x) - decay * sqrt(matured / scale)`` per project.

    Parameters
    ----------
    decay
        Log-odds lost per unit of ``sqrt(matured / scale)``; ``0`` gives the
        pure log-size ranking.
    scale
        Outcomes per unit of maturity (before the square root).
    """

    name: ClassVar[str] = "review_rank"

    def __init__(self, decay: float = 0.4, scale: float = 100.0) -> None:
        if scale <= 0.0 or decay < 0.0:
            raise ValueError(f"need decay >= 0 and scale > 0, got decay={decay}, scale={scale}")
        self.decay = float(decay)
        self.scale = float(scale)
        #: outcomes learned so far, per project
        self.matured: dict[str, int] = {}

    def maturity(self, project: str) -> float:
        """``sqrt(outcomes learned / scale)`` for ``project`` (0 for an unseen one)."""
        return math.sqrt(self.matured.get(project, 0) / self.scale)

    def score(self, x: dict[str, Any]) -> float:
        """The raw ranking score (log-odds scale, unbounded)."""
        return size_score(x) - self.decay * self.maturity(project_of(x))

    def predict_one(self, x: dict[str, Any]) -> float:
        """Risk of ``x`` in ``[0, 1]``, monotone in :meth:`score`.

        Parameters
        ----------
        x
            Change metrics (``la``, ``lt``, ``nf`` are used) and ``project``.

        Returns
        -------
        float
            ``sigmoid(score - OFFSET)``.
        """
        z = self.score(x) - OFFSET
        return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        """Count one matured outcome of ``x``'s project (the label itself is not needed).

        Parameters
        ----------
        x
            The change whose outcome arrived.
        y
            Its outcome (1 = needed a fix); only its arrival matters.
        """
        project = project_of(x)
        self.matured[project] = self.matured.get(project, 0) + 1

    def __repr__(self) -> str:
        return f"ReviewRank(decay={self.decay}, scale={self.scale})"
