"""Network faults through the fault proxy: latency with jitter, blackholes, resets mid-request.

Three paths, each faulted on its own while agents emit and decide: worker ↔
broker and SDK ↔ broker (a private broker advertises the proxy, so every
connection goes through it; the proxy faults only the worker's or only the
SDK's connections), and worker ↔ Redis. A blackhole lasts longer than the
consumer's session timeout and the SDK's request timeout, so the worker is
evicted from its group and the SDK re-sends; nothing may be lost or counted
twice.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from agents.client import AgentClient
from schemas.addresses import Addresses
from schemas.settings import Settings
from tests.reliability.faultproxy import FaultProxy, from_process, not_from_process
from tests.reliability.harness import Lab, check, explain
from tests.reliability.private import ProxiedBroker, Traffic

SEED = int(os.environ.get("FAULT_SEED", "1515"))


def _faults(proxy: FaultProxy, traffic: Traffic, *, blackhole_s: float) -> None:
    """The schedule: jittery latency, resets after a few KB, a blackhole, then calm."""
    phases = [
        ("latency", lambda: proxy.latency(0.04, 0.035), 4.0),
        ("resets", lambda: proxy.reset_after(48 * 1024), 4.0),
        ("blackhole", lambda: proxy.blackhole(), blackhole_s),
    ]
    for _name, start, seconds in phases:
        start()
        time.sleep(seconds)
        proxy.clear()
        time.sleep(1.5)
    assert traffic.sent, "no traffic"


def _clients(lab: Lab) -> list[AgentClient]:
    agents = [lab.client(f"agent-{i}") for i in range(4)]
    decider = lab.client("code-reviewer", decision_kind="review_risk",
                         redis_url=lab.addresses.redis_url)
    return [*agents, decider]


@pytest.mark.parametrize("who", ["worker", "sdk"])
def test_faults_between_broker_and_its_clients_lose_nothing(
    settings: Settings, stack: Addresses, tmp_path: Path, who: str
) -> None:
    me = os.getpid()  # the SDK clients live in this process, the worker in its own
    affects = from_process(me) if who == "sdk" else not_from_process(me)
    broker = ProxiedBroker(tmp_path, seed=SEED, affects=affects).start()
    lab = Lab.create(settings, dataclasses.replace(stack, kafka_bootstrap=broker.address),
                     tmp_path)
    try:
        worker = lab.worker("w1")
        clients = _clients(lab)
        traffic = Traffic(clients, rate=300, limit=30_000, seed=SEED).start()
        traffic.wait(500)
        _faults(broker.proxy, traffic, blackhole_s=8.0)
        sent = traffic.stop()
        verdict = check(lab, sent, timeout=120)
        assert verdict.clean(), (verdict, explain(lab, sent))
        # The faults reached the side they were meant for, and only that side.
        assert broker.proxy.resets > 0
        failures = sum(c.stats.send_failures for c in clients)
        broken = b"Connection at" in worker.log.read_bytes()
        assert (failures > 0, broken) == ((True, False) if who == "sdk" else (False, True))
    finally:
        lab.close()
        broker.close()


def test_faults_between_worker_and_redis_lose_nothing(lab: Lab) -> None:
    host, port = lab.addresses.redis_url.split("//")[1].split("/")[0].split(":")
    with FaultProxy((host, int(port)), seed=SEED) as proxy:
        lab.worker("w1", SELFLEARN_REDIS_URL=f"redis://{proxy.address}/0")
        traffic = Traffic(_clients(lab), rate=300, limit=30_000, seed=SEED).start()
        traffic.wait(500)
        _faults(proxy, traffic, blackhole_s=5.0)
        sent = traffic.stop()
        verdict = check(lab, sent, timeout=120)
        assert proxy.resets > 0
        assert verdict.clean(), (verdict, explain(lab, sent))
