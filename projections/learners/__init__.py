"""Online learners: task estimators (story points) and review risk scorers.

``TASK_LEARNERS`` and ``REVIEW_LEARNERS`` map a learner's name to a factory
that builds it with the one global default configuration.
"""

from __future__ import annotations

from collections.abc import Callable

from projections.learners.base import Learner, StateLearner
from projections.learners.constant import Constant
from projections.learners.knn_median import KnnMedian
from projections.learners.recency_median import RecencyMedian
from projections.learners.running_median import RunningMedian
from projections.learners.token_quantile import TokenQuantile

TASK_LEARNERS: dict[str, Callable[[], Learner]] = {
    Constant.name: Constant,
    RunningMedian.name: RunningMedian,
    RecencyMedian.name: RecencyMedian,
    KnnMedian.name: KnnMedian,
    TokenQuantile.name: TokenQuantile,
}
REVIEW_LEARNERS: dict[str, Callable[[], Learner]] = {}

__all__ = ["REVIEW_LEARNERS", "TASK_LEARNERS", "Learner", "StateLearner"]
