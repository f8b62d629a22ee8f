"""Shadow learning: every model of an agent predicts every request, learns every outcome.

For each ``decision.requested`` every model of the agent (champion and
challengers) predicts what it *would* have decided; the predictions are kept
per outcome key (``task_id`` / ``change_id``) and returned as
``shadow.predicted`` events — live decisions are untouched. When the outcome
arrives (``task.completed`` / ``review.completed``, possibly months later) each
stored prediction is scored first, then every model learns (test-then-train).

Errors: ``task_estimate`` absolute error in story points; ``review_risk`` log
loss of the risk of needing another round (predictions clipped to
``[1e-6, 1 - 1e-6]``; scores outside ``[0, 1]``, like ``size_heuristic``'s,
are treated as certain), Brier score as a second metric.

Drift: an ADWIN detector (``river.drift.ADWIN``) watches each model's error.
A drifting *challenger* is **reset** to a fresh learner (its generation
increases, its metrics restart; the model set and names stay fixed, so the
promotion projection and the registry keep stable names). The champion and
the model in canary are never reset here — a drifting champion is the
promotion projection's business (its challengers will beat it).

Evaluation agents: an agent whose id comes from :func:`eval_agent_id`
(``eval-<kind>-<name>``) runs every registered learner of its kind, in
registry order, log-only, and is never drift-reset — so replaying a data set
through the pipeline (``ops.demo.pipeline_eval``) gives exactly the offline
prequential numbers of ``projections.evaluate``.

Exactly once: the state holds the last applied offset per ``topic:partition``
and the highest event id per ``producer|stream`` (UUIDv7 ids of one producer
increase within one stream's partition); anything at or below is skipped.

>>> sp = ShadowProjection()
>>> req = new_event("decision.requested", {"request_id": "r1", "kind": "task_estimate",
...     "context": {"task_id": "t1", "project": "p", "title": "Fix login"}},
...     producer="task-estimator")
>>> [e.payload["model"] for e in sp.apply(req, topic="d", partition=0, offset=0)]
['running_median', 'recency_median', 'knn_median', 'token_quantile']
>>> sp.apply(req, topic="d", partition=0, offset=0)  # already applied
[]
>>> done = new_event("task.completed", {"task_id": "t1", "project": "p",
...     "actual_points": 8.0}, producer="tracker")
>>> _ = sp.apply(done, topic="a", partition=0, offset=0)
>>> sp.metrics("task-estimator")["running_median"]["mae"]
4.0
"""

from __future__ import annotations

import base64
import math
import pickle
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from river.drift import ADWIN

from projections.agent_specs import DEFAULT_AGENTS, AgentSpec, default_spec, eval_spec
from projections.learners import Learner
from projections.watermarks import Watermarks
from schemas import Envelope, new_event
from schemas.envelope import thaw

Factories = Mapping[str, Callable[[], Learner]]
EPS = 1e-6
DRIFT_DELTA = 0.001  # ADWIN confidence; smaller is more conservative
MIN_SCORED_BEFORE_RESET = 500  # a challenger is reset only after this many scores
#: outcome event type -> (agent kind, outcome key field in the request context)
OUTCOMES: dict[str, tuple[str, str]] = {
    "task.completed": ("task_estimate", "task_id"),
    "review.completed": ("review_risk", "change_id"),
}
OUTCOME_KEY = {kind: key for kind, key in OUTCOMES.values()}


@dataclass(frozen=True, slots=True)
class Scored:
    """Errors of every model of one agent on the same request (for paired tests)."""

    agent_id: str
    kind: str
    request_id: str
    seq: int  # per-agent count of scored outcomes, 1-based; increases by one
    errors: Mapping[str, float]
    generations: Mapping[str, int]
    occurred_at: datetime


def error_of(kind: str, prediction: float, y: float) -> tuple[float, float]:
    """(error, secondary metric): absolute error, or (log loss, Brier score).

    >>> error_of("task_estimate", 3.0, 5.0)
    (2.0, 0.0)
    >>> [round(v, 4) for v in error_of("review_risk", 0.8, 1.0)]
    [0.2231, 0.04]
    """
    if kind == "task_estimate":
        return abs(prediction - y), 0.0
    p = min(max(prediction, EPS), 1.0 - EPS) if math.isfinite(prediction) else 0.5
    loss = -math.log(p) if y >= 0.5 else -math.log(1.0 - p)
    return loss, (p - y) ** 2


def _finite(prediction: float, kind: str) -> float:
    """A prediction as a finite float (NaN/inf: the kind's neutral answer, 0 or 0.5)."""
    p = float(prediction)
    return p if math.isfinite(p) else (0.0 if kind == "task_estimate" else 0.5)


@dataclass
class ModelState:
    """One model of one agent: the learner, its drift detector and prequential metrics."""

    learner: Learner
    window: int
    generation: int = 1
    n: int = 0
    total: float = 0.0
    total2: float = 0.0
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    rsum: float = 0.0
    rsum2: float = 0.0
    drifts: int = 0
    detector: ADWIN = field(default_factory=lambda: ADWIN(delta=DRIFT_DELTA))

    def score(self, err: float, aux: float) -> bool:
        """Add one error; True when the detector signals drift."""
        self.n += 1
        self.total += err
        self.total2 += aux
        self.recent.append((err, aux))
        self.rsum += err
        self.rsum2 += aux
        if len(self.recent) > self.window:
            old, old2 = self.recent.popleft()
            self.rsum -= old
            self.rsum2 -= old2
        self.detector.update(err)
        return bool(self.detector.drift_detected)

    def summary(self, kind: str) -> dict[str, float]:
        main = "mae" if kind == "task_estimate" else "log_loss"
        m, r = max(self.n, 1), max(len(self.recent), 1)
        out = {"n": float(self.n), main: self.total / m, f"rolling_{main}": self.rsum / r,
               "drifts": float(self.drifts), "generation": float(self.generation)}
        if kind == "review_risk":
            out["brier"], out["rolling_brier"] = self.total2 / m, self.rsum2 / r
        return out

    def state(self) -> dict[str, Any]:
        return {
            "learner": self.learner.snapshot().decode(), "generation": self.generation,
            "n": self.n, "total": self.total, "total2": self.total2,
            "recent": list(self.recent), "rsum": self.rsum, "rsum2": self.rsum2,
            "drifts": self.drifts,
            "detector": base64.b64encode(pickle.dumps(self.detector)).decode(),
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any], factory: Callable[[], Learner],
                   window: int) -> ModelState:
        restore = getattr(factory, "restore", None) or type(factory()).restore
        return cls(
            learner=restore(raw["learner"].encode()), window=window,
            generation=raw["generation"], n=raw["n"], total=raw["total"], total2=raw["total2"],
            recent=deque(tuple(p) for p in raw["recent"]), rsum=raw["rsum"], rsum2=raw["rsum2"],
            drifts=raw["drifts"], detector=pickle.loads(base64.b64decode(raw["detector"])),
        )


class ShadowProjection:
    """Champion and challengers of every agent learning prequentially, in the shadow.

    Parameters
    ----------
    agents
        Agent specs by id; an unknown agent gets :func:`default_spec` (log-only).
    max_pending
        Predictions waiting for their outcome, over all agents; the oldest beyond
        are dropped and counted in ``dropped``.
    window
        Size of the rolling metric window (last N scored outcomes per model).
    evaluate_every
        A ``model.evaluated`` event per model every this many outcomes of an agent.
    on_scored
        Called with each :class:`Scored` (e.g. ``PromotionProjection.observe``).
    """

    def __init__(
        self, agents: Mapping[str, AgentSpec] | None = None, *, max_pending: int = 100_000,
        window: int = 500, evaluate_every: int = 100,
        on_scored: Callable[[Scored], Any] | None = None,
    ) -> None:
        self.specs: dict[str, AgentSpec] = dict(DEFAULT_AGENTS if agents is None else agents)
        self.max_pending, self.window, self.evaluate_every = max_pending, window, evaluate_every
        self.on_scored = on_scored
        self.models: dict[str, dict[str, ModelState]] = {}
        self.seq: dict[str, int] = {}
        self.protected: dict[str, list[str]] = {}  # agent -> [champion, canary or ""]
        self.pending: dict[str, list[Any]] = {}  # "agent|key" -> [request_id, x, preds]
        self.marks = Watermarks()
        self.counters = {"dropped": 0, "unmatched": 0, "invalid": 0, "resets": 0}
        self.duplicates = 0  # redeliveries skipped (not in the snapshot: not part of the state)

    # ------------------------------------------------------------------ input

    def apply(self, event: Envelope, *, topic: str = "", partition: int = 0,
              offset: int = -1) -> list[Envelope]:
        """Apply any event once (by offset and id); return the events it produces."""
        if event.type not in (*OUTCOMES, "decision.requested", "promotion.step_changed",
                              "promotion.rolled_back"):
            return []
        if not self.marks.fresh(event, topic, partition, offset):
            self.duplicates += 1
            return []
        if event.type == "decision.requested":
            return self._request(event)
        if event.type in OUTCOMES:
            return self._outcome(event)
        self._control(event)
        return []

    def on_request(self, event: Envelope, *, topic: str = "", partition: int = 0,
                   offset: int = -1) -> list[Envelope]:
        """Every model predicts; returns ``shadow.predicted`` events."""
        return self.apply(event, topic=topic, partition=partition, offset=offset)

    def on_outcome(self, event: Envelope, *, topic: str = "", partition: int = 0,
                   offset: int = -1) -> list[Envelope]:
        """Score then learn; returns ``model.evaluated`` events (periodically)."""
        return self.apply(event, topic=topic, partition=partition, offset=offset)

    # --------------------------------------------------------------- queries

    def agent_models(self, agent_id: str) -> dict[str, ModelState]:
        """The models of an agent (created on first use)."""
        models = self.models.get(agent_id)
        if models is None:
            spec = self.specs.get(agent_id) or eval_spec(agent_id)
            if spec is None:
                raise KeyError(agent_id)
            self.specs[agent_id] = spec
            models = {n: ModelState(f(), self.window) for n, f in spec.learners().items()}
            self.models[agent_id] = models
            self.protected[agent_id] = [spec.champion, ""]
        return models

    def metrics(self, agent_id: str) -> dict[str, dict[str, float]]:
        """Prequential metrics of every model of an agent."""
        kind = self.specs[agent_id].kind
        return {n: m.summary(kind) for n, m in self.agent_models(agent_id).items()}

    def model_snapshot(self, agent_id: str, name: str) -> bytes:
        """Current learner bytes of one model (what a canary or champion would serve)."""
        return self.agent_models(agent_id)[name].learner.snapshot()

    def offsets(self) -> dict[str, int]:
        """Last applied offset per ``topic:partition`` (for the registry's lineage)."""
        return dict(self.marks.offsets)

    # ------------------------------------------------------------- handlers

    def _request(self, event: Envelope) -> list[Envelope]:
        agent_id, kind = event.producer, event.payload["kind"]
        spec = self.specs.get(agent_id)
        if spec is None:
            spec = self.specs[agent_id] = default_spec(agent_id, kind)
        context = thaw(event.payload["context"])
        key = context.pop(OUTCOME_KEY.get(kind, ""), None)
        if spec.kind != kind or key is None:
            self.counters["invalid"] += 1
            return []
        request_id = event.payload["request_id"]
        preds = {n: _finite(m.learner.predict_one(context), kind)
                 for n, m in self.agent_models(agent_id).items()}
        slot = f"{agent_id}|{key}"
        self.pending.pop(slot, None)  # a newer request for the same outcome replaces it
        self.pending[slot] = [request_id, context, preds]
        while len(self.pending) > self.max_pending:
            del self.pending[next(iter(self.pending))]
            self.counters["dropped"] += 1
        return [
            new_event("shadow.predicted", {"request_id": request_id, "kind": kind, "model": n,
                                           "prediction": p},
                      producer=agent_id, correlation_id=request_id,
                      causation_id=str(event.event_id), occurred_at=event.occurred_at)
            for n, p in preds.items()
        ]

    def _outcome(self, event: Envelope) -> list[Envelope]:
        kind, key_field = OUTCOMES[event.type]
        p = event.payload
        y = float(p["actual_points"]) if kind == "task_estimate" else (
            0.0 if p["passed_first_try"] else 1.0)
        out: list[Envelope] = []
        matched = False
        for agent_id, spec in self.specs.items():
            entry = self.pending.pop(f"{agent_id}|{p[key_field]}", None) if spec.kind == kind \
                else None
            if entry is None:
                continue
            matched = True
            out.extend(self._score(agent_id, kind, entry, y, event))
        if not matched:
            self.counters["unmatched"] += 1
        return out

    def _score(self, agent_id: str, kind: str, entry: list[Any], y: float,
               event: Envelope) -> list[Envelope]:
        request_id, x, preds = entry
        models = self.agent_models(agent_id)
        spec = self.specs[agent_id]
        errors: dict[str, float] = {}
        for name, model in models.items():
            err, aux = error_of(kind, preds.get(name, math.nan), y)
            errors[name] = err
            drift = model.score(err, aux)  # test ...
            model.learner.learn_one(x, y)  # ... then train
            if (drift and model.n >= MIN_SCORED_BEFORE_RESET and spec.drift_resets
                    and name not in self.protected[agent_id]):
                self._reset(agent_id, name)
        seq = self.seq[agent_id] = self.seq.get(agent_id, 0) + 1
        if self.on_scored is not None:
            self.on_scored(Scored(agent_id, kind, request_id, seq, errors,
                                  {n: m.generation for n, m in models.items()},
                                  event.occurred_at))
        if seq % self.evaluate_every:
            return []
        return [new_event("model.evaluated", {"kind": kind, "model": n, "n": m.n,
                                              "metrics": m.summary(kind)},
                          producer=agent_id, causation_id=str(event.event_id),
                          occurred_at=event.occurred_at)
                for n, m in models.items()]

    def _reset(self, agent_id: str, name: str) -> None:
        old = self.models[agent_id][name]
        fresh = ModelState(self.specs[agent_id].learners()[name](), self.window)
        fresh.generation, fresh.drifts = old.generation + 1, old.drifts + 1
        self.models[agent_id][name] = fresh
        self.counters["resets"] += 1

    def _control(self, event: Envelope) -> None:
        p = event.payload
        agent_id = p["agent_id"]
        if agent_id not in self.specs:
            return
        self.agent_models(agent_id)
        prot = self.protected[agent_id]
        if event.type == "promotion.rolled_back":
            prot[1] = ""
        elif p["to_step"] >= 100:
            prot[0], prot[1] = p["challenger"].split(":")[0], ""
        else:
            prot[1] = p["challenger"].split(":")[0]

    # -------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """Deterministic bytes of models, metrics, pending predictions and offsets."""
        return orjson.dumps({
            "v": 1,
            "specs": {a: [s.kind, s.mode, s.champion, list(s.challengers)]
                      for a, s in self.specs.items()},
            "models": {a: {n: m.state() for n, m in ms.items()} for a, ms in self.models.items()},
            "seq": self.seq, "protected": self.protected, "pending": list(self.pending.items()),
            "marks": self.marks.state(), "counters": self.counters,
            "config": [self.max_pending, self.window, self.evaluate_every],
        })

    @classmethod
    def restore(cls, data: bytes, agents: Mapping[str, AgentSpec] | None = None,
                on_scored: Callable[[Scored], Any] | None = None) -> ShadowProjection:
        """Rebuild from :meth:`snapshot` bytes; ``agents`` supplies custom factories."""
        raw = orjson.loads(data)
        max_pending, window, every = raw["config"]
        given = dict(agents or DEFAULT_AGENTS)
        specs = {}
        for a, (kind, mode, champ, chals) in raw["specs"].items():
            base = given.get(a)
            specs[a] = AgentSpec(a, kind, mode, champ, tuple(chals),
                                 base.factories if base else None,
                                 drift_resets=eval_spec(a) is None)
        sp = cls(specs, max_pending=max_pending, window=window, evaluate_every=every,
                 on_scored=on_scored)
        for a, ms in raw["models"].items():
            facs = specs[a].learners()
            sp.models[a] = {n: ModelState.from_state(s, facs[n], window) for n, s in ms.items()}
        sp.seq, sp.protected = raw["seq"], raw["protected"]
        sp.pending = {k: v for k, v in raw["pending"]}
        sp.marks, sp.counters = Watermarks.from_state(raw["marks"]), raw["counters"]
        return sp
