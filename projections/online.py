"""The online projections in Redis: features, and each agent's short-term memory.

Both persist in Redis itself, with their watermarks next to the data (see
:mod:`projections.base`): a restarted worker reopens them and redelivered
events find themselves applied. Redis errors are retried with back-off: the
batch is not acknowledged until it is applied, so an outage stalls the worker
and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from projections.base import Sourced
from projections.feature_store import OnlineFeatureStore
from projections.memory import ShortTermMemory
from projections.redis_client import TRANSIENT_ERRORS
from schemas import CATALOG
from schemas.envelope import thaw

log = logging.getLogger(__name__)
T = TypeVar("T")

MEMORY_TYPES = frozenset({"task.estimated", "task.completed", "review.requested",
                          "review.completed", "decision.made"})


def memory_entries(events: Sequence[Sourced]) -> list[tuple[str, str, dict[str, object]]]:
    """Recent-context entries for short-term memory: ``(agent, event id, entry)``.

    >>> from schemas import new_event
    >>> ev = new_event("review.completed", {"change_id": "c1", "project": "p",
    ...                "passed_first_try": True}, producer="code-reviewer")
    >>> [(agent, entry["payload"]) for agent, _, entry in memory_entries([("t", 0, 0, ev)])]
    [('code-reviewer', {'change_id': 'c1', 'project': 'p', 'passed_first_try': True})]
    """
    out = []
    for _, _, _, ev in events:
        if ev.type in MEMORY_TYPES:
            # Personal fields stay out of memory, so erasing a data subject only
            # has to reach the events.
            personal = CATALOG[ev.type].personal_fields
            entry: dict[str, object] = {"type": ev.type, "at": ev.occurred_at.isoformat(),
                     "payload": {k: thaw(v) for k, v in ev.payload.items() if k not in personal}}
            out.append((ev.producer, str(ev.event_id), entry))
    return out


def until_redis_answers(write: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``write`` until Redis answers (exponential back-off, at most 2 s apart).

    Only for writes that are idempotent (the feature script, memory entries,
    a policy publish that only a newer revision wins): a write whose answer
    was lost is simply made again.
    """
    delay = 0.05
    while True:
        try:
            return write()
        except TRANSIENT_ERRORS as exc:  # a cluster failover answers with cluster errors too
            log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
            sleep(delay)
            delay = min(delay * 2, 2.0)


class FeatureProjection:
    """Feature counters per entity in the online store (see :mod:`projections.feature_store`).

    Parameters
    ----------
    store
        The Redis feature store; its hashes hold the watermarks too.
    sleep
        Called with the back-off delay during a Redis outage (tests inject one).
    """

    def __init__(self, store: OnlineFeatureStore, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self._sleep = sleep

    def apply(self, batch: Sequence[Sourced]) -> int:
        """Add the batch's events to their entities' counters; returns how many were new."""
        return until_redis_answers(lambda: self.store.apply(batch), self._sleep)

    def forget(self, subject_id: str) -> int:
        """Features are kept per agent and per camera, never per data subject: nothing to drop.

        A feature view keyed by a subject must delete its entity here.
        """
        return 0


class MemoryProjection:
    """Each agent's recent context (:class:`projections.memory.ShortTermMemory`).

    An entry is keyed by its event's id, so a redelivered event rewrites nothing.

    Parameters
    ----------
    memory
        The Redis short-term memory.
    sleep
        Called with the back-off delay during a Redis outage (tests inject one).
    """

    def __init__(self, memory: ShortTermMemory, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.memory = memory
        self._sleep = sleep

    def apply(self, batch: Sequence[Sourced]) -> int:
        """Remember the batch's agent events; returns how many entries were new."""
        entries = memory_entries(batch)
        if not entries:
            return 0
        subjects = {str(ev.event_id): ev.subject_id for _, _, _, ev in batch
                    if ev.subject_id is not None}
        return until_redis_answers(lambda: self.memory.remember_many(entries, subjects),
                              self._sleep)

    def forget(self, subject_id: str) -> int:
        """Delete the entries of every event naming ``subject_id``; returns how many."""
        return until_redis_answers(lambda: self.memory.forget(subject_id), self._sleep)
