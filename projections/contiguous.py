"""Reading a partition without holes, whatever order the broker answers fetches in.

Our topics are neither compacted nor transactional, so the records after
offset *n* start at *n*. The embedded broker (Tansu 0.6) can answer a fetch
at *n* with a later batch while the batch at *n* is still being stored
(concurrent producers; measured: a worker skipped offsets 1806–1807, a test
reader a fresh partition's first 50 records). A reader that takes such a
batch never sees the records it jumped over — the broker has them, the
reader does not. Every reader of our topics therefore passes what
``getmany`` returned through :class:`ContiguousReads`, which holds the
partition back and seeks it to *n* again; only if the hole is still there
after ``wait_s`` is it accepted, with a warning (a real Kafka may leave
holes: transaction markers of other clients' producers).

Where a partition starts is not known for certain either: for a partition
written by several producers at once, Tansu's ``ListOffsets`` (earliest, and
by timestamp) can name a later batch as the first one for good (measured: 50
for a partition whose records 0–49 it served when fetched), so a reader
that resets to "earliest" skips them. Without a committed position a
partition is therefore read from offset 0; a broker that really deleted the
start (retention) answers that fetch out of range, the consumer resets to
the reported start, and a batch starting exactly there is accepted after
``START_WAIT_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

Fetched = dict[TopicPartition, list[Any]]  # what getmany returns: records per partition
JUMP_WAIT_S = 10.0  # how long a hole inside a partition is read again before it is accepted
START_WAIT_S = 1.0  # the same for a hole before the start the broker reports


class ContiguousReads:
    """Per partition, the next offset a reader expects; batches that start past it wait.

    ``from_commit`` says where a partition's first batch must start when no
    position is known yet: at the group's committed offset (a group member
    resuming), else — and always without it — at offset 0 (see the module's
    note on the reported start).
    """

    def __init__(self, *, from_commit: bool = False, wait_s: float = JUMP_WAIT_S) -> None:
        self.from_commit = from_commit
        self.wait_s = wait_s
        self.next: dict[TopicPartition, int] = {}  # the offset each partition goes on at
        self._since: dict[TopicPartition, float] = {}  # partitions held back since (monotonic)
        self._reported: dict[TopicPartition, int] = {}  # start the broker named, if not 0

    def holds(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is being read again: its last batch started past a hole."""
        return tp in self._since

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Positions no longer hold (revoked, re-created): the next batch starts afresh."""
        for tp in partitions:
            self.next.pop(tp, None)
            self._since.pop(tp, None)
            self._reported.pop(tp, None)

    async def keep(self, consumer: AIOKafkaConsumer, records: Fetched) -> Fetched:
        """The batches of ``records`` that go on where their partition stopped.

        A partition whose batch starts past its next offset is left out and
        sought back, so the following ``getmany`` reads it again from there.
        """
        kept: Fetched = {}
        now = time.monotonic()
        for tp, messages in records.items():
            if not messages:
                continue
            expected = self.next.get(tp)
            if expected is None:
                expected = await self._start(consumer, tp)
            first = messages[0].offset
            if expected is not None and first > expected:
                # Before the start the broker reports, a lasting hole is retention's.
                at_reported_start = first == self._reported.get(tp)
                wait = min(START_WAIT_S, self.wait_s) if at_reported_start else self.wait_s
                if tp not in self._since:
                    log.info("%s-%d: batch starts at %d, expected %d; reading it again",
                             tp.topic, tp.partition, first, expected)
                since = self._since.setdefault(tp, now)
                if now - since < wait:
                    self.next[tp] = expected
                    consumer.seek(tp, expected)
                    continue
                log.log(logging.INFO if at_reported_start else logging.WARNING,
                        "%s-%d: offsets %d..%d never appeared in %.0f s; going on",
                        tp.topic, tp.partition, expected, first - 1, wait)
            self._since.pop(tp, None)
            self._reported.pop(tp, None)
            self.next[tp] = messages[-1].offset + 1
            kept[tp] = messages
        return kept

    async def _start(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """Where a partition's first batch must start: the commit, else offset 0.

        ``None`` when the broker does not answer: the batch is taken rather than
        stalled on a question.
        """
        try:
            if self.from_commit:
                committed = await consumer.committed(tp)
                if committed is not None:
                    return int(committed)
            reported = (await consumer.beginning_offsets([tp])).get(tp)
        except KafkaError:
            return None
        if reported:
            self._reported[tp] = int(reported)
        return 0
