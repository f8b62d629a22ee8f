"""What the SDK keeps after the broker acknowledged it: until the workers applied it.

A broker without durable storage (the embedded Tansu, docs/broker.md) forgets
acknowledged events when it restarts. The SDK keeps each acknowledged event
and sends it again after a restart. A fixed window is not enough: when no
worker read the partition for longer than the window (a killed worker that
takes a minute to come back, a long rebalance), a restart after the window
loses events that no projection ever saw (``bench soak`` measured thousands).

So an event is kept for at least ``window_s`` and then **until the workers'
consumer group has committed past its offset** — a commit means every
projection applied it (docs/exactly-once.md, rule 4), and nothing a broker
forgets afterwards matters. ``max_events`` bounds the memory; events evicted by
the bound (perhaps before a worker committed them) are counted (``evicted``)
and logged, never silently.

>>> kept = AckedEvents(window_s=0.0, max_events=10)
>>> kept.add("t", 0, 5, (1, "t", b"k", b"v"), now=0.0)
>>> kept.add("t", 0, 6, (2, "t", b"k", b"v"), now=0.0)
>>> kept.trim(now=1.0, committed=lambda parts: {("t", 0): 6})
>>> [row[0] for row in kept.take_all()]
[2]
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from agents.outbox import Row

log = logging.getLogger(__name__)

# (topic, partition) -> the group's committed offset (absent: none, or unknown)
Committed = Callable[[Iterable[tuple[str, int]]], Mapping[tuple[str, int], int]]


class Acked(NamedTuple):
    at: float
    topic: str
    partition: int
    offset: int
    row: Row


class AckedEvents:
    """Acknowledged events in delivery order, kept until committed (see module doc).

    Trimming pops from the oldest end only, so its cost is the events it
    forgets, not the events it keeps (it runs on the producer thread, holding
    the GIL the caller's ``emit`` needs). An old event behind one the group has
    not committed yet waits for it: kept a little longer, never dropped early.
    """

    def __init__(self, window_s: float, max_events: int) -> None:
        self.window_s = window_s
        self.max_events = max_events
        self.evicted = 0
        self._events: deque[Acked] = deque()
        self._partitions: set[tuple[str, int]] = set()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, topic: str, partition: int, offset: int, row: Row, now: float) -> None:
        self._events.append(Acked(now, topic, partition, offset, row))
        self._partitions.add((topic, partition))
        if len(self._events) > self.max_events:
            self._events.popleft()
            self.evicted += 1
            if self.evicted in (1, 1_000) or self.evicted % 100_000 == 0:
                log.warning("%d acknowledged events left the re-send memory by its bound (%d): "
                            "a broker restart now loses those no worker had committed yet",
                            self.evicted, self.max_events)

    def trim(self, now: float, committed: Committed | None) -> None:
        """Forget the oldest events that are past the window and committed by the group.

        Without ``committed`` (no group to ask) the window alone decides.
        """
        horizon = now - self.window_s
        events = self._events
        if not events or events[0].at >= horizon:
            return
        done = committed(self._partitions) if committed is not None else None
        while events and events[0].at < horizon:
            head = events[0]
            if done is not None and head.offset >= done.get((head.topic, head.partition), -1):
                return
            events.popleft()

    def take_all(self) -> list[Row]:
        """Every kept row, oldest first, and forget them (they are being sent again)."""
        rows = [e.row for e in self._events]
        self._events.clear()
        self._partitions.clear()
        return rows
