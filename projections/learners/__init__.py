"""Online learners: task estimators (story points) and review risk scorers.

``TASK_LEARNERS`` and ``REVIEW_LEARNERS`` map a learner's name to a factory
that builds it with the one global default configuration.
"""

from __future__ import annotations

from collections.abc import Callable

from projections.learners.base import Learner, StateLearner
from projections.learners.constant import Constant
from projections.learners.expert_mix import ExpertMix
from projections.learners.knn_median import KnnMedian
from projections.learners.logistic import OnlineLogistic
from projections.learners.recency_median import RecencyMedian
from projections.learners.review_blend import ReviewBlend
from projections.learners.review_rank import ReviewRank
from projections.learners.running_median import RunningMedian
from projections.learners.size_bucket import SizeBucket
from projections.learners.size_heuristic import SizeHeuristic
from projections.learners.token_quantile import TokenQuantile

TASK_LEARNERS: dict[str, Callable[[], Learner]] = {
    Constant.name: Constant,
    RunningMedian.name: RunningMedian,
    RecencyMedian.name: RecencyMedian,
    KnnMedian.name: KnnMedian,
    TokenQuantile.name: TokenQuantile,
    ExpertMix.name: ExpertMix,
}
REVIEW_LEARNERS: dict[str, Callable[[], Learner]] = {
    SizeHeuristic.name: SizeHeuristic,
    OnlineLogistic.name: OnlineLogistic,
    SizeBucket.name: SizeBucket,
    ReviewBlend.name: ReviewBlend,
    ReviewRank.name: ReviewRank,
}
#: the three task challengers that run by default (benchmarked for speed)
DEFAULT_TASK_CHALLENGERS: tuple[str, ...] = ("recency_median", "knn_median", "token_quantile")

__all__ = [
    "DEFAULT_TASK_CHALLENGERS",
    "REVIEW_LEARNERS",
    "TASK_LEARNERS",
    "Learner",
    "StateLearner",
]
