"""``selflearn lineage`` against the real archive, Redis and MLflow registry.

One agent's history is archived with known offsets: requests and outcomes on
its partition, a challenger ramped 0 → 5 → 25 → 50 → 100 % (which makes
``knn_median:3`` champion), decisions by each version, and a later rollback.
The registry holds ``knn_median:3`` with the offsets it learned up to, as the
worker records them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from ops.cli.root import app
from ops.stack.workers import worker_env
from projections.archive import EventArchive
from projections.policy_store import PolicyStore
from projections.registry import ModelRegistry
from schemas import Envelope, new_event
from schemas.addresses import Addresses
from schemas.policy import LivePolicy, ModelRef, model_key
from schemas.settings import Settings

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PART = 2


@pytest.fixture(scope="module")
def history(settings: Settings, stack: Addresses) -> dict[str, Any]:
    agent = f"lin-{uuid.uuid4().hex[:8]}"
    prefix = settings.topic_prefix
    agent_topic, decisions, control = (f"{prefix}.{s}" for s in ("agent", "decisions", "control"))
    rows: list[tuple[str, int, int, Envelope]] = []
    offsets = {agent_topic: 0, decisions: 0, control: 0}
    minute = [0]

    def add(topic: str, kind: str, payload: dict[str, Any]) -> Envelope:
        minute[0] += 1
        ev = new_event(kind, payload, producer=agent,
                       occurred_at=T0 + timedelta(minutes=minute[0]))
        rows.append((topic, PART, offsets[topic], ev))
        offsets[topic] += 1
        return ev

    def task(i: int) -> None:
        add(agent_topic, "decision.requested", {"request_id": f"r{i}", "kind": "task_estimate",
                                                "context": {"task_id": f"t{i}", "project": "P"}})
        add(agent_topic, "task.completed", {"task_id": f"t{i}", "project": "P",
                                            "actual_points": float(i)})

    def decide(i: int, version: str, policy: str) -> Envelope:
        return add(decisions, "decision.made", {
            "request_id": f"d{i}", "kind": "task_estimate", "output": 3.0,
            "model_version": version, "policy": policy, "inputs_digest": "x", "features": {}})

    def step(frm: int, to: int, **extra: Any) -> Envelope:
        return add(control, "promotion.step_changed", {
            "agent_id": agent, "kind": "task_estimate", "from_step": frm, "to_step": to,
            "champion": "running_median:v1", "challenger": "knn_median:v2",
            "reason": "better", **extra})

    for i in range(3):
        task(i)
    enter = step(0, 5)
    canary = [decide(i, "knn_median:2", "canary") for i in range(2)]
    old_champion = [decide(i, "running_median:1", "champion") for i in range(2, 5)]
    ramp = [step(5, 25), step(25, 50)]
    task(3)
    last_learned = offsets[agent_topic] - 1  # the worker's applied offset at the 100 % step
    became = step(50, 100, promoted="knn_median:v3", manual=True, operator="alice")
    served = [decide(i, "knn_median:3", "champion") for i in range(5, 9)]
    task(4)  # after the snapshot: not learned by knn_median:3
    rolled = add(control, "promotion.rolled_back", {
        "agent_id": agent, "kind": "task_estimate", "from_step": 100,
        "champion": "running_median:v1", "challenger": "knn_median:v3", "reason": "pager"})
    archive = EventArchive(stack.database_url)
    archive.ensure_schema()
    assert archive.write(rows) == len(rows)
    archive.close()

    v3 = ModelRef("knn_median", 3, model_key(prefix, agent, ModelRef("knn_median", 3)))
    snap = b'{"learner": "knn_median", "state": "trained"}'
    reg = ModelRegistry(stack.mlflow_uri)
    learned = {f"{agent_topic}:{PART}": last_learned, f"{control}:{PART}": offsets[control] - 2}
    reg.register(agent, v3, snap, alias="champion", offsets=learned)
    reg.close()
    store = PolicyStore(redis.Redis.from_url(stack.redis_url), prefix)
    assert store.publish(LivePolicy(agent, "task_estimate", "live", v3, None, 0, 7), {v3: snap})
    return {"agent": agent, "enter": enter, "ramp": ramp, "became": became, "rolled": rolled,
            "canary": canary, "old": old_champion, "served": served, "topic": agent_topic,
            "settings": settings.model_copy(update={"topic_prefix": prefix}),
            "last_learned": last_learned}


def _lineage(h: dict[str, Any], stack: Addresses, *args: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, ["lineage", *args, "--json"],
                             env=worker_env(h["settings"], stack))
    assert res.exit_code == 0, res.output
    return dict(orjson.loads(res.output[res.output.index("{"):]))


def test_decision_lineage(history: dict[str, Any], stack: Addresses) -> None:
    h = history
    decision = h["served"][1]
    out = _lineage(h, stack, str(decision.event_id))
    d, m = out["decision"], out["model"]
    assert (d["decision_id"], d["model_version"], d["policy"]) == \
        (str(decision.event_id), "knn_median:3", "champion")
    assert d["archived_at"].endswith(f":{PART}@{5 + 1}")  # 2 canary + 3 old + this one
    assert m["snapshot"]["source"] == "redis" and len(m["snapshot"]["sha256"]) == 64
    reg = m["registry"]
    assert reg["found"] and reg["run_id"]
    assert reg["model"].startswith(f"models:/selflearn-{h['agent']}/")
    assert m["created_by"]["event_id"] == str(h["became"].event_id)
    assert m["learned_from"]["bound"].startswith("offsets")
    ranges = {r["type"]: r for r in m["learned_from"]["ranges"]}
    assert set(ranges) == {"decision.requested", "task.completed"}
    for r in ranges.values():  # tasks 0..3 (8 events at offsets 0..7), not task 4
        assert r["partition"] == f"{h['topic']}:{PART}" and r["events"] == 4
        assert r["last_offset"] <= h["last_learned"] == 7
    assert (ranges["decision.requested"]["first_offset"], ranges["task.completed"]["last_offset"]) \
        == (0, 7)
    # What made it live, up to the decision: its predecessor's canary, then 100 %.
    assert [(t["event_id"], t["role"]) for t in m["transitions"]] == [
        (str(h["enter"].event_id), "its predecessor's canary 0 → 5 %"),
        (str(h["ramp"][0].event_id), "its predecessor's canary 5 → 25 %"),
        (str(h["ramp"][1].event_id), "its predecessor's canary 25 → 50 %"),
        (str(h["became"].event_id), "became champion (100 %)")]
    assert m["transitions"][-1]["payload"]["operator"] == "alice"
    s = m["served"]
    assert s["decisions"] == 4 and set(s["by_policy"]) == {"champion"}
    assert [x["decision_id"] for x in s["first"]] == [str(e.event_id) for e in h["served"]]
    # The request id finds the same decision; the table form renders.
    assert _lineage(h, stack, "d6")["decision"]["decision_id"] == str(decision.event_id)
    res = CliRunner().invoke(app, ["lineage", "d6"], env=worker_env(h["settings"], stack))
    assert res.exit_code == 0 and "became" in res.output and "predecessor's" in res.output
    assert "Downloading artifacts" not in res.output  # no progress bar in a report


def test_model_version_lineage(history: dict[str, Any], stack: Addresses) -> None:
    h = history
    m = _lineage(h, stack, "--agent", h["agent"], "--model-version", "knn_median:2")["model"]
    assert m["served"]["decisions"] == 2 and set(m["served"]["by_policy"]) == {"canary"}
    assert m["created_by"]["event_id"] == str(h["enter"].event_id)
    assert not m["registry"]["found"] and m["snapshot"]["source"] == "missing"
    assert m["learned_from"]["bound"].startswith("event time")  # no registry offsets
    assert {r["events"] for r in m["learned_from"]["ranges"]} == {3}  # tasks 0..2
    roles = [t["role"] for t in m["transitions"]]
    assert roles == ["canary 0 → 5 %", "canary 5 → 25 %", "canary 25 → 50 %",
                     "promoted to 100 % as a new champion version"]
    v3 = _lineage(h, stack, "--agent", h["agent"], "--model-version", "knn_median:3")["model"]
    assert v3["transitions"][-1]["role"] == "rolled back (lost its traffic)"
    old = _lineage(h, stack, "--agent", h["agent"], "--model-version", "running_median:1")
    assert old["model"]["served"]["decisions"] == 3
    res = CliRunner().invoke(app, ["lineage", "no-such-decision"],
                             env=worker_env(h["settings"], stack))
    assert res.exit_code == 1 and "no decision.made" in res.output
