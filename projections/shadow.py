"""Shadow learning: every model of an agent predicts every request, learns every outcome.

For each ``decision.requested`` every model of the agent (champion and
challengers) predicts what it *would* have decided; the predictions are kept
per outcome key (``task_id`` / ``change_id``) and returned as
``shadow.predicted`` events — live decisions are untouched. When the outcome
arrives (``task.completed`` / ``review.completed``, possibly months later) each
stored prediction is scored first, then every model learns (test-then-train).

Errors and metrics per model: :mod:`projections.prequential`.

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

Exactly once: the state holds the projection's watermarks
(:class:`projections.watermarks.Watermarks`); an event already applied is
skipped. It is a :class:`projections.base.SnapshotProjection`: the state
persists as :meth:`ShadowProjection.snapshot` bytes.

>>> sp = ShadowProjection()
>>> req = new_event("decision.requested", {"request_id": "r1", "kind": "task_estimate",
...     "context": {"task_id": "t1", "project": "p", "title": "Fix login"}},
...     producer="task-estimator")
>>> [e.payload["model"] for e in sp.apply([("d", 0, 0, req)])]
['running_median', 'recency_median', 'knn_median', 'river_title_linear']
>>> sp.apply([("d", 0, 0, req)])  # already applied
[]
>>> done = new_event("task.completed", {"task_id": "t1", "project": "p",
...     "actual_points": 8.0}, producer="tracker")
>>> _ = sp.apply([("a", 0, 0, done)])
>>> sp.metrics("task-estimator")["running_median"]["mae"]
4.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from projections.agent_specs import DEFAULT_AGENTS, AgentSpec, default_spec, eval_spec
from projections.base import Sourced
from projections.learners import Learner
from projections.prequential import ModelState, Scored, error_of, finite
from projections.watermarks import Watermarks
from schemas import Envelope, new_event
from schemas.cipher import FieldCipher
from schemas.envelope import thaw
from schemas.protect import reveal_context

Factories = Mapping[str, Callable[[], Learner]]
MIN_SCORED_BEFORE_RESET = 500  # a challenger is reset only after this many scores
#: outcome event type -> (agent kind, outcome key field in the request context)
OUTCOMES: dict[str, tuple[str, str]] = {
    "task.completed": ("task_estimate", "task_id"),
    "review.completed": ("review_risk", "change_id"),
}
OUTCOME_KEY = {kind: key for kind, key in OUTCOMES.values()}


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
        cipher: FieldCipher | None = None,
    ) -> None:
        self.agents = dict(DEFAULT_AGENTS if agents is None else agents)
        self.cipher = cipher
        self.on_scored = on_scored
        self.duplicates = 0  # redeliveries skipped (not in the snapshot: not part of the state)
        self._start(self.agents, max_pending, window, evaluate_every)

    def _start(self, specs: Mapping[str, AgentSpec], max_pending: int, window: int,
               evaluate_every: int) -> None:
        self.specs: dict[str, AgentSpec] = dict(specs)
        self.max_pending, self.window, self.evaluate_every = max_pending, window, evaluate_every
        self.models: dict[str, dict[str, ModelState]] = {}
        self.seq: dict[str, int] = {}
        self.protected: dict[str, list[str]] = {}  # agent -> [champion, canary or ""]
        # "agent|key" -> [request_id, sealed context, preds, subject, request event id]:
        # the context stays sealed here (and in the checkpoint); it is opened when used.
        self.pending: dict[str, list[Any]] = {}
        self.marks = Watermarks()
        self.counters = {"dropped": 0, "unmatched": 0, "invalid": 0, "resets": 0}

    # ------------------------------------------------------------------ input

    def apply(self, batch: Sequence[Sourced]) -> list[Envelope]:
        """Apply each event once; return the events they produce, in order.

        ``decision.requested``: every model predicts (``shadow.predicted``);
        outcomes: score then learn (``model.evaluated``, periodically);
        promotion events: which models are protected from drift resets.
        """
        out: list[Envelope] = []
        for topic, partition, offset, event in batch:
            if event.type not in (*OUTCOMES, "decision.requested", "promotion.step_changed",
                                  "promotion.rolled_back"):
                continue
            if not self.marks.fresh(event, topic, partition, offset):
                self.duplicates += 1
            elif event.type == "decision.requested":
                out.extend(self._request(event))
            elif event.type in OUTCOMES:
                out.extend(self._outcome(event))
            else:
                self._control(event)
        return out

    def forget(self, subject_id: str) -> int:
        """Drop the subject's pending predictions and the examples learners keep of them.

        Pending predictions hold the request context (sealed); a learner that
        stores examples (``knn_median``) drops the subject's tokens. Learners
        that only keep aggregates (medians, token weights) keep nothing per
        subject (docs/privacy.md, "Learners"). Returns how many items went.
        """
        gone = [k for k, v in self.pending.items() if len(v) > 3 and v[3] == subject_id]
        for k in gone:
            del self.pending[k]
        dropped = len(gone)
        for models in self.models.values():
            for m in models.values():
                forget = getattr(m.learner, "forget", None)
                if forget is not None:
                    dropped += int(forget(subject_id))
        return dropped

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
        sealed = thaw(event.payload["context"])
        key = sealed.pop(OUTCOME_KEY.get(kind, ""), None)
        if spec.kind != kind or key is None:
            self.counters["invalid"] += 1
            return []
        request_id = event.payload["request_id"]
        context = reveal_context(sealed, str(event.event_id), self.cipher)
        preds = {n: finite(m.learner.predict_one(context), kind)
                 for n, m in self.agent_models(agent_id).items()}
        slot = f"{agent_id}|{key}"
        self.pending.pop(slot, None)  # a newer request for the same outcome replaces it
        self.pending[slot] = [request_id, sealed, preds, event.subject_id or "",
                              str(event.event_id)]
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
        request_id, sealed, preds = entry[:3]
        subject, request_event = (entry[3], entry[4]) if len(entry) > 3 else ("", "")
        x = reveal_context(sealed, request_event, self.cipher)
        if subject:
            x["subject_id"] = subject  # example-keeping learners key their examples by it
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

    def restore(self, data: bytes) -> None:
        """Replace the state by :meth:`snapshot` bytes.

        The learner factories come from this instance's ``agents``; agents of
        the snapshot that it does not know get the registry's defaults.
        """
        raw = orjson.loads(data)
        max_pending, window, every = raw["config"]
        specs = {}
        for a, (kind, mode, champ, chals) in raw["specs"].items():
            base = self.agents.get(a)
            specs[a] = AgentSpec(a, kind, mode, champ, tuple(chals),
                                 base.factories if base else None,
                                 drift_resets=eval_spec(a) is None)
        self._start(specs, max_pending, window, every)
        for a, ms in raw["models"].items():
            facs = specs[a].learners()
            self.models[a] = {n: ModelState.from_state(s, facs[n], window)
                              for n, s in ms.items()}
        self.seq, self.protected = raw["seq"], raw["protected"]
        self.pending = {k: v for k, v in raw["pending"]}
        self.marks, self.counters = Watermarks.from_state(raw["marks"]), raw["counters"]
