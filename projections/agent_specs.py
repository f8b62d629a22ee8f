"""Who the agents are: kind, rollout mode, champion and challengers.

A champion or challenger is a registered learner name or, in one line, any
River estimator or pipeline as a spec string (``river.<module>.<Class>|…``,
see :mod:`projections.learners.river_spec`)::

    AgentSpec("task-estimator", "task_estimate", "live", "running_median",
              ("knn_median", "river.feature_extraction.TFIDF(on='title')|linear_model.PARegressor"))

An agent the projections have not been told about gets :func:`default_spec`
for its kind and starts log-only; evaluation agents (``eval-…``) get every
registered learner and are never reset on drift, so a replay through the
pipeline equals the offline evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from projections.learners import (
    DEFAULT_REVIEW_CHALLENGERS,
    DEFAULT_TASK_CHALLENGERS,
    REVIEW_LEARNERS,
    TASK_LEARNERS,
    Learner,
    learner_factory,
)
from schemas.policy import KINDS

Factories = Mapping[str, Callable[[], Learner]]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent: its kind, rollout mode, champion and challengers (learner names)."""

    agent_id: str
    kind: str
    mode: str = "live"  # "live" or "log_only"
    champion: str = ""
    challengers: tuple[str, ...] = ()
    factories: Factories | None = None  # None: the registry of the kind
    drift_resets: bool = True  # False: challengers are never reset on drift (evaluation)

    def learners(self) -> Factories:
        """Factories of every model of this agent (champion first).

        >>> spec = AgentSpec("a", "review_risk", champion="size_heuristic",
        ...                  challengers=("river.preprocessing.StandardScaler"
        ...                               "|linear_model.LogisticRegression",))
        >>> [f().name for f in spec.learners().values()]
        ['size_heuristic', 'river.preprocessing.StandardScaler|linear_model.LogisticRegression']
        """
        names = (self.champion, *self.challengers)
        if self.factories is not None:
            return {name: self.factories[name] for name in names}
        return {name: learner_factory(self.kind, name) for name in names}


EVAL_PREFIX = "eval-"


def eval_agent_id(kind: str, name: str) -> str:
    """Id of the agent that replays data set ``name`` of ``kind`` for an evaluation.

    >>> eval_agent_id("task_estimate", "mule")
    'eval-task_estimate-mule'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown agent kind {kind!r}; known: {', '.join(KINDS)}")
    return f"{EVAL_PREFIX}{kind}-{name}"


def eval_spec(agent_id: str) -> AgentSpec | None:
    """Spec of an evaluation agent (``None`` for any other id).

    Every registered learner of the kind named in the id, in registry order
    (the first is the champion), log-only, without drift resets: the same
    models, fresh per agent, that the offline evaluation replays.

    >>> s = eval_spec("eval-task_estimate-mule")
    >>> s.kind, s.champion, s.drift_resets, eval_spec("task-estimator")
    ('task_estimate', 'constant', False, None)
    """
    for kind in KINDS:
        if agent_id.startswith(f"{EVAL_PREFIX}{kind}-"):
            names = tuple(TASK_LEARNERS if kind == "task_estimate" else REVIEW_LEARNERS)
            return AgentSpec(agent_id, kind, "log_only", names[0], names[1:],
                             drift_resets=False)
    return None


def default_spec(agent_id: str, kind: str, mode: str = "log_only") -> AgentSpec:
    """The default models of a kind; unknown agents start log-only (never promoted).

    Evaluation agents (:func:`eval_agent_id`) get :func:`eval_spec` instead.

    >>> default_spec("x", "review_risk").challengers
    ('review_rank', 'river_jit_offset', 'logistic')
    """
    evaluation = eval_spec(agent_id)
    if evaluation is not None:
        return evaluation
    if kind == "task_estimate":
        return AgentSpec(agent_id, kind, mode, "running_median", DEFAULT_TASK_CHALLENGERS)
    if kind == "review_risk":
        # The rule a team starts with: review the biggest changes first. Its score
        # ranks but is no probability, so a calibrated challenger replaces it
        # through the canary ramp once it is better with confidence.
        return AgentSpec(agent_id, kind, mode, "size_heuristic", DEFAULT_REVIEW_CHALLENGERS)
    raise ValueError(f"unknown agent kind {kind!r}; known: task_estimate, review_risk")


DEFAULT_AGENTS: dict[str, AgentSpec] = {
    "task-estimator": default_spec("task-estimator", "task_estimate", "live"),
    "doc-keeper": default_spec("doc-keeper", "task_estimate", "log_only"),
    "code-reviewer": default_spec("code-reviewer", "review_risk", "live"),
}


def configured_agents(challengers: Mapping[str, Sequence[str]]) -> dict[str, AgentSpec]:
    """:data:`DEFAULT_AGENTS` with the challengers of some agents replaced (configuration).

    ``challengers`` maps an agent id to its challengers: registered names or
    River specs. ``SELFLEARN_CHALLENGERS='{"task-estimator": ["knn_median",
    "river.feature_extraction.TFIDF(on=\\"title\\")|linear_model.PARegressor"]}'`` is the
    one line that puts a River pipeline into the task estimator's shadow. Every
    name is resolved here, so a spec that cannot work fails at start-up.

    >>> a = configured_agents({"code-reviewer": ["river.linear_model.LogisticRegression"]})
    >>> a["code-reviewer"].challengers, a["task-estimator"] == DEFAULT_AGENTS["task-estimator"]
    (('river.linear_model.LogisticRegression',), True)
    """
    agents = dict(DEFAULT_AGENTS)
    for agent_id, names in challengers.items():
        base = agents.get(agent_id)
        if base is None:
            raise ValueError(f"challengers configured for unknown agent {agent_id!r}; "
                             f"known: {', '.join(agents)}")
        for name in names:
            learner_factory(base.kind, name)  # a bad name or spec fails now, not in the worker
        agents[agent_id] = replace(base, challengers=tuple(dict.fromkeys(
            n for n in names if n != base.champion)))
    return agents
