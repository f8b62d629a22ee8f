"""The online projection: features and short-term memory in Redis, applied per batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis

from projections.feature_store import OnlineFeatureStore, Sourced
from projections.memory import ShortTermMemory
from schemas import CATALOG
from schemas.envelope import thaw

log = logging.getLogger(__name__)

MEMORY_TYPES = frozenset({"task.estimated", "task.completed", "review.requested",
                          "review.completed", "decision.made"})


def memory_entries(events: Sequence[Sourced]) -> list[tuple[str, str, dict[str, object]]]:
    """Recent-context entries for short-term memory (re-delivery rewrites the same key)."""
    out = []
    for _, _, _, ev in events:
        if ev.type in MEMORY_TYPES:
            # Personal fields stay out of memory, so erasing a data subject only
            # has to reach the events.
            personal = CATALOG[ev.type].personal_fields
            entry = {"type": ev.type, "at": ev.occurred_at.isoformat(),
                     "payload": {k: thaw(v) for k, v in ev.payload.items() if k not in personal}}
            out.append((ev.producer, str(ev.event_id), entry))
    return out


class FeatureProjection:
    """Applies valid events to the online feature store and short-term memory.

    Redis errors are retried with back-off: the batch is not acknowledged
    until it is applied, so an outage stalls the worker and loses nothing.
    """

    def __init__(
        self, store: OnlineFeatureStore, memory: ShortTermMemory | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.memory = memory
        self._sleep = sleep

    def apply(self, events: Sequence[Sourced]) -> int:
        delay = 0.05
        while True:
            try:
                applied = self.store.apply(events)
                if self.memory is not None:
                    self.memory.remember_many(memory_entries(events))
                return applied
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 2.0)

