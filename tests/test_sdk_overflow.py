"""The SDK when librdkafka's queue and its own deque overflow: nothing lost, order kept.

A tiny ``queue_size`` bounds both librdkafka's in-memory queue and the SDK's
deque, so a burst takes all three paths of ``agents/producer.py`` in turn:
straight into librdkafka, refused by it (``BufferError``) into the deque, and
from a full deque into the SQLite outbox on the caller's thread.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from agents.client import AgentClient
from ops.stack.processes import free_port, port_open, stop
from ops.stack.servers import kafka_address, start_kafka
from schemas import decode
from schemas.catalog import topic_name
from tests.kafka_util import read_topic

AGENTS = 3
EACH = 4_000


def test_a_burst_past_every_queue_arrives_complete_and_in_order(tmp_path: Path) -> None:
    port = free_port()
    broker = start_kafka(tmp_path, port, tmp_path / "kafka.log")
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline, "broker did not start"
        time.sleep(0.02)
    clients = [AgentClient(f"agent-{i}", bootstrap=kafka_address(port), topic_prefix="overflow",
                           outbox_path=tmp_path / f"o{i}.db", queue_size=50, scrub=None)
               for i in range(AGENTS)]
    try:
        deadline = time.monotonic() + 30
        while not all(c.stats.connected for c in clients):
            assert time.monotonic() < deadline, "clients did not connect"
            time.sleep(0.05)
        time.sleep(0.2)  # the direct path opens once the thread saw nothing waiting
        for n in range(EACH):
            for c in clients:
                assert c.emit("task.completed", {"task_id": f"{c.agent_id}-{n}",
                                                 "project": "mule", "actual_points": 1})
        spilled = sum(c.stats.spilled for c in clients)
        assert all(c.flush(60) for c in clients)
        records = read_topic(kafka_address(port), topic_name("overflow", "agent"),
                             expect=AGENTS * EACH)
    finally:
        for c in clients:
            c.close(timeout=1)
        stop(broker.pid, broker.create_time, timeout=5)
    assert spilled > 0  # the outbox path was taken, not only librdkafka's queue
    per_agent: dict[str, list[int]] = defaultdict(list)
    for _, _, value in sorted(records):
        event = decode(value)
        per_agent[event.producer].append(int(str(event.payload["task_id"]).rsplit("-", 1)[1]))
    assert len(records) == AGENTS * EACH
    for agent, numbers in per_agent.items():
        assert numbers == list(range(EACH)), agent
