"""Acceptance (issue 16): a River challenger in one line of configuration goes shadow →
canary → champion, and its snapshot survives a worker restart and an audit bit for bit.

Real PostgreSQL (checkpoints) and Redis (live policy, snapshots); the worker's
learning runtime and the agent's decision engine, wired as the worker and the
SDK wire them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from agents.decision import DecisionEngine, inputs_digest, new_learner
from ops.data import data_path
from ops.demo.data_agents import review_schedule
from ops.demo.pipeline_eval import Replay
from ops.usecases.served import replay_served
from projections.agent_specs import configured_agents
from projections.checkpoints import CheckpointStore
from projections.datasets import read_changes
from projections.learning import LearningRuntime
from projections.policy_store import PolicyStore
from schemas import new_event
from schemas.addresses import Addresses
from schemas.settings import Settings

AGENT = "task-estimator"
SPEC = "river.feature_extraction.BagOfWords(on='title')|linear_model.LinearRegression"
#: the line the README's demo runs the code reviewer with (docs/river.md, "In the demo")
DEMO_SPEC = ("river.selflearn.JitLogScaler|selflearn.OffsetLogisticRegression(offset_weight=0.7,"
             " intercept_init=-2.0, optimizer=optim.SGD(0.0), intercept_lr=0.003)")
POINTS = {"typo": 1.0, "endpoint": 5.0, "rewrite": 13.0}  # the title's first word decides


class Worker:
    """A learning runtime fed as the worker feeds it; transitions published to Redis."""

    def __init__(self, prefix: str, dsn: str, store: PolicyStore, engine: DecisionEngine,
                 agents: Any) -> None:
        self.runtime = LearningRuntime(prefix, CheckpointStore(dsn), None, agents)
        self.store, self.engine = store, engine
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def task(self, i: int) -> Any:
        word = list(POINTS)[i % 3]
        ctx = {"task_id": f"t{i}", "project": "p", "title": f"{word} in module {i % 11}"}
        d = self.engine.decide(ctx, request_id=f"r{i}")
        req = new_event("decision.requested", {"request_id": f"r{i}", "kind": "task_estimate",
                                               "context": ctx}, producer=AGENT)
        made = new_event("decision.made", {
            "request_id": f"r{i}", "kind": "task_estimate", "output": d.output,
            "model_version": d.model_version, "policy": d.policy,
            "inputs_digest": d.inputs_digest, "features": {}}, producer=AGENT)
        done = new_event("task.completed", {"task_id": f"t{i}", "project": "p",
                                            "actual_points": POINTS[word]}, producer="tracker")
        for ev in (req, made, done):
            self.offset += 1
            out = self.runtime.apply([("selflearn.x", 0, self.offset, ev)])
            for t in out.policies:
                if self.store.publish(t.policy, t.snapshots):
                    self.engine.refresh()  # what its refresh thread does within 0.5 s
                if t.event.type.startswith("promotion."):
                    self.events.append({"type": t.event.type, **t.event.payload})
        return d, ctx


@pytest.mark.timeout(300)
def test_a_river_challenger_in_one_line_goes_to_champion_and_survives_restart_and_audit(
        settings: Settings, stack: Addresses, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFLEARN_CHALLENGERS", json.dumps({AGENT: [SPEC]}))  # the one line
    agents = configured_agents(Settings().challengers)
    assert agents[AGENT].challengers == (SPEC,)
    prefix = f"{settings.topic_prefix}-river-{uuid.uuid4().hex[:6]}"
    store = PolicyStore(redis.Redis.from_url(stack.redis_url), prefix)
    engine = DecisionEngine(AGENT, "task_estimate", redis_url=stack.redis_url, prefix=prefix,
                            refresh_s=3600.0)
    worker = Worker(prefix, stack.database_url, store, engine, agents)
    i = 0
    while not any(e.get("promoted", "").startswith(SPEC) for e in worker.events):
        assert i < 3000, f"never promoted: {worker.events}"
        worker.task(i)
        i += 1
    steps = [(e["from_step"], e["to_step"]) for e in worker.events
             if e["type"] == "promotion.step_changed" and e["challenger"].startswith(SPEC)]
    assert steps == [(0, 5), (5, 25), (25, 50), (50, 100)]
    assert not [e for e in worker.events if e["type"] == "promotion.rolled_back"]

    d, ctx = worker.task(i)  # the River pipeline answers now, as the champion
    policy = store.get(AGENT)
    assert policy is not None and policy.champion.name == SPEC
    assert (d.policy, d.model_version) == ("champion", f"{SPEC}:{policy.champion.version}")
    # audit: the stored snapshot restores to the same bytes and recomputes the answer
    stored = store.load_model(AGENT, policy.champion)
    assert stored is not None
    again = new_learner("task_estimate", SPEC, stored)
    assert again.snapshot() == stored
    assert again.predict_one(ctx) == d.output
    assert inputs_digest(ctx, {}, d.model_version) == d.inputs_digest

    # worker restart: the checkpoint brings back every model, the River one bit for bit
    worker.runtime.checkpoint()
    shard = worker.runtime.shard(0)
    before, river = shard.snapshot(), shard.shadow.model_snapshot(AGENT, SPEC)
    restarted = Worker(prefix, stack.database_url, store, engine, agents)
    restarted.offset = worker.offset
    back = restarted.runtime.shard(0)
    assert back.snapshot() == before
    assert back.shadow.model_snapshot(AGENT, SPEC) == river
    d2, ctx2 = restarted.task(i + 1)  # and it goes on serving and learning
    assert d2.model_version.startswith(SPEC)
    assert back.shadow.model_snapshot(AGENT, SPEC) != river
    engine.close()


def test_the_demos_one_line_river_challenger_becomes_the_code_reviewers_champion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's schedule (LUCENE, outcomes as the demo's review agent delivers them)
    through the worker's shard and the agent's engine, in-process: the River pipeline
    passes every canary step against the size rule and serves as champion."""
    monkeypatch.setenv("SELFLEARN_CHALLENGERS", json.dumps({"code-reviewer": [DEMO_SPEC]}))
    spec = configured_agents(Settings().challengers)["code-reviewer"]
    assert (spec.champion, spec.challengers) == ("size_heuristic", (DEMO_SPEC,))
    replay = Replay("code-reviewer")
    for event in review_schedule(read_changes(data_path("changes"), "LUCENE")[:2400]):
        if isinstance(event, tuple):
            cid, project, ok = event
            replay.events.append(("review.completed", {
                "change_id": cid, "project": project, "passed_first_try": ok}))
        else:
            replay.request("review_risk", f"r{len(replay.scored)}",
                           {"change_id": event.transactionid, **event.x}, score=True)
    run = replay_served(replay, spec)
    steps = [(t["canary_percent"], t["champion"].rsplit(":", 1)[0])
             for t in run.transitions if t["type"] == "promotion.step_changed"]
    assert steps == [(5, "size_heuristic"), (25, "size_heuristic"), (50, "size_heuristic"),
                     (0, DEMO_SPEC)]
    assert not [t for t in run.transitions if t["type"] == "promotion.rolled_back"]
    assert run.arms[-1].startswith(f"champion {DEMO_SPEC}:")
