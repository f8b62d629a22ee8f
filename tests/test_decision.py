"""The decision engine: deterministic, answers from memory, falls back instead of failing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from agents.client import AgentClient
from agents.decision import LEARNERS, DecisionEngine, new_learner
from schemas import decode
from schemas.addresses import Addresses
from schemas.catalog import topic_name
from schemas.policy import LivePolicy, ModelRef, bucket, model_key, policy_key
from schemas.settings import Settings
from tests.kafka_util import read_topic

AGENT = "code-reviewer"
CTX = {"change_id": "c1", "project": "Ant", "la": 0.2, "lt": 300.0, "nf": 3.0, "ns": 1.0,
       "nm": 1.0, "entropy": 0.5, "ld": 0.1, "fix": 0.0, "ndev": 4.0, "pd": 10.0, "npt": 2.0,
       "exp": 40.0, "rexp": 3.0, "sexp": 20.0}


def _publish(r: redis.Redis, prefix: str, canary: int, revision: int) -> LivePolicy:
    champion = ModelRef("size_heuristic", 1)
    challenger_learner = new_learner("review_risk", "logistic")
    for i in range(50):
        challenger_learner.learn_one({**CTX, "la": i / 50}, float(i % 2))
    challenger = ModelRef("logistic", 2, model_key(prefix, AGENT, ModelRef("logistic", 2)))
    r.set(challenger.snapshot_key, challenger_learner.snapshot())  # type: ignore[arg-type]
    policy = LivePolicy(AGENT, "review_risk", "live", champion, challenger, canary, revision)
    r.set(policy_key(prefix, AGENT), policy.to_bytes())
    return policy


def _wait_revision(engine: DecisionEngine, revision: int) -> None:
    deadline = time.monotonic() + 10
    while (engine.policy is None or engine.policy.revision < revision):
        assert time.monotonic() < deadline, "read model never refreshed"
        time.sleep(0.02)


def test_same_inputs_same_version_same_output_bit_for_bit(stack: Addresses,
                                                          settings: Settings) -> None:
    prefix = f"{settings.topic_prefix}-det"
    r = redis.Redis.from_url(stack.redis_url)
    _publish(r, prefix, canary=50, revision=1)
    a = DecisionEngine(AGENT, "review_risk", redis_url=stack.redis_url, prefix=prefix,
                       refresh_s=0.05)
    b = DecisionEngine(AGENT, "review_risk", redis_url=stack.redis_url, prefix=prefix,
                       refresh_s=0.05)
    _wait_revision(a, 1)
    _wait_revision(b, 1)
    for i in range(300):
        rid = f"req-{i}"
        da, db = a.decide(CTX, request_id=rid), b.decide(dict(CTX), request_id=rid)
        assert (da.output, da.model_version, da.policy, da.inputs_digest) == (
            db.output, db.model_version, db.policy, db.inputs_digest)
        assert da.policy == ("canary" if bucket(rid) < 50 else "champion")
    assert {a.decide(CTX, request_id=f"req-{i}").policy for i in range(300)} == {"canary",
                                                                               "champion"}
    a.close()
    b.close()


def test_redis_down_serves_last_good_policy_then_baseline(settings: Settings) -> None:
    # A "server" that accepts connections and never answers: any call would hang.
    hole = socket.create_server(("127.0.0.1", 0))
    engine = DecisionEngine(AGENT, "review_risk", stale_after_s=0.2,
                            redis_url=f"redis://127.0.0.1:{hole.getsockname()[1]}/0")
    started = time.perf_counter()
    first = engine.decide(CTX, request_id="r1")
    # The refresher is stuck on the silent server; the decision did not wait for it
    # (a read on that socket blocks for the full 1 s timeout).
    assert time.perf_counter() - started < 0.5
    assert first.policy == "baseline" and first.model_version == "size_heuristic:0"
    policy = LivePolicy(AGENT, "review_risk", "live", ModelRef("logistic", 3), revision=4)
    engine.install(policy, {}, {})
    assert engine.decide(CTX, request_id="r2").policy == "champion"
    time.sleep(0.3)  # nothing refreshed it since: stale
    stale = engine.decide(CTX, request_id="r3")
    assert stale.policy == "fallback" and stale.model_version == "logistic:3"
    engine.close()
    hole.close()


class _Broken:
    name = "broken"

    def predict_one(self, x: dict[str, object]) -> float:
        raise ZeroDivisionError("a model bug")


def test_a_broken_model_falls_back_to_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LEARNERS["review_risk"], "broken", _Broken)
    engine = DecisionEngine(AGENT, "review_risk", redis_url=None)
    policy = LivePolicy(AGENT, "review_risk", "live", ModelRef("broken", 1), revision=1)
    engine.install(policy, {}, {})
    d = engine.decide(CTX, request_id="x")
    assert (d.policy, d.model_version) == ("baseline", "size_heuristic:0")
    engine.close()


def test_client_decide_logs_request_and_decision(stack: Addresses, settings: Settings,
                                                 tmp_path: Path) -> None:
    prefix = f"{settings.topic_prefix}-dec"
    client = AgentClient(AGENT, bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                         decision_kind="review_risk", redis_url=stack.redis_url,
                         outbox_path=tmp_path / "o.db")
    decisions = [client.decide(CTX) for _ in range(20)]
    assert client.flush(30)
    client.close()
    records = (read_topic(stack.kafka_bootstrap, topic_name(prefix, "decisions"), expect=20)
               + read_topic(stack.kafka_bootstrap, topic_name(prefix, "agent"), expect=20))
    events = [decode(v) for _, _, v in records]
    made = {e.payload["request_id"]: e for e in events if e.type == "decision.made"}
    requested = {e.payload["request_id"]: e for e in events if e.type == "decision.requested"}
    assert set(made) == set(requested) == {d.request_id for d in decisions}
    for d in decisions:
        assert made[d.request_id].payload["inputs_digest"] == d.inputs_digest
        assert made[d.request_id].payload["output"] == d.output
        assert made[d.request_id].causation_id == str(requested[d.request_id].event_id)


def test_canary_bucket_is_the_same_in_another_process() -> None:
    # Python's own hash() of a string is salted per process; a replay or an auditor
    # in another process must route every request exactly as the live agent did.
    rids = [f"request-{i}" for i in range(200)] + ["ü-ñ"]
    code = ("import json, sys; from schemas.policy import bucket; "
            "print(json.dumps([bucket(r) for r in json.loads(sys.argv[1])]))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(rids)], check=True,
                           capture_output=True, text=True, env={**os.environ,
                                                                "PYTHONHASHSEED": "random"})
    here = [bucket(r) for r in rids]
    assert json.loads(other.stdout) == here
    assert all(0 <= b < 100 for b in here) and len(set(here)) > 50  # spread over the range
