"""Short-term memory forgets a data subject: every entry of the subject's events, nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from projections.memory import ShortTermMemory
from projections.online import MemoryProjection
from schemas import Envelope, new_event
from schemas.addresses import Addresses


@pytest.fixture
def memory(stack: Addresses) -> Iterator[ShortTermMemory]:
    client = redis.Redis.from_url(stack.redis_url)
    prefix = f"mem-{uuid.uuid4().hex[:10]}"
    yield ShortTermMemory(client, prefix=prefix)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def _done(agent: str, i: int, subject: str | None) -> Envelope:
    return new_event("task.completed", {"task_id": f"t{i}", "project": "p",
                                        "actual_points": 3.0}, producer=agent,
                     subject_id=subject)


def test_forget_drops_the_subjects_entries_and_keeps_everyone_elses(
        memory: ShortTermMemory) -> None:
    subjects = ["alice", "bob", None, "alice", "alice", "bob"]
    events = [_done(f"agent-{i % 2}", i, s) for i, s in enumerate(subjects)]
    projection = MemoryProjection(memory)
    assert projection.apply([("t", 0, i, ev) for i, ev in enumerate(events)]) == 6

    assert projection.forget("alice") == 3
    left = memory.recall("agent-0", 10) + memory.recall("agent-1", 10)
    assert sorted(e["payload"]["task_id"] for e in left) == ["t1", "t2", "t5"]
    assert memory.size() == 3
    assert projection.forget("alice") == 0  # nothing of alice is left to drop
    assert projection.forget("bob") == 2 and memory.size() == 1
