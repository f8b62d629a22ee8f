"""``selflearn bench pipeline``: events from the SDK to features in Redis, one Faust worker.

``events_per_s``: 8 agents emit ``N`` events as fast as they can; the clock
stops when the worker has applied the last one to the online store.
``lag_p99_ms``: at a steady ``LAG_RATE_PER_S``, how far the store trails the
newest emitted event (now minus the event time of the newest applied event,
sampled every 10 ms).
``events_per_s_review`` / ``events_per_s_review_sealed``: ``N_REVIEW`` events
with personal text (``review.requested`` with its ``author``), emitted as
fast as possible by clients without and with per-subject encryption (pattern
detector, sealing on each client's producer thread): what encryption costs
end to end (the plain ``task.completed`` events above carry no personal field).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from agents.client import AgentClient
from ops.benches._common import percentile, running_stack
from ops.stack.processes import stop
from ops.stack.workers import start_worker, wait_ready
from projections.feature_store import OnlineFeatureStore
from projections.redis_client import redis_client
from schemas.protect import Protector, detector_for, key_store
from schemas.settings import Settings

AGENTS = [f"agent-{i}" for i in range(8)]
N = 60_000
LAG_RATE_PER_S = 5_000
LAG_SECONDS = 6
N_REVIEW = 24_000
AUTHORS = 500  # data subjects the review requests are spread over


def _payload(agent: str, i: int) -> dict[str, object]:
    return {"task_id": f"{agent}-{i}", "project": "bench", "actual_points": i % 8,
            "duration_s": float(i % 600), "success": i % 3 != 0}


def _review(i: int) -> dict[str, object]:
    who = i % AUTHORS
    return {"change_id": f"c-{i}", "project": "bench", "author": f"Dev {who} <d{who}@example.org>",
            "metrics": {"la": float(i % 50), "lt": float(100 + i % 900)}}


def _review_rate(settings: Settings, bootstrap: str, store: OnlineFeatureStore,
                 sealed: bool) -> float:
    """Events/s of N_REVIEW review requests from SDK to features, sealed or not."""
    protector = Protector(key_store(settings), detector_for("pattern")) if sealed else None
    clients = [AgentClient(a, bootstrap=bootstrap, topic_prefix=settings.topic_prefix,
                           outbox_path=Path(settings.data_dir) / f"{a}-review-{sealed}.db",
                           protector=protector)
               for a in AGENTS]
    for i in range(AUTHORS):  # keys made before the clock starts (a new key is a commit)
        if protector is not None:
            protector.keys.data_key(f"dev-{i}")
    before = _applied(store)[0]
    start = time.perf_counter()
    for i in range(N_REVIEW // len(clients)):
        for c in clients:
            c.emit("review.requested", _review(i), subject_id=f"dev-{i % AUTHORS}")
    while _applied(store)[0] < before + N_REVIEW:
        time.sleep(0.01)
    rate = N_REVIEW / (time.perf_counter() - start)
    for c in clients:
        c.close()
    return rate


def _applied(store: OnlineFeatureStore) -> tuple[int, int]:
    total, newest = 0, 0
    for agent in AGENTS:
        row = store.get(f"agent:{agent}")
        if row is not None:
            total += row.version
            newest = max(newest, row.as_of_us)
    return total, newest


def run() -> dict[str, float]:
    with running_stack() as (settings, addresses):
        log = Path(settings.data_dir) / "worker.log"
        worker = start_worker(settings, addresses, log)
        try:
            wait_ready(log)
            store = OnlineFeatureStore(redis_client(addresses.redis_url),
                                       prefix=settings.topic_prefix)
            clients = [AgentClient(a, bootstrap=addresses.kafka_bootstrap,
                                   topic_prefix=settings.topic_prefix,
                                   outbox_path=Path(settings.data_dir) / f"{a}.db")
                       for a in AGENTS]
            # Throughput: everything at once.
            start = time.perf_counter()
            for i in range(N // len(clients)):
                for c in clients:
                    c.emit("task.completed", _payload(c.agent_id, i))
            while _applied(store)[0] < N:
                time.sleep(0.01)
            events_per_s = N / (time.perf_counter() - start)
            # Lag: a steady rate, sampling the freshness of the store.
            lags: list[float] = []
            begin = time.perf_counter()
            sent = 0
            next_sample = begin
            while time.perf_counter() - begin < LAG_SECONDS:
                due = int((time.perf_counter() - begin) * LAG_RATE_PER_S)
                while sent < due:
                    c = clients[sent % len(clients)]
                    c.emit("task.completed", _payload(c.agent_id, N + sent))
                    sent += 1
                now = time.perf_counter()
                if now >= next_sample and now - begin > 1.0:  # skip the ramp-up second
                    newest = _applied(store)[1]
                    lags.append(max(0.0, time.time() * 1000 - newest / 1000))
                    next_sample = now + 0.01
                time.sleep(0.0005)
            for c in clients:
                c.close()
            review = _review_rate(settings, addresses.kafka_bootstrap, store, sealed=False)
            review_sealed = _review_rate(settings, addresses.kafka_bootstrap, store, sealed=True)
        finally:
            stop(worker.pid, worker.create_time, timeout=10)
    return {
        "events_per_s": round(events_per_s),
        "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p99_ms": round(percentile(lags, 99), 1),
        "events": float(N),
        "events_per_s_review": round(review),
        "events_per_s_review_sealed": round(review_sealed),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
