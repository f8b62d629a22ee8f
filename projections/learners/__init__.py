"""Online learners: task estimators (story points) and review risk scorers.

``TASK_LEARNERS`` and ``REVIEW_LEARNERS`` map a learner's name to a factory
that builds it with the one global default configuration.
:func:`learner_factory` also accepts a River spec in place of a name
(``river.feature_extraction.BagOfWords(on='title')|linear_model.LinearRegression``):
any River estimator or pipeline, wrapped by
:mod:`projections.learners.river_adapter`.
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
from projections.learners.river_adapter import RiverLearner, check_river_learner, river_learner
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
#: River challengers by registry name (specs: projections/learners/river_spec.py). Chosen
#: by prequential results on two thirds of the shipped projects; docs/river.md has the
#: numbers, the held-out ones and the candidates that lost. The ``*_pa`` / ``*_logistic``
#: entries are plain River pipelines, kept as a reference.
RIVER_TASK_SPECS: dict[str, str] = {
    # story points on a log scale, linear in the title's words and word pairs
    "river_title_linear": (
        "river.compose.TargetTransformRegressor("
        "regressor=feature_extraction.BagOfWords(on='title', ngram_range=(1, 2))"
        "|preprocessing.TargetStandardScaler(linear_model.LinearRegression("
        "optimizer=optim.SGD(0.01), intercept_lr=0.05)),"
        " func=math.log1p, inverse_func=math.expm1)"),
    "river_tfidf_pa": "river.feature_extraction.TFIDF(on='title')|linear_model.PARegressor",
}
RIVER_REVIEW_SPECS: dict[str, str] = {
    # size ranks, the learned intercept discounts a maturing project (weights frozen)
    "river_jit_offset": (
        "river.selflearn.JitLogScaler|selflearn.OffsetLogisticRegression("
        "intercept_init=-2.0, optimizer=optim.SGD(0.0), intercept_lr=0.003)"),
    "river_scaled_logistic": "river.preprocessing.StandardScaler|linear_model.LogisticRegression",
}
for _name, _spec in RIVER_TASK_SPECS.items():
    TASK_LEARNERS[_name] = river_learner(_name, _spec, "task_estimate")
REVIEW_LEARNERS: dict[str, Callable[[], Learner]] = {
    SizeHeuristic.name: SizeHeuristic,
    OnlineLogistic.name: OnlineLogistic,
    SizeBucket.name: SizeBucket,
    ReviewBlend.name: ReviewBlend,
    ReviewRank.name: ReviewRank,
}
for _name, _spec in RIVER_REVIEW_SPECS.items():
    REVIEW_LEARNERS[_name] = river_learner(_name, _spec, "review_risk")
#: the three task challengers that run by default (benchmarked for speed: ops/benches/learn.py)
DEFAULT_TASK_CHALLENGERS: tuple[str, ...] = ("recency_median", "knn_median", "river_title_linear")
#: the three review challengers that run by default
DEFAULT_REVIEW_CHALLENGERS: tuple[str, ...] = ("review_rank", "river_jit_offset", "logistic")



def learner_factory(kind: str, name: str) -> Callable[[], Learner]:
    """The factory of learner ``name`` for agents of ``kind``: registered, or a River spec.

    >>> learner_factory("task_estimate", "knn_median").__name__
    'KnnMedian'
    >>> learner_factory("review_risk", "river.linear_model.LogisticRegression")().name
    'river.linear_model.LogisticRegression'
    """
    registry = TASK_LEARNERS if kind == "task_estimate" else REVIEW_LEARNERS
    factory = registry.get(name)
    if factory is not None:
        return factory
    if name.startswith("river."):
        return check_river_learner(river_learner(name, name, kind))
    raise KeyError(f"unknown {kind} learner {name!r}; known: {', '.join(registry)}, "
                   f"or a River spec such as 'river.preprocessing.StandardScaler"
                   f"|linear_model.LinearRegression'")


__all__ = [
    "DEFAULT_REVIEW_CHALLENGERS",
    "DEFAULT_TASK_CHALLENGERS",
    "RIVER_REVIEW_SPECS",
    "RIVER_TASK_SPECS",
    "REVIEW_LEARNERS",
    "TASK_LEARNERS",
    "Learner",
    "RiverLearner",
    "StateLearner",
    "learner_factory",
]
