"""The agent SDK against a real broker: nothing lost, order kept, bad input kept aside."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson

from agents.client import AgentClient, Rejected
from ops.stack.processes import free_port, port_open, stop
from ops.stack.servers import kafka_address, start_kafka
from schemas import Envelope, decode
from schemas.addresses import Addresses
from schemas.catalog import DEAD_LETTER, topic_name
from schemas.deadletter import original_bytes, parse_dead_letter
from schemas.settings import Settings
from tests.kafka_util import read_topic


def _clients(bootstrap: str, prefix: str, tmp: Path, n: int = 8) -> list[AgentClient]:
    return [
        AgentClient(f"agent-{i}", bootstrap=bootstrap, topic_prefix=prefix,
                    outbox_path=tmp / f"outbox-{i}.db")
        for i in range(n)
    ]


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _task(agent: str, n: int) -> dict[str, object]:
    return {"task_id": f"{agent}-{n}", "project": "mule", "actual_points": n % 13}


def test_10000_events_from_8_agents_come_back_in_order(
    stack: Addresses, settings: Settings, tmp_path: Path
) -> None:
    prefix = f"{settings.topic_prefix}-sdk"
    clients = _clients(stack.kafka_bootstrap, prefix, tmp_path)
    for n in range(1250):
        for c in clients:
            assert c.emit("task.completed", _task(c.agent_id, n))
    assert all(c.flush(60) for c in clients)
    records = read_topic(stack.kafka_bootstrap, topic_name(prefix, "agent"), expect=10_000)
    for c in clients:
        c.close()
    events = [decode(v) for _, _, v in sorted(records)]
    assert len(events) == 10_000
    assert len({e.event_id for e in events}) == 10_000
    per_agent: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for (partition, _, _), e in zip(sorted(records), events, strict=True):
        per_agent[e.producer].append(int(e.payload["task_id"].split("-")[-1]))
        partitions[e.producer].add(partition)
    assert set(per_agent) == {f"agent-{i}" for i in range(8)}
    for agent, seq in per_agent.items():
        assert seq == list(range(1250)), agent
        assert len(partitions[agent]) == 1  # keyed by agent id


def test_broker_down_for_10s_loses_nothing(tmp_path: Path, settings: Settings) -> None:
    port = free_port()
    bootstrap = kafka_address(port)
    broker = start_kafka(tmp_path, port, tmp_path / "kafka.log")
    _wait(lambda: port_open("127.0.0.1", port), timeout=10)
    prefix = f"{settings.topic_prefix}-outage"
    topic = topic_name(prefix, "agent")
    clients = _clients(bootstrap, prefix, tmp_path)
    emitted: list[str] = []
    stop_emitting = threading.Event()

    def emit_steadily() -> None:
        n = 0
        while not stop_emitting.is_set():
            for c in clients:
                ev = c.emit("task.completed", _task(c.agent_id, n))
                assert not isinstance(ev, Rejected)
                emitted.append(str(ev.event_id))
            n += 1
            time.sleep(0.002)

    before: list[tuple[int, int, bytes | None]] = []
    worker = threading.Thread(target=emit_steadily)
    worker.start()
    try:
        time.sleep(1.0)
        # Phase 1 is on the broker; collect it before the (in-memory) broker dies.
        stop_emitting.set()
        worker.join()
        assert all(c.flush(30) for c in clients)
        before = read_topic(bootstrap, topic, expect=len(emitted))
        stop_emitting.clear()
        worker = threading.Thread(target=emit_steadily)
        worker.start()
        time.sleep(0.5)
        stop(broker.pid, broker.create_time, timeout=5)
        time.sleep(10)  # emitting goes on while the broker is away
        assert any(len(c._outbox) for c in clients)  # noqa: SLF001 - events wait durably
        broker = start_kafka(tmp_path, port, tmp_path / "kafka.log")
        _wait(lambda: port_open("127.0.0.1", port), timeout=10)
        time.sleep(1.0)
    finally:
        stop_emitting.set()
        worker.join()
    try:
        assert all(c.flush(60) for c in clients)
        wanted = set(emitted) - {str(decode(v).event_id) for _, _, v in before}
        after = read_topic(bootstrap, topic, timeout=30,
                           until=lambda got: len(got) >= len(wanted)
                           and wanted <= {str(decode(v).event_id) for _, _, v in got})
    finally:
        for c in clients:
            c.close()
        stop(broker.pid, broker.create_time, timeout=5)
    seen = [str(decode(v).event_id) for _, _, v in before + after]
    assert set(seen) == set(emitted)  # every event, exactly once after de-duplication
    assert len(emitted) > 1000


def test_bad_input_is_rejected_never_raised_and_kept(
    stack: Addresses, settings: Settings, tmp_path: Path
) -> None:
    prefix = f"{settings.topic_prefix}-bad"
    client = AgentClient("agent-bad", bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                         outbox_path=tmp_path / "o.db")
    unknown = client.emit("no.such.type", {"x": 1})
    missing = client.emit("task.completed", {"task_id": "t"})
    garbage = client.emit_raw(b"\xff\xfe not json")
    huge = client.emit("task.estimated", {"task_id": "t", "project": "p", "title": "x" * 300_000,
                                          "description": "", "estimate": 1.0})
    good = client.emit("task.completed", _task("agent-bad", 1))
    assert isinstance(unknown, Rejected) and unknown.reason == "unknown_type"
    assert isinstance(missing, Rejected) and missing.reason == "missing_field"
    assert isinstance(garbage, Rejected) and garbage.reason == "malformed"
    assert isinstance(huge, Rejected) and huge.reason == "too_large"
    assert isinstance(good, Envelope) and good.sequence == 0  # rejects leave no gap
    assert client.flush(30)
    client.close()
    dead = read_topic(stack.kafka_bootstrap, topic_name(prefix, DEAD_LETTER), expect=4)
    records = [parse_dead_letter(v or b"") for _, _, v in dead]
    assert sorted(r["reason"] for r in records) == ["malformed", "missing_field", "too_large",
                                                    "unknown_type"]
    too_large = next(r for r in records if r["reason"] == "too_large")
    # Personal fields never reach a dead letter: the 300 000-character title is withheld.
    assert b"x" * 100 not in original_bytes(too_large)
    assert b"\xff\xfe not json" in [original_bytes(r) for r in records]
    assert any(orjson.loads(original_bytes(r)).get("type") == "no.such.type"
               for r in records if r["reason"] == "unknown_type")


def test_emit_does_not_wait_for_an_unreachable_broker(tmp_path: Path) -> None:
    client = AgentClient("agent-alone", bootstrap=kafka_address(free_port()),
                         outbox_path=tmp_path / "o.db")
    try:
        for n in range(2000):
            client.emit("task.completed", _task("agent-alone", n))
        # Everything is either queued or durably in the outbox: nothing dropped.
        _wait(lambda: len(client._outbox) == 2000, timeout=20)  # noqa: SLF001
    finally:
        client.close(timeout=0.1)
    reopened = AgentClient("agent-alone", bootstrap=None, outbox_path=tmp_path / "o.db")
    assert reopened.pending() == 2000
    reopened.close()
