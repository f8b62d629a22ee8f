"""Batch intake: the worker's consumer, reading topics in large batches with aiokafka.

Faust's per-message path (consumer thread → conductor → channel → stream)
costs ~150 µs a message on this machine: a do-nothing Faust agent consumed
6 000 messages/s where an aiokafka ``getmany`` loop read 300 000/s. The
projections work on whole batches anyway, so by default the Faust worker
hosts this intake instead (``SELFLEARN_INTAKE=batch``); ``stream`` keeps the
Faust agent path.

Offsets are committed only after the learning checkpoint covers them, in the
loop and when partitions are revoked; projections skip anything they already
applied, so a crash or a rebalance re-delivers and nothing counts twice.
Partitions are assigned with the range assignor: topics have the same
partition count, so one worker gets partition *p* of every topic — an
agent's requests, outcomes and promotion events stay together.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from projections.contiguous import ContiguousReads, Fetched
from streams.incarnations import TopicIncarnations
from streams.pipeline import Publish, WorkerPipeline
from streams.processing import Raw
from streams.topics import TOPIC_PROBE_S, ensure_topics

log = logging.getLogger(__name__)



class BatchIntake(ConsumerRebalanceListener):
    """Consume ``topics`` in group ``group_id`` and run each batch through ``pipeline``."""

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str,
                 pipeline: WorkerPipeline, publish: Callable[[Publish], Awaitable[None]], *,
                 batch: int = 5000, checkpoint_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None,
                 session_timeout_ms: int = 10_000, partitions: int = 8,
                 incarnations: TopicIncarnations | None = None,
                 outputs: Sequence[str] = ()) -> None:
        self.pipeline = pipeline
        self.incarnations = incarnations
        self.topic_ids: dict[str, str | None] = {}  # the incarnation each topic is read in
        self.publish = publish
        self.batch = batch
        self.checkpoint_s = checkpoint_s
        self.lock = asyncio.Lock()
        self.done: dict[TopicPartition, int] = {}  # next offset to read, processed so far
        self.reads = ContiguousReads(from_commit=True)  # no batch past a hole is applied
        self._config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=batch,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=session_timeout_ms, metadata_max_age_ms=5_000,
            **({"security_protocol": "SSL", "ssl_context": ssl_context} if ssl_context else {}),
        )
        self.topics = list(topics)
        # With the topics the worker writes but does not read (dead letters): all are
        # re-created when lost, since no client of the worker's makes a topic by naming it.
        self.owned = self.topics + [t for t in outputs if t not in self.topics]
        self.partitions = partitions
        self._ssl = ssl_context
        self.consumer: AIOKafkaConsumer | None = None
        self.applied = 0

    async def run(self) -> None:
        """Start consuming; runs until cancelled (the worker stopping)."""
        self.consumer = consumer = await self._connect()
        last = probed = time.monotonic()
        try:
            while True:
                if time.monotonic() - probed >= TOPIC_PROBE_S:
                    probed = time.monotonic()
                    await self._recreate_lost_topics(consumer)
                records = await consumer.getmany(timeout_ms=50, max_records=self.batch)
                async with self.lock:
                    records = await self.reads.keep(
                        consumer, self._still_assigned(consumer, records))
                    raw: list[Raw] = [(tp.topic, tp.partition, m.offset, m.value)
                                      for tp, messages in records.items() for m in messages]
                    if raw:
                        # In a thread: Redis / PostgreSQL round trips (and outage retries)
                        # must not freeze the loop that keeps this consumer in its group.
                        await self.publish(await asyncio.to_thread(self.pipeline.handle, raw))
                        for tp, messages in records.items():
                            self.done[tp] = messages[-1].offset + 1
                        self.applied += len(raw)
                    if time.monotonic() - last >= self.checkpoint_s and self.done:
                        await self._checkpoint_and_commit(list(self.done))
                        last = time.monotonic()
        finally:
            await consumer.stop()

    async def _connect(self) -> AIOKafkaConsumer:
        """Topics ensured and the consumer started, retried while the broker is away.

        A worker started (or restarted) while the broker restarts must wait
        for it, not exit.
        """
        delay = 0.5
        while True:
            # Topics must exist before subscribing, with the same partition count each
            # (co-partitioning); the SDK creates them the same way.
            consumer: AIOKafkaConsumer | None = None
            try:
                await ensure_topics(self._config["bootstrap_servers"],
                                    self.owned, self.partitions, self._ssl)
                # Created here: aiokafka binds to the running loop (the Faust worker's).
                consumer = AIOKafkaConsumer(**self._config)
                consumer.subscribe(self.topics, listener=self)
                await consumer.start()
                return consumer
            except KafkaError as exc:
                log.warning("broker not reachable (%s); trying again in %.1f s", exc, delay)
                if consumer is not None:
                    await consumer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _still_assigned(self, consumer: AIOKafkaConsumer, records: Fetched) -> Fetched:
        """Only records of partitions this worker owns now.

        A batch fetched before a rebalance may reach the lock after it: its
        partitions may belong to another worker by then (or come back to this
        one at another position). Applying it would be harmless (identity
        de-duplication), but remembering its offsets is not: they would be
        committed for a partition this worker does not read. The new owner
        reads those records from the committed offset.
        """
        owned = consumer.assignment()
        kept = {tp: ms for tp, ms in records.items() if tp in owned}
        if len(kept) < len(records):
            log.info("dropped a batch of %d partitions revoked while it waited",
                     len(records) - len(kept))
        return kept

    async def _recreate_lost_topics(self, consumer: AIOKafkaConsumer) -> None:
        """A broker that restarted empty forgets our topics: create them again.

        Until they exist the group has nothing to read; once they do, the
        subscription's metadata refresh assigns them and reading starts at the
        earliest offset of the new incarnation (the old committed offsets are
        gone with the broker), while the projections skip by identity whatever
        they already applied.
        """
        try:
            missing = set(self.owned) - set(await consumer.topics())
            if missing:
                log.warning("topics %s are gone (broker restarted?); re-creating them",
                            sorted(missing))
                await ensure_topics(self._config["bootstrap_servers"],
                                    self.owned, self.partitions, self._ssl)
        except KafkaError as exc:
            log.warning("could not check topics (%s); will retry", exc)

    async def _topic_ids(self) -> dict[str, str | None]:
        if self.incarnations is None:
            return {}
        return await asyncio.to_thread(self.incarnations.current, self.topics)

    async def _same_incarnation(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The partitions whose topic is still the incarnation they were read from.

        A topic with a new id was re-created: positions read before belong to a
        dead incarnation, so they are forgotten (never committed) and its
        partitions are read again from the start. A topic the broker does not
        report now (down, or not re-created yet) is not committed either.
        """
        if self.incarnations is None:
            return partitions
        now = await self._topic_ids()
        for topic, tid in now.items():
            self.topic_ids.setdefault(topic, tid)
            if self.topic_ids[topic] is None:
                self.topic_ids[topic] = tid  # first sight of its id
        changed = {t for t, tid in now.items() if tid is not None and tid != self.topic_ids[t]}
        if changed and self.consumer is not None:
            log.warning("topics %s were re-created (broker restarted?): reading them again "
                        "from the start; offsets from before are not committed", sorted(changed))
            stale = [tp for tp in self.consumer.assignment() if tp.topic in changed]
            for tp in stale:
                self.done.pop(tp, None)
            self.reads.forget(stale)
            if stale:
                try:
                    await self.consumer.seek_to_beginning(*stale)
                except IllegalStateError:  # mid-rebalance: the new assignment starts afresh
                    log.info("partitions moved while re-reading them; the rebalance resets them")
            self.topic_ids.update({t: now[t] for t in changed})
        return [tp for tp in partitions if tp.topic not in changed and now.get(tp.topic)]

    async def _checkpoint_and_commit(self, partitions: list[TopicPartition]) -> None:
        if not await asyncio.to_thread(self.pipeline.checkpoint):
            return  # not saved (PostgreSQL away): committing would skip what it lacks
        partitions = await self._same_incarnation(partitions)
        offsets = {tp: OffsetAndMetadata(self.done[tp], self.topic_ids.get(tp.topic) or "")
                   for tp in partitions if tp in self.done}
        if not offsets:
            return
        try:
            assert self.consumer is not None
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # re-delivery is harmless; losing the worker is not
            log.warning("offset commit failed (%s); those events will be re-delivered", exc)

    # -- rebalance ---------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Checkpoint and commit what was processed, then release the revoked shards."""
        async with self.lock:
            mine = [tp for tp in revoked if tp in self.done]
            if mine:
                await self._checkpoint_and_commit(mine)
            for tp in revoked:
                self.done.pop(tp, None)
            self.reads.forget(revoked)
            self.pipeline.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Reading restarts at the committed offsets: forget positions from before."""
        async with self.lock:
            for tp in assigned:
                self.done.pop(tp, None)
            self.reads.forget(assigned)
        log.info("assigned %d partitions", len(assigned))
