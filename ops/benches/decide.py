"""``selflearn bench decide``: decision latency with a warm read model, alone and while learning.

Each decision is ``AgentClient.decide`` as an agent calls it: canary routing,
a kNN-median model on real issue text, the input digest, and the two events
handed to the background producer. ``p99_us_while_learning`` runs the same
loop while ``ops.benches.learn_load`` learns at full speed in another process,
at the CPU priority the worker runs with (``SELFLEARN_WORKER_NICE``, default 10).
``*_sealed`` keys: the same with per-subject encryption on (what
``AgentClient.from_settings`` does by default): the context's personal text is
sealed on the producer thread (pattern PII detection + AES-GCM), so the caller
pays only for queueing; ``emit_*`` times ``emit("task.estimated")`` alone.
Decisions are issued at ``RATE_PER_S`` (40x the seed's load), not back to back:
a closed loop would measure the producer thread saturating the GIL with
40 000 events/s, not the latency an agent sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agents.client import AgentClient
from ops.benches._common import percentile, running_stack
from ops.data import data_path
from ops.metrics import decision_observer
from projections.datasets import read_storypoints, storypoint_projects
from projections.learners import TASK_LEARNERS
from projections.redis_client import RedisClient, redis_client
from schemas.policy import LivePolicy, ModelRef, model_key, policy_key

AGENT = "task-estimator"
N = 20_000
# 40x the seed's 50 decisions/s; each decision also hands two events to the producer.
RATE_PER_S = 2_000


def _contexts() -> list[dict[str, Any]]:
    folder = data_path("storypoints")
    project = storypoint_projects(folder)[0]
    rows = read_storypoints(folder, project)
    return [{"task_id": r.issuekey, "project": r.project, "title": r.title,
             "description": r.description[:600]} for r in rows]


def _publish(r: RedisClient, prefix: str, contexts: list[dict[str, Any]]) -> None:
    """A champion and a canary challenger, trained on the first 2 000 real issues."""
    rows = read_storypoints(data_path("storypoints"), contexts[0]["project"])[:2000]
    refs = []
    for name in ("running_median", "knn_median"):
        learner = TASK_LEARNERS[name]()
        for row in rows:
            learner.learn_one({"project": row.project, "title": row.title,
                               "description": row.description}, row.storypoint)
        ref = ModelRef(name, 1, model_key(prefix, AGENT, ModelRef(name, 1)))
        r.set(ref.snapshot_key, learner.snapshot())  # type: ignore[arg-type]
        refs.append(ref)
    policy = LivePolicy(AGENT, "task_estimate", "live", champion=refs[0], challenger=refs[1],
                        canary_percent=25, revision=1)
    r.set(policy_key(prefix, AGENT), policy.to_bytes())


def _measure(client: AgentClient, contexts: list[dict[str, Any]], n: int,
             emit: bool = False) -> list[float]:
    """Latency of ``n`` decisions (or emits) issued at RATE_PER_S (open loop, like agents do)."""
    lat = []
    start = time.perf_counter()
    for i in range(n):
        pause = start + i / RATE_PER_S - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        ctx = contexts[i % len(contexts)]
        subject = f"r-{i % 500}"  # a pseudonymous reporter per issue (keys cached after first)
        t = time.perf_counter_ns()
        if emit:
            client.emit("task.estimated", {**ctx, "estimate": 3.0}, subject_id=subject)
        else:
            client.decide(ctx, request_id=f"req-{i}", subject_id=subject)
        lat.append((time.perf_counter_ns() - t) / 1000)
    return lat


def _sealed(settings: Any, addresses: Any) -> dict[str, float]:
    """Decide and emit with per-subject encryption on (file key store, pattern detector)."""
    from schemas.protect import Protector, detector_for, key_store

    keys = key_store(settings)
    client = AgentClient(AGENT, bootstrap=addresses.kafka_bootstrap,
                         topic_prefix=settings.topic_prefix, decision_kind="task_estimate",
                         redis_url=addresses.redis_url,
                         outbox_path=Path(settings.data_dir) / "outbox-sealed.db",
                         protector=Protector(keys, detector_for("pattern")))
    deadline = time.monotonic() + 10
    while client.engine.policy is None and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    contexts = _contexts()
    _measure(client, contexts, 2000)  # warm-up: every subject's key made and cached
    sealed = _measure(client, contexts, N)
    emits = _measure(client, contexts, N, emit=True)
    client.close(timeout=10)
    return {"p50_us_sealed": round(percentile(sealed, 50), 1),
            "p99_us_sealed": round(percentile(sealed, 99), 1),
            "emit_p50_us_sealed": round(percentile(emits, 50), 1),
            "emit_p99_us_sealed": round(percentile(emits, 99), 1)}


def run() -> dict[str, float]:
    contexts = _contexts()
    with running_stack() as (settings, addresses):
        r = redis_client(addresses.redis_url)
        _publish(r, settings.topic_prefix, contexts)
        client = AgentClient(AGENT, bootstrap=addresses.kafka_bootstrap,
                             topic_prefix=settings.topic_prefix, decision_kind="task_estimate",
                             redis_url=addresses.redis_url,
                             outbox_path=Path(settings.data_dir) / "outbox.db",
                             on_decision=decision_observer(AGENT))
        deadline = time.monotonic() + 10
        while client.engine.policy is None and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        _measure(client, contexts, 2000)  # warm-up
        alone = _measure(client, contexts, N)
        emits = _measure(client, contexts, N, emit=True)
        # Learning runs as deployed: at the worker's lower CPU priority (streams.worker).
        nice = settings.worker_nice
        load = subprocess.Popen([sys.executable, "-m", "ops.benches.learn_load"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: os.nice(nice))  # noqa: PLW1509
        try:
            time.sleep(3)  # let the learner reach full speed
            loaded = _measure(client, contexts, N)
        finally:
            load.kill()
            load.wait()
        client.close(timeout=5)
        sealed = _sealed(settings, addresses)
    return {
        "emit_p50_us": round(percentile(emits, 50), 1),
        "emit_p99_us": round(percentile(emits, 99), 1),
        **sealed,
        "p50_us": round(percentile(alone, 50), 1),
        "p95_us": round(percentile(alone, 95), 1),
        "p99_us": round(percentile(alone, 99), 1),
        "p50_us_while_learning": round(percentile(loaded, 50), 1),
        "p99_us_while_learning": round(percentile(loaded, 99), 1),
        "decisions": float(N),
        "rate_per_s": float(RATE_PER_S),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
