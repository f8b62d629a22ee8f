"""The projection protocol: what every projection of the event log implements.

A projection turns events, delivered at least once by the broker, into state
that agents, the decision engine or auditors read. Every projection has the
same two methods:

- :meth:`Projection.apply` takes a batch of :data:`Sourced` events (where the
  broker delivered each one: topic, partition, offset) and returns what the
  batch produced — new events to publish, policy transitions, or a count of
  newly applied events. Applying an event twice, at the same or another
  position, changes nothing and produces nothing: each projection keeps its
  own watermarks (:class:`projections.watermarks.Watermarks`, or the same
  bookkeeping inside its store) and skips what it has already applied.
- :meth:`Projection.forget` deletes the state derived from one data subject
  (``Envelope.subject_id``) and returns how many items it dropped.

How a projection survives a restart is part of its contract too:

- **In memory** (shadow, promotion, the learning shard) — a
  :class:`SnapshotProjection`: ``snapshot()`` returns deterministic bytes of
  the whole state, watermarks included, and ``restore(data)`` puts a freshly
  configured projection back into that state. The worker stores the bytes
  (:class:`projections.checkpoints.CheckpointStore`) before it acknowledges
  the input they cover; after a crash the broker redelivers what came after
  and the watermarks skip the rest.
- **In a store** (features and short-term memory in Redis, the archive in
  PostgreSQL) — every :meth:`~Projection.apply` is durable when it returns,
  and the watermarks live in the store next to the data (in the same atomic
  write), so a restarted projection just reopens the store; redelivered
  events find themselves already applied.

A new projection is done when it passes ``tests/test_projection_contract.py``.

>>> from projections.watermarks import Watermarks
>>> from schemas import new_event
>>> class PerProducer:
...     '''Events seen per producer (a toy in-memory projection).'''
...     def __init__(self) -> None:
...         self.counts: dict[str, int] = {}
...         self.marks = Watermarks()
...     def apply(self, batch: Sequence[Sourced]) -> int:
...         new = [ev for t, p, o, ev in batch if self.marks.fresh(ev, t, p, o)]
...         for ev in new:
...             self.counts[ev.producer] = self.counts.get(ev.producer, 0) + 1
...         return len(new)
...     def forget(self, subject_id: str) -> int:
...         return 0  # counts hold nothing of a data subject
>>> ev = new_event("review.completed", {"change_id": "c1", "project": "p",
...                "passed_first_try": True}, producer="code-reviewer")
>>> p = PerProducer()
>>> isinstance(p, Projection), isinstance(p, SnapshotProjection)
(True, False)
>>> p.apply([("selflearn.agent", 0, 7, ev)]), p.apply([("selflearn.agent", 3, 9, ev)])
(1, 0)
>>> p.apply(batch_of(ev)), p.counts
(0, {'code-reviewer': 1})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

from schemas import Envelope

#: One delivered event: ``(topic, partition, offset, event)``.
Sourced = tuple[str, int, int, Envelope]
Out_co = TypeVar("Out_co", covariant=True)


@runtime_checkable
class Projection(Protocol[Out_co]):
    """Events in, state out; exactly-once effect over at-least-once delivery."""

    def apply(self, batch: Sequence[Sourced]) -> Out_co:
        """Apply every event of ``batch`` not applied yet, in order.

        Parameters
        ----------
        batch
            ``(topic, partition, offset, event)`` tuples as the broker delivered
            them. An offset of ``-1`` means "no broker position" (replays, tests):
            only the event's identity de-duplicates it then.

        Returns
        -------
        What the new events produced (its type is the projection's own: events to
        publish, transitions, a count). A batch of events already applied produces
        an empty result (``[]``, ``0``).
        """
        ...

    def forget(self, subject_id: str) -> int:
        """Delete the state derived from events of the data subject ``subject_id``.

        Parameters
        ----------
        subject_id
            The erased data subject (``Envelope.subject_id``).

        Returns
        -------
        How many items (entries, rows, examples) were dropped; ``0`` when the
        projection keeps nothing of that subject.
        """
        ...


@runtime_checkable
class SnapshotProjection(Projection[Out_co], Protocol[Out_co]):
    """A projection whose state lives in memory and persists as snapshot bytes."""

    def snapshot(self) -> bytes:
        """Deterministic bytes of the whole state, watermarks included.

        Returns
        -------
        Equal bytes for equal states: two projections that applied the same
        events (in any batching, with any redeliveries) snapshot identically.
        """
        ...

    def restore(self, data: bytes) -> None:
        """Replace this projection's state by a :meth:`snapshot`'s.

        Parameters
        ----------
        data
            Bytes from :meth:`snapshot` of a projection with the same
            configuration (agents, learners, callbacks stay this instance's).
        """
        ...


def batch_of(*events: Envelope, topic: str = "", partition: int = 0) -> list[Sourced]:
    """A batch of events with no broker position (offset ``-1``), for replays and tests.

    >>> from schemas import new_event
    >>> ev = new_event("review.completed", {"change_id": "c1", "project": "p",
    ...                "passed_first_try": False}, producer="code-reviewer")
    >>> [(t, p, o) for t, p, o, _ in batch_of(ev, ev)]
    [('', 0, -1), ('', 0, -1)]
    """
    return [(topic, partition, -1, ev) for ev in events]
