"""Promotion: canary ramp on confident wins, automatic rollback, log-only agents stay put.

The acceptance runs drive the real shadow projection with request/outcome
events and publish every transition to the real Redis of the ``stack`` fixture.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis

from projections.agent_specs import AgentSpec
from projections.learners import TASK_LEARNERS
from projections.learners.base import StateLearner, num
from projections.policy_store import PolicyStore
from projections.promotion import (
    PromotionPolicy,
    PromotionProjection,
    PromotionRefused,
    Transition,
)
from projections.shadow import ShadowProjection
from schemas import Envelope, new_event
from schemas.policy import ModelRef

POINTS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0)


class Oracle(StateLearner):
    """Test learner: predicts the request's ``hint`` (so tests decide how good it is)."""

    name: ClassVar[str] = "oracle"

    def predict_one(self, x: dict[str, Any]) -> float:
        return num(x, "hint")

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        return None


FACTORIES = {**TASK_LEARNERS, "oracle": Oracle}


def spec(agent_id: str = "task-estimator", mode: str = "live") -> AgentSpec:
    return AgentSpec(agent_id, "task_estimate", mode, "constant",
                     ("oracle", "running_median", "recency_median"), FACTORIES)


def stream(agent_id: str, start: int, n: int, offset_by: float, seed: int = 1,
           decisions: bool = False) -> Iterator[Envelope]:
    """Requests, each followed by its outcome; the oracle's hint is ``y + offset_by`` ± 0.5."""
    rng = random.Random(seed * 7919 + start)
    for i in range(start, start + n):
        y = rng.choice(POINTS)
        rid = f"{agent_id}-r{i}"
        ctx = {"task_id": f"{agent_id}-t{i}", "project": "p", "title": f"task {i % 17}",
               "hint": y + offset_by + rng.uniform(-0.5, 0.5)}
        yield new_event("decision.requested", {"request_id": rid, "kind": "task_estimate",
                                               "context": ctx}, producer=agent_id)
        if decisions:
            yield new_event("decision.made", {
                "request_id": rid, "kind": "task_estimate", "output": 4.0,
                "model_version": "constant:v1", "policy": "champion", "inputs_digest": "d",
                "features": {}, "latency_us": 200.0 + rng.random() * 50}, producer=agent_id)
        yield new_event("task.completed", {"task_id": f"{agent_id}-t{i}", "project": "p",
                                           "actual_points": y}, producer="tracker")


class Loop:
    """Shadow → promotion → policy store, wired as the worker does."""

    def __init__(self, agents: dict[str, AgentSpec], store: PolicyStore | None = None,
                 policy: PromotionPolicy | None = None) -> None:
        self.transitions: list[Transition] = []
        self.at_seq: list[int] = []  # shadow outcome count at each automatic transition
        self.shadow = ShadowProjection(agents, on_scored=self._scored)
        # The gate alone by default: refreshed snapshots have their own test.
        policy = policy or PromotionPolicy(refresh_every=0)
        self.promotion = PromotionProjection(agents, policy, snapshot_of=self.shadow.model_snapshot,
                                             key_prefix=store.prefix if store else "selflearn")
        self.store = store
        self.offset = 0
        if store is not None:
            for agent_id in agents:
                assert store.publish(*self.promotion.bootstrap(agent_id))

    def _scored(self, scored: Any) -> None:
        done = self.promotion.observe(scored)
        self.at_seq.extend(scored.seq for _ in done)
        self._publish(done)

    def _publish(self, transitions: list[Transition]) -> None:
        for t in transitions:
            self.transitions.append(t)
            if self.store is not None:
                assert self.store.publish(t.policy, t.snapshots)

    def feed(self, events: Iterator[Envelope]) -> int:
        """Apply events; returns how many outcomes were applied."""
        outcomes = 0
        for ev in events:
            self.offset += 1
            if ev.type == "decision.made":
                self._publish(self.promotion.apply([("d", 0, self.offset, ev)]))
            else:
                self.shadow.apply([("x", 0, self.offset, ev)])
                outcomes += ev.type == "task.completed"
        return outcomes

    def steps(self) -> list[tuple[str, int, int | None]]:
        return [(t.event.type, t.event.payload["from_step"], t.event.payload.get("to_step"))
                for t in self.transitions]


@pytest.fixture()
def store(stack, request) -> PolicyStore:
    client = redis.Redis.from_url(stack.redis_url)
    return PolicyStore(client, prefix=f"t-{request.node.name[:40]}-{random.random():.6f}")


def _until_step(loop: Loop, agent: str, step: int, limit: int = 3000) -> int:
    """Feed good oracle traffic until the agent reaches ``step``; returns the next index."""
    i = 0
    while loop.promotion.policy(agent).canary_percent != step:
        assert i < limit, f"never reached step {step}: {loop.steps()}"
        loop.feed(stream(agent, i, 50, offset_by=0.0))
        i += 50
    return i


def test_better_challenger_ramps_5_25_50_100_and_becomes_champion(store) -> None:
    agent = "task-estimator"
    loop = Loop({agent: spec(agent)}, store)
    loop.feed(stream(agent, 0, 2000, offset_by=0.0))
    assert loop.steps()[:4] == [("promotion.step_changed", 0, 5), ("promotion.step_changed", 5, 25),
                                ("promotion.step_changed", 25, 50),
                                ("promotion.step_changed", 50, 100)]
    first = loop.transitions[0].event.payload
    assert first["challenger"].startswith("oracle:") and first["champion"] == "constant:v1"
    assert "wilcoxon" in first["reason"] and not first.get("manual")
    assert [t.policy.revision for t in loop.transitions[:4]] == [1, 2, 3, 4]
    stored = store.get(agent)
    assert stored is not None and stored == loop.promotion.policy(agent)
    assert stored.champion.name == "oracle" and stored.canary_percent == 0
    assert stored.challenger is None
    assert store.load_model(agent, stored.champion) == loop.shadow.model_snapshot(agent, "oracle")
    # each step needs its own window of >= 200 fresh pairs
    gaps = [b - a for a, b in zip([0, *loop.at_seq[:3]], loop.at_seq[:4], strict=True)]
    assert all(g >= loop.promotion.cfg.min_samples for g in gaps), gaps


def test_worse_challenger_in_canary_is_rolled_back_within_one_window(store) -> None:
    agent = "task-estimator"
    loop = Loop({agent: spec(agent)}, store)
    i = _until_step(loop, agent, 5)
    assert store.get(agent).canary_percent == 5
    before = len(loop.transitions)
    window = loop.promotion.cfg.degrade_window
    seen = 0
    while len(loop.transitions) == before:  # made worse on purpose: hints 9 points off
        assert seen <= window, "no rollback within one evaluation window"
        seen += loop.feed(stream(agent, i, 10, offset_by=9.0))
        i += 10
    t = loop.transitions[-1]
    assert t.event.type == "promotion.rolled_back"
    assert t.event.payload["from_step"] == 5 and t.event.payload["challenger"].startswith("oracle")
    assert "error" in t.event.payload["reason"]
    stored = store.get(agent)
    assert stored.canary_percent == 0 and stored.challenger is None
    assert stored.champion == ModelRef("constant", 1, stored.champion.snapshot_key)
    assert stored.revision == t.policy.revision == 2


def test_log_only_agent_is_never_promoted(store) -> None:
    agent = "doc-keeper"
    loop = Loop({agent: spec(agent, mode="log_only")}, store)
    loop.feed(stream(agent, 0, 1500, offset_by=0.0))
    assert loop.transitions == []
    assert loop.shadow.metrics(agent)["oracle"]["mae"] < loop.shadow.metrics(agent)["constant"][
        "mae"]
    with pytest.raises(PromotionRefused, match="log_only"):
        loop.promotion.promote(agent, operator="alice")
    stored = store.get(agent)
    assert stored.mode == "log_only" and stored.canary_percent == 0 and stored.revision == 0


def test_a_challenger_no_better_than_the_champion_is_never_promoted() -> None:
    agent = "task-estimator"
    loop = Loop({agent: AgentSpec(agent, "task_estimate", "live", "oracle", ("constant",),
                                  FACTORIES)})
    loop.feed(stream(agent, 0, 3000, offset_by=0.0, seed=3))
    assert loop.transitions == []


def test_slow_canary_is_rolled_back_on_latency() -> None:
    agent = "task-estimator"
    loop = Loop({agent: spec(agent)})
    i = _until_step(loop, agent, 5)
    base = loop.offset
    for k in range(400):
        rid = f"lat-{k}"
        pol = "canary" if k % 2 else "champion"
        ev = new_event("decision.made", {
            "request_id": rid, "kind": "task_estimate", "output": 4.0, "model_version": "x",
            "policy": pol, "inputs_digest": "d", "features": {},
            "latency_us": 300.0 if pol == "champion" else 9000.0}, producer=agent)
        loop._publish(loop.promotion.apply([("d", 1, base + k, ev)]))
        if loop.transitions[-1].event.type == "promotion.rolled_back":
            break
    assert loop.transitions[-1].event.type == "promotion.rolled_back"
    assert "latency" in loop.transitions[-1].event.payload["reason"]
    assert i > 0


def test_manual_promote_and_rollback_are_audited() -> None:
    agent = "task-estimator"
    loop = Loop({agent: spec(agent)})
    t1 = loop.promotion.promote(agent, operator="alice", challenger="recency_median")
    assert t1.event.payload["manual"] is True and t1.event.payload["operator"] == "alice"
    assert t1.policy.canary_percent == 5 and t1.policy.challenger.name == "recency_median"
    assert set(t1.snapshots) == {t1.policy.challenger}
    t2 = loop.promotion.rollback(agent, operator="bob", reason="looks odd")
    assert t2.event.type == "promotion.rolled_back"
    assert (t2.event.payload["operator"], t2.event.payload["reason"]) == ("bob", "looks odd")
    assert t2.policy.canary_percent == 0 and t2.policy.revision == 2
    with pytest.raises(PromotionRefused, match="no canary"):
        loop.promotion.rollback(agent, operator="bob", reason="again")
    with pytest.raises(PromotionRefused, match="not a challenger"):
        loop.promotion.promote(agent, operator="alice", challenger="nope")
    for _ in range(4):
        last = loop.promotion.promote(agent, operator="alice", challenger="running_median")
    assert last.policy.champion.name == "running_median" and last.event.payload["to_step"] == 100
    undo = loop.promotion.rollback(agent, operator="carol", reason="bad promotion")
    assert undo.event.payload["from_step"] == 100 and undo.policy.champion.name == "constant"


def test_promotion_snapshot_restores_the_state_machine() -> None:
    agent = "task-estimator"
    loop = Loop({agent: spec(agent)})
    _until_step(loop, agent, 25)
    data = loop.promotion.snapshot()
    again = PromotionProjection({agent: spec(agent)})
    again.restore(data)
    assert again.snapshot() == data
    assert again.policy(agent) == loop.promotion.policy(agent)


def test_policy_store_never_goes_back_to_an_older_revision(store) -> None:
    from schemas.policy import LivePolicy

    champ, chal = ModelRef("constant", 1), ModelRef("oracle", 2)
    newer = LivePolicy("a", "task_estimate", "live", champ, chal, canary_percent=25, revision=3)
    older = LivePolicy("a", "task_estimate", "live", champ, None, revision=2)
    assert store.publish(newer, {chal: b"new"})
    assert not store.publish(older, {chal: b"stale"})
    assert not store.publish(newer, {})  # same revision: nothing to do
    assert store.get("a") == newer and store.load_model("a", chal) == b"new"
    assert store.load_model("a", ModelRef("oracle", 9)) is None and store.get("zz") is None
    assert store.all_policies() == {"a": newer}


def test_live_models_are_snapshotted_again_as_new_versions_as_they_learn(store) -> None:
    """The engine serves snapshots; a refresh hands it what the shadow copy has learned since:
    after a tenth more outcomes than at the last snapshot, at least every ``refresh_every``."""
    agent = "task-estimator"
    loop = Loop({agent: spec(agent, mode="log_only")}, store, PromotionPolicy(refresh_every=40))
    learned = loop.feed(stream(agent, 0, 600, offset_by=0.0))
    expected, since = [], 0
    for seq in range(1, learned + 1):
        since += 1
        if since >= min(40, max(1, seq // 10)):
            expected.append(seq)
            since = 0
    refreshes = [t for t in loop.transitions if t.event.type == "promotion.refreshed"]
    assert loop.at_seq == expected and len(refreshes) == len(expected)
    assert expected[:3] == [1, 2, 3] and expected[-1] - expected[-2] == 40  # fast, then capped
    versions = [t.policy.champion.version for t in refreshes]
    assert versions == list(range(2, 2 + len(refreshes)))  # new versions, never overwritten
    assert [t.policy.revision for t in refreshes] == list(range(1, 1 + len(refreshes)))
    assert {t.policy.canary_percent for t in refreshes} == {0}  # the step is untouched
    last = refreshes[-1]
    assert last.event.payload["replaces"] == f"constant:v{versions[-2]}"
    # what the store serves now is the champion as the shadow held it at the refresh
    served = store.get(agent)
    assert served is not None and served.champion == last.policy.champion
    assert store.load_model(agent, served.champion) == last.snapshots[served.champion]
    assert loop.promotion.states[agent].pairs  # the gate's pairs survive a refresh
