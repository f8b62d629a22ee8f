"""Promotion: shadow (0 %) → canary 5 → 25 → 50 → 100 %, gated by a paired test.

The shadow projection scores champion and challengers on the *same* requests
(:class:`projections.shadow.Scored`); this projection turns those paired errors
into live-policy changes, one state machine per agent.

The gate (statistical test and sample sizes)
--------------------------------------------
* Per request the difference ``d = error(champion) - error(challenger)``
  (absolute error for task estimates, log loss for review risk); positive
  means the challenger was better. Pairing cancels the request's difficulty.
* Test: **one-sided Wilcoxon signed-rank** (``scipy.stats.wilcoxon``,
  ``alternative="greater"``, zero differences dropped) — robust to the heavy
  tails of story-point errors, unlike a t-test. Level **α = 0.01**; at step 0,
  where every challenger competes, Bonferroni: α / (number of challengers).
* Sample size: a step is considered only with **n ≥ 200 pairs collected in
  the current step** (a fresh window per step; the last ``window`` = 1 000
  kept), tested every 25 new pairs, and only if the mean error improvement is
  at least ``min_gain`` = 1 % of the champion's mean error (significant *and*
  worth it). So a challenger needs ≥ 800 scored outcomes from shadow to 100 %.
* At 100 % the challenger becomes the champion with a new version (fresh
  snapshot) and the machine restarts at step 0 against the other models.

Automatic rollback (canary steps 5, 25, 50), checked on every input:

* error: over the last ``degrade_window`` (= 200, one evaluation window)
  pairs with n ≥ 50, challenger mean error > champion's × 1.10. The shadow copy
  of the canary model scores *every* request; canary routing is a hash of the
  request id (independent of content), so this is the canary traffic's error
  with 20× the samples at 5 %.
* latency: ``decision.made`` with ``policy="canary"`` vs ``"champion"`` in the
  step, ≥ 50 each: p99 canary > p99 champion × 1.5 + 1 000 µs.
* fallbacks: ``policy="fallback"`` decisions whose request routes to the
  canary (:func:`schemas.policy.bucket`) — rate > champion-routed rate + 2 pp,
  ≥ 50 canary-routed decisions.

Rolling back restores the last champion (canary 0 %) in one transition, so it
happens within one evaluation window of the degradation.

Refresh: the live models keep learning
--------------------------------------
The decision engine serves snapshots and learns nothing itself; without a
refresh the champion would serve the state it had when it went live (for the
first champion: a model that has learned nothing) while its shadow copy
learns every outcome. So the champion and the canary model are snapshotted
again as **new versions of the same models** (``promotion.refreshed``; the
step, the pairs collected and the gate are untouched) once they have learned
a tenth more outcomes than at their last snapshot — young models change
fastest — and at least every ``refresh_every`` (= 100) scored outcomes.
Versions stay immutable, so every decision still names the exact snapshot
that made it (audit, lineage). Why these numbers: docs/served.md. Log-only agents
never leave step 0 (neither automatically nor by hand).

The rules are pure functions (:mod:`projections.promotion_rules`); this
projection applies them. It is a :class:`projections.base.SnapshotProjection`:
its state machines and watermarks persist as :meth:`PromotionProjection.snapshot` bytes.

>>> pp = PromotionProjection({"a": AgentSpec("a", "task_estimate", "live", "m0", ("m1",))})
>>> pp.policy("a").champion, pp.policy("a").canary_percent
(ModelRef(name='m0', version=1, snapshot_key='selflearn:model:{a}:m0:1'), 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from projections.agent_specs import DEFAULT_AGENTS, AgentSpec, default_spec
from projections.base import Sourced
from projections.prequential import Scored
from projections.promotion_rules import AgentState, PromotionPolicy, degraded, mean, winner
from projections.watermarks import Watermarks
from schemas import Envelope, new_event
from schemas.policy import STEPS, LivePolicy, ModelRef, bucket, model_key

SnapshotOf = Callable[[str, str], bytes]  # (agent_id, model name) -> learner bytes


@dataclass(frozen=True, slots=True)
class Transition:
    """One policy change: its audit event, the new live policy and snapshots to publish."""

    event: Envelope
    policy: LivePolicy
    snapshots: dict[ModelRef, bytes]


class PromotionRefused(ValueError):
    """A manual promote/rollback that the agent's state does not allow."""


def label(ref: ModelRef | None) -> str:
    """``"name:vN"`` of a model reference (``""`` for none)."""
    return f"{ref.name}:v{ref.version}" if ref else ""


class PromotionProjection:
    """Per-agent canary state machine driven by paired errors and ``decision.made``.

    Parameters
    ----------
    agents
        Agent specs (kind, mode, champion, challengers) by id.
    policy
        The gate configuration.
    snapshot_of
        Returns a model's current learner bytes (``ShadowProjection.model_snapshot``);
        ``None``: transitions carry no snapshots.
    key_prefix
        Redis prefix used for ``ModelRef.snapshot_key`` (same as the PolicyStore's).
    """

    def __init__(self, agents: Mapping[str, AgentSpec] | None = None,
                 policy: PromotionPolicy | None = None, *, snapshot_of: SnapshotOf | None = None,
                 key_prefix: str = "selflearn") -> None:
        self.agents = dict(DEFAULT_AGENTS if agents is None else agents)
        self.specs = dict(self.agents)
        self.cfg = policy or PromotionPolicy()
        self.snapshot_of = snapshot_of
        self.prefix = key_prefix
        self.states: dict[str, AgentState] = {}
        self.marks = Watermarks()

    # ----------------------------------------------------------------- state

    def _state(self, agent_id: str, kind: str = "task_estimate") -> AgentState:
        st = self.states.get(agent_id)
        if st is None:
            spec = self.specs.get(agent_id)
            if spec is None:
                spec = self.specs[agent_id] = default_spec(agent_id, kind)
            st = self.states[agent_id] = AgentState(champion=[spec.champion, 1])
        return st

    def _ref(self, agent_id: str, pair: list[Any] | None) -> ModelRef | None:
        if pair is None:
            return None
        bare = ModelRef(pair[0], pair[1])
        return replace(bare, snapshot_key=model_key(self.prefix, agent_id, bare))

    def policy(self, agent_id: str) -> LivePolicy:
        """The live policy this projection currently wants for ``agent_id``."""
        st = self._state(agent_id)
        spec = self.specs[agent_id]
        champion = self._ref(agent_id, st.champion)
        assert champion is not None
        return LivePolicy(agent_id=agent_id, kind=spec.kind, mode=spec.mode, champion=champion,
                          challenger=self._ref(agent_id, st.challenger),
                          canary_percent=st.step, revision=st.revision)

    def bootstrap(self, agent_id: str) -> tuple[LivePolicy, dict[ModelRef, bytes]]:
        """The current policy with its model snapshots (to publish at start-up)."""
        pol = self.policy(agent_id)
        return pol, self._snapshots(agent_id, [r for r in (pol.champion, pol.challenger) if r])

    def _snapshots(self, agent_id: str, refs: list[ModelRef]) -> dict[ModelRef, bytes]:
        if self.snapshot_of is None:
            return {}
        return {r: self.snapshot_of(agent_id, r.name) for r in refs}

    # ----------------------------------------------------------------- input

    def observe(self, scored: Scored) -> list[Transition]:
        """Add one request's paired errors; return the transitions they cause."""
        st = self._state(scored.agent_id, scored.kind)
        if scored.seq <= st.last_seq:
            return []
        st.last_seq = scored.seq
        st.since_refresh += 1
        champ = st.champion[0]
        if champ not in scored.errors:
            return []
        if st.step == 0:
            names = [n for n in scored.errors if n != champ]
        else:  # in canary: only the challenger's pairs count
            assert st.challenger is not None
            names = [st.challenger[0]]
        for name in names:
            gen = scored.generations.get(name, 1)
            if st.gens.get(name, gen) != gen:  # reset on drift: its history is gone
                st.pairs.pop(name, None)
            st.gens[name] = gen
            q = st.pairs.setdefault(name, deque(maxlen=self.cfg.window))
            q.append((scored.errors[champ], scored.errors[name]))
        when = scored.occurred_at
        if st.step > 0:
            why = degraded(st, self.cfg)
            if why:
                return [self._rollback(scored.agent_id, why, when)]
        out: list[Transition] = []
        # Young models change fastest: refresh after a tenth of what they have learned,
        # at most every `refresh_every` outcomes.
        if 0 < min(self.cfg.refresh_every, max(1, scored.seq // 10)) <= st.since_refresh:
            out.append(self._refresh(scored.agent_id, when))
        st.since_test += 1
        if st.since_test < self.cfg.test_every or self.specs[scored.agent_id].mode != "live":
            return out
        st.since_test = 0
        best = winner(st, self.cfg)
        if best is None:
            return out
        name, p, gain = best
        reason = f"wilcoxon p={p:.2e} gain={gain:.1%} n={len(st.pairs[name])}"
        return [*out, self._step_up(scored.agent_id, name, reason, when)]

    def apply(self, batch: Sequence[Sourced]) -> list[Transition]:
        """Apply each ``decision.made`` once (canary latency and fallbacks); may roll back."""
        out: list[Transition] = []
        for topic, partition, offset, event in batch:
            if event.type == "decision.made" and self.marks.fresh(event, topic, partition,
                                                                  offset):
                out.extend(self._decision(event))
        return out

    def forget(self, subject_id: str) -> int:
        """Errors, latencies and fallback counts hold nothing of a data subject: returns 0."""
        return 0

    def _decision(self, event: Envelope) -> list[Transition]:
        st = self.states.get(event.producer)
        if st is None or st.step == 0 or st.challenger is None:
            return []
        p = event.payload
        route = "canary" if bucket(p["request_id"]) < st.step else "champion"
        if p["policy"] in ("canary", "champion") and p.get("latency_us") is not None:
            lat = st.latency.setdefault(p["policy"], [])
            lat.append(float(p["latency_us"]))
            del lat[: -self.cfg.window]
        if p["policy"] in ("canary", "champion", "fallback"):
            fb = st.fallbacks.setdefault(route, [0, 0])
            fb[0] += p["policy"] == "fallback"
            fb[1] += 1
        why = degraded(st, self.cfg)
        return [self._rollback(event.producer, why, event.occurred_at)] if why else []

    # ------------------------------------------------------------ transitions

    def _step_up(self, agent_id: str, name: str | None, reason: str, when: datetime,
                 operator: str | None = None) -> Transition:
        st = self._state(agent_id)
        spec = self.specs[agent_id]
        from_step = st.step
        new: list[ModelRef] = []
        if st.step == 0:
            assert name is not None
            st.challenger = [name, st.next_version]
            st.next_version += 1
            new.append(self._ref(agent_id, st.challenger))  # type: ignore[arg-type]
        to_step = STEPS[STEPS.index(st.step) + 1]
        assert st.challenger is not None
        chal_label, champ_label = label(ModelRef(*st.challenger)), label(ModelRef(*st.champion))
        promoted: dict[str, str] = {}
        if to_step == 100:  # the challenger becomes the champion, as a new version
            st.previous = st.champion
            st.champion = [st.challenger[0], st.next_version]
            st.next_version += 1
            st.challenger, st.step = None, 0
            new = [self._ref(agent_id, st.champion)]  # type: ignore[list-item]
            promoted["promoted"] = label(ModelRef(*st.champion))
        else:
            st.step = to_step
        st.revision += 1
        st.new_step()
        payload: dict[str, Any] = {
            "agent_id": agent_id, "kind": spec.kind, "from_step": from_step, "to_step": to_step,
            "champion": champ_label, "challenger": chal_label, "reason": reason, **promoted}
        if operator is not None:
            payload.update(manual=True, operator=operator)
        ev = new_event("promotion.step_changed", payload, producer=agent_id, occurred_at=when)
        return Transition(ev, self.policy(agent_id), self._snapshots(agent_id, new))

    def _refresh(self, agent_id: str, when: datetime) -> Transition:
        """Snapshot the live models again, as new versions of the same models."""
        st = self._state(agent_id)
        n, st.since_refresh = st.since_refresh, 0
        replaced = " ".join(label(ModelRef(*r)) for r in (st.champion, st.challenger) if r)
        new: list[ModelRef] = []
        for pair in (st.champion, st.challenger):
            if pair is not None:
                pair[1] = st.next_version
                st.next_version += 1
                new.append(self._ref(agent_id, pair))  # type: ignore[arg-type]
        st.revision += 1
        pol = self.policy(agent_id)
        ev = new_event("promotion.refreshed", {
            "agent_id": agent_id, "kind": pol.kind, "champion": label(pol.champion),
            "challenger": label(pol.challenger), "canary_percent": st.step,
            "replaces": replaced, "reason": f"{n} outcomes learned since the last snapshot"},
            producer=agent_id, occurred_at=when)
        return Transition(ev, pol, self._snapshots(agent_id, new))

    def _rollback(self, agent_id: str, reason: str, when: datetime,
                  operator: str | None = None) -> Transition:
        st = self._state(agent_id)
        from_step, chal = st.step, st.challenger
        if from_step == 0:  # undo the last full promotion
            assert st.previous is not None
            chal, st.champion, st.previous = st.champion, st.previous, None
            from_step = 100
        st.step, st.challenger = 0, None
        st.revision += 1
        st.new_step()
        payload: dict[str, Any] = {
            "agent_id": agent_id, "kind": self.specs[agent_id].kind, "from_step": from_step,
            "champion": label(ModelRef(*st.champion)),
            "challenger": label(ModelRef(*chal)) if chal else "", "reason": reason}
        if operator is not None:
            payload.update(manual=True, operator=operator)
        ev = new_event("promotion.rolled_back", payload, producer=agent_id, occurred_at=when)
        return Transition(ev, self.policy(agent_id), {})

    # ----------------------------------------------------------------- manual

    def promote(self, agent_id: str, operator: str, challenger: str | None = None,
                reason: str = "manual promotion") -> Transition:
        """Take the next step now (from shadow: ``challenger`` or the best so far)."""
        st = self._state(agent_id)
        spec = self.specs[agent_id]
        if spec.mode != "live":
            raise PromotionRefused(f"{agent_id} is {spec.mode}: it never leaves step 0; "
                                   "set its mode to 'live' first")
        if st.step == 0:
            names = [n for n in (*spec.challengers, spec.champion) if n != st.champion[0]]
            if challenger is None:
                scored = [(-mean(c - h for c, h in st.pairs[n]), n) for n in names
                          if st.pairs.get(n)]
                challenger = min(scored)[1] if scored else names[0]
            if challenger not in names:
                raise PromotionRefused(f"{challenger!r} is not a challenger of {agent_id}; "
                                       f"choose one of {names}")
        return self._step_up(agent_id, challenger, reason, datetime.now(UTC), operator)

    def rollback(self, agent_id: str, operator: str, reason: str) -> Transition:
        """Back to the last champion now (at step 0: undo the last 100 % promotion)."""
        st = self._state(agent_id)
        if st.step == 0 and st.previous is None:
            raise PromotionRefused(f"{agent_id} has no canary and no earlier champion to "
                                   "roll back to")
        return self._rollback(agent_id, reason, datetime.now(UTC), operator)

    # --------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """Deterministic bytes of every agent's state machine and the applied offsets."""
        states = {}
        for a, st in self.states.items():
            raw = dict(st.__dict__)
            raw["pairs"] = {n: list(q) for n, q in st.pairs.items()}
            states[a] = raw
        return orjson.dumps({"v": 1, "states": states, "marks": self.marks.state(),
                             "specs": {a: [s.kind, s.mode, s.champion, list(s.challengers)]
                                       for a, s in self.specs.items()}})

    def restore(self, data: bytes) -> None:
        """Replace every agent's state machine by :meth:`snapshot` bytes (configuration stays)."""
        raw = orjson.loads(data)
        self.specs, self.states = dict(self.agents), {}
        for a, st in raw["states"].items():
            if a not in self.specs:
                kind, mode, champ, chals = raw["specs"][a]
                self.specs[a] = AgentSpec(a, kind, mode, champ, tuple(chals))
            st["pairs"] = {n: deque(map(tuple, q), maxlen=self.cfg.window)
                           for n, q in st["pairs"].items()}
            self.states[a] = AgentState(**st)
        self.marks = Watermarks.from_state(raw["marks"])
