"""Redis Cluster: the worker, the decision engine and the CLI on three primaries with replicas.

Six Debian ``redis-server`` processes in cluster mode on loopback (three
primaries, one replica each), reached through ``redis+cluster://``. Agents
emit and decide while a primary is killed (``kill -9``): its replica is
promoted, the worker retries through the failover, and with
``SELFLEARN_REDIS_MIN_REPLICAS=1`` nothing is acknowledged to the broker
before a replica holds it, so no acknowledged write dies with the primary.
The killed node comes back as a replica (so acknowledgements resume), and
the one checker reports every event exactly once in features, memory and
the archive. ``selflearn status`` reads the cluster too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.stack.redis_cluster import RedisClusterNodes, wait_failover
from ops.stack.workers import worker_env
from ops.usecases.verify import Lab, check
from projections.feature_store import OnlineFeatureStore
from projections.policy_store import PolicyStore
from projections.redis_client import is_cluster, redis_client
from schemas.addresses import Addresses
from schemas.settings import Settings
from tests.reliability.harness import explain
from tests.reliability.private import REVIEW_CONTEXT, Traffic, recorded

pytestmark = pytest.mark.skipif(not Path("/usr/bin/redis-server").exists(),
                                reason="needs the system redis-server (cluster mode)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield nodes.start()
    finally:
        nodes.close()


@pytest.fixture
def lab(settings: Settings, stack: Addresses, cluster: RedisClusterNodes,
        tmp_path: Path) -> Iterator[Lab]:
    world = Lab.create(settings, Addresses(stack.kafka_bootstrap, stack.database_url,
                                           cluster.url, stack.mlflow_uri), tmp_path)
    yield world
    world.close()


def test_cluster_client_for_the_cluster_scheme(cluster: RedisClusterNodes) -> None:
    r = redis_client(cluster.url)
    assert is_cluster(r) and len(r.get_primaries()) == 3
    assert not is_cluster(redis_client(f"redis://127.0.0.1:{cluster.ports[0]}/0"))


def test_primary_killed_mid_stream_fails_over_without_loss(
        lab: Lab, cluster: RedisClusterNodes) -> None:
    lab.worker("w1", SELFLEARN_REDIS_MIN_REPLICAS="1")
    clients = [lab.client(f"agent-{i}") for i in range(4)]
    decider = lab.client("code-reviewer", decision_kind="review_risk",
                         redis_url=lab.addresses.redis_url)
    decided: list = []
    recorded(decider, decided)
    traffic = Traffic(clients, rate=200, limit=40_000).start()
    traffic.wait(1500)
    answers = [decider.decide({**REVIEW_CONTEXT, "change_id": f"c{i}"}) for i in range(20)]

    victim = cluster.primary_ports()[0]
    cluster.kill(victim)  # mid-stream: the worker is writing to every primary
    took = wait_failover(cluster, victim)
    traffic.wait(len(traffic.sent) + 1000)
    answers += [decider.decide({**REVIEW_CONTEXT, "change_id": f"d{i}"}) for i in range(20)]
    cluster.start_node(victim)  # back empty, as a replica: acknowledgements resume
    cluster.wait_healthy()
    assert cluster.roles()[victim] == "slave"
    traffic.wait(len(traffic.sent) + 1000)

    sent = traffic.stop() + decided
    assert decider.flush(60)
    verdict = check(lab, sent, timeout=120)
    assert verdict.clean(), (verdict, explain(lab, sent), took)
    assert len(answers) == 40 and all(a.model_version for a in answers)

    # the worker published the deciding agent's policy into the cluster; the engine loads it
    store = PolicyStore(redis_client(lab.addresses.redis_url), lab.prefix)
    deadline = time.monotonic() + 60
    while decider.engine is not None and decider.engine.policy is None:
        assert time.monotonic() < deadline, "the read model never loaded the live policy"
        decider.decide(REVIEW_CONTEXT)
        time.sleep(0.2)
    live = store.get("code-reviewer")
    assert live is not None and decider.engine is not None
    assert decider.engine.policy is not None
    assert decider.engine.policy.revision <= live.revision
    assert decider.decide(REVIEW_CONTEXT).policy in {"champion", "canary"}
    features = OnlineFeatureStore(redis_client(lab.addresses.redis_url), prefix=lab.prefix)
    assert features.entities()  # SCAN over every primary


def test_status_reads_the_cluster(lab: Lab, cluster: RedisClusterNodes) -> None:
    lab.worker("w1")
    c = lab.client("agent-s")
    for i in range(50):
        c.emit("task.completed", {"task_id": f"s{i}", "project": "mule",
                                  "actual_points": 3.0, "duration_s": 10.0, "success": True})
    assert c.flush(30)
    env = {**os.environ, **worker_env(lab.settings, lab.addresses)}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    redis_info = report["servers"]["redis"]
    assert redis_info["address"] == cluster.url and redis_info["reachable"], redis_info
    assert report["fleet"]["lost_events"] == 0
