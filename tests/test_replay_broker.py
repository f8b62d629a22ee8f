"""Replay from the broker returns every event, even past Tansu's under-reported end offset."""

from __future__ import annotations

from pathlib import Path

from agents.client import AgentClient
from projections.replay import read_broker
from schemas.addresses import Addresses
from schemas.catalog import topic_name
from schemas.settings import Settings


def test_read_broker_returns_every_event_in_time_order(stack: Addresses, settings: Settings,
                                                       tmp_path: Path) -> None:
    prefix = f"{settings.topic_prefix}-rb"
    client = AgentClient("replayed", bootstrap=stack.kafka_bootstrap, topic_prefix=prefix,
                         outbox_path=tmp_path / "o.db")
    sent = [client.emit("task.completed", {"task_id": f"t{i}", "project": "p",
                                           "actual_points": i % 5}) for i in range(333)]
    assert client.flush(30)
    client.close()
    got = list(read_broker(stack.kafka_bootstrap, [topic_name(prefix, "agent")], timeout=30))
    assert [e.event_id for e in got] == [e.event_id for e in sent]  # type: ignore[union-attr]
