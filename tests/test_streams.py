"""The Faust worker against real servers: exact features, crash safety, scale-out, dead letters."""

from __future__ import annotations

import random
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from agents.client import AgentClient
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready
from projections.feature_store import OnlineFeatureStore
from projections.features import reference
from projections.memory import ShortTermMemory
from schemas import Envelope
from schemas.addresses import Addresses
from schemas.catalog import DEAD_LETTER, topic_name
from schemas.deadletter import parse_dead_letter
from schemas.settings import Settings
from tests.kafka_util import read_topic

AGENTS = [f"agent-{i}" for i in range(8)]


@pytest.fixture
def run(settings: Settings, stack: Addresses, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A fresh topic prefix per test, and cleanup of the workers it starts."""
    prefix = f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={"topic_prefix": prefix, "data_dir": tmp_path})
    workers: list[Spawned] = []
    yield {"settings": own, "workers": workers, "prefix": prefix}
    for w in workers:
        stop(w.pid, w.create_time, timeout=10)


def _worker(run: dict[str, object], stack: Addresses, name: str, *, ready: bool = True,
            **env: str) -> Spawned:
    log = Path(str(run["settings"].data_dir)) / f"{name}.log"  # type: ignore[attr-defined]
    w = start_worker(run["settings"], stack, log, **env)  # type: ignore[arg-type]
    run["workers"].append(w)  # type: ignore[attr-defined]
    if ready:
        wait_ready(w.log)
    return w


def _events(n: int, rng: random.Random) -> Iterator[tuple[str, str, dict[str, object]]]:
    for i in range(n):
        agent = AGENTS[i % 8]
        kind = rng.random()
        if kind < 0.5:
            yield agent, "task.completed", {
                "task_id": f"t{i}", "project": "mule", "actual_points": rng.choice([1, 2, 3, 5, 8]),
                "duration_s": round(rng.uniform(10, 5000), 3), "success": rng.random() < 0.7}
        elif kind < 0.8:
            yield agent, "review.completed", {
                "change_id": f"c{i}", "project": "Ant", "passed_first_try": rng.random() < 0.6}
        else:
            yield agent, "review.requested", {
                "change_id": f"c{i}", "project": "Ant",
                "metrics": {"la": rng.random(), "lt": rng.randint(1, 900), "nf": 2}}


def _emit_all(stack: Addresses, prefix: str, tmp: Path, n: int,
              pause_at: int | None = None, on_pause: object = None) -> list[Envelope]:
    clients = {a: AgentClient(a, bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                              outbox_path=tmp / f"{a}.db") for a in AGENTS}
    sent: list[Envelope] = []
    rng = random.Random(7)
    for i, (agent, etype, payload) in enumerate(_events(n, rng)):
        ev = clients[agent].emit(etype, payload)
        assert isinstance(ev, Envelope)
        sent.append(ev)
        if pause_at is not None and i == pause_at:
            for c in clients.values():
                assert c.flush(60)
            on_pause()  # type: ignore[operator]
    for c in clients.values():
        assert c.flush(60)
        c.close()
    return sent


def _wait_exact(store: OnlineFeatureStore, expected: dict[str, dict[str, float]],
                timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = {e: (store.get(e).counters if store.get(e) else {}) for e in expected}  # type: ignore[union-attr]
        done = all(got[e].get("n_complexity", 0) + got[e].get("n_outcomes", 0)
                   >= expected[e].get("n_complexity", 0) + expected[e].get("n_outcomes", 0)
                   for e in expected)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # anything extra (a double count) would have landed by now
    for entity, counters in expected.items():
        row = store.get(entity)
        assert row is not None, entity
        assert row.counters.keys() == counters.keys(), entity
        for k, v in counters.items():
            assert row.counters[k] == pytest.approx(v, rel=1e-9, abs=1e-6), (entity, k)


def _store(stack: Addresses, prefix: str) -> OnlineFeatureStore:
    return OnlineFeatureStore(redis.Redis.from_url(stack.redis_url), prefix=prefix)


def test_features_equal_direct_computation_and_bad_events_dead_letter(
    run: dict[str, object], stack: Addresses, tmp_path: Path
) -> None:
    prefix = str(run["prefix"])
    w = _worker(run, stack, "w1")
    sent = _emit_all(stack, prefix, tmp_path, 20_000)
    # 1 000 malformed events straight onto the topic, bypassing the SDK's checks.
    bad = AgentClient("raw-writer", bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                      outbox_path=tmp_path / "raw.db")
    for i in range(1000):
        value = b"{not json" if i % 2 else orjson.dumps({"type": "task.completed", "x": i})
        bad._submit(topic_name(prefix, "agent"), value)  # noqa: SLF001 - bypass validation
    assert bad.flush(60)
    bad.close()
    _wait_exact(_store(stack, prefix), reference(sent))
    dead = read_topic(stack.kafka_bootstrap, topic_name(prefix, DEAD_LETTER), expect=1000)
    records = [parse_dead_letter(v or b"") for _, _, v in dead]
    assert len(records) == 1000
    assert {r["reason"] for r in records} == {"malformed", "missing_field"}
    assert all(r["topic"] == topic_name(prefix, "agent") and r["offset"] is not None
               for r in records)
    assert b"Traceback" not in w.log.read_bytes()  # the worker kept running


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
    run: dict[str, object], stack: Addresses, tmp_path: Path
) -> None:
    prefix = str(run["prefix"])
    w = _worker(run, stack, "w1")
    store = _store(stack, prefix)
    restarted: list[Spawned] = []

    def crash_and_restart() -> None:
        deadline = time.monotonic() + 60
        while sum((r.version if (r := store.get(f"agent:{a}")) else 0) for a in AGENTS) < 3000:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop(w.pid, w.create_time, sig=signal.SIGKILL, timeout=10)
        restarted.append(_worker(run, stack, "w2", ready=False))

    sent = _emit_all(stack, prefix, tmp_path, 20_000, pause_at=10_000, on_pause=crash_and_restart)
    wait_ready(restarted[0].log)
    _wait_exact(store, reference(sent))


def test_two_workers_split_partitions_and_agree(
    run: dict[str, object], stack: Addresses, tmp_path: Path
) -> None:
    prefix = str(run["prefix"])
    first = _worker(run, stack, "w1", ready=False)
    second = _worker(run, stack, "w2", ready=False)
    wait_ready(first.log)
    wait_ready(second.log)
    sent = _emit_all(stack, prefix, tmp_path, 20_000)
    _wait_exact(_store(stack, prefix), reference(sent))
    # Each worker's intake ends up owning a share, not all 40 topic partitions.
    owned = [re.findall(rb"assigned (\d+) partitions", w.log.read_bytes()) for w in (first, second)]
    assert all(owned), owned
    assert [int(o[-1]) for o in owned] == [20, 20], owned


def test_the_faust_stream_intake_is_exact_too(
    run: dict[str, object], stack: Addresses, tmp_path: Path
) -> None:
    prefix = str(run["prefix"])
    _worker(run, stack, "w1", SELFLEARN_INTAKE="stream")
    sent = _emit_all(stack, prefix, tmp_path, 8_000)
    _wait_exact(_store(stack, prefix), reference(sent))


def test_short_term_memory_is_bounded_oldest_first_with_ttl(
    stack: Addresses, settings: Settings
) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    memory = ShortTermMemory(r, prefix=f"{settings.topic_prefix}-mem", max_entries=100_000,
                             ttl_s=24 * 3600)
    for start in range(0, 150_000, 5_000):
        memory.remember_many([(AGENTS[i % 8], f"e{i}", {"i": i})
                              for i in range(start, start + 5_000)])
    assert memory.size() == 100_000
    alive = [memory.recall(a, n=200_000) for a in AGENTS]
    kept = sorted(e["i"] for entries in alive for e in entries)
    assert kept == list(range(50_000, 150_000))  # the oldest 50 000 went first
    key = f"{settings.topic_prefix}-mem:m:{{agent-3}}:e:e149995"
    assert 0 < r.ttl(key) <= 24 * 3600
