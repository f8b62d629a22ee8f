"""Readers never skip offsets the broker answered past (real broker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from projections.contiguous import ContiguousReads
from schemas.addresses import Addresses
from streams.intake import BatchIntake
from streams.topics import ensure_topics


async def _fetched(bootstrap: str, topic: str, n: int, *, group: bool = True,
                   commit: int | None = None) -> tuple[AIOKafkaConsumer, Any, Any]:
    """A consumer of a fresh partition holding ``n`` records, and the records.

    Its group commits ``commit`` first if given; ``group=False`` reads with none.
    """
    await ensure_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"e{i}".encode(), key=b"k", partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                group_id=f"g-{topic}" if group else None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([tp])
    await consumer.start()
    if commit is not None:
        await consumer.commit({tp: commit})
    consumer.seek(tp, 0)
    got: list[Any] = []
    while len(got) < n:
        got += (await consumer.getmany(tp, timeout_ms=5000)).get(tp, [])
    return consumer, tp, got


def _intake(bootstrap: str, topic: str) -> BatchIntake:
    async def publish(_: Any) -> None:
        return None

    return BatchIntake(bootstrap, [topic], f"g-{topic}", pipeline=None,  # type: ignore[arg-type]
                       publish=publish)


def test_a_fresh_partitions_first_batch_past_the_log_start_is_read_again(
    stack: Addresses,
) -> None:
    """Nothing committed: the first batch must start where the log starts.

    Tansu can answer a fetch with a later batch while an earlier one is still
    being stored; for a partition nobody committed yet that skipped its first
    events (the broker had them, no projection did).
    """

    async def run() -> None:
        topic = f"jumps-{uuid.uuid4().hex[:8]}"
        consumer, tp, got = await _fetched(stack.kafka_bootstrap, topic, 5)
        try:
            intake = _intake(stack.kafka_bootstrap, topic)
            held = await intake.reads.keep(consumer, {tp: got[2:]})
            assert tp not in held  # offsets 0 and 1 not skipped
            assert await consumer.position(tp) == 0  # read again from the log's start
            whole = await intake.reads.keep(consumer, {tp: got})
            assert [m.offset for m in whole[tp]] == [0, 1, 2, 3, 4]
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_a_reader_without_a_group_goes_on_only_where_it_stopped(stack: Addresses) -> None:
    """Audits and tests read with no group: from the log's start, then batch after batch."""

    async def run() -> None:
        topic = f"jumps-{uuid.uuid4().hex[:8]}"
        consumer, tp, got = await _fetched(stack.kafka_bootstrap, topic, 6, group=False)
        try:
            reads = ContiguousReads()
            assert tp not in await reads.keep(consumer, {tp: got[1:]})
            assert [m.offset for m in (await reads.keep(consumer, {tp: got[:3]}))[tp]] == [0, 1, 2]
            assert tp not in await reads.keep(consumer, {tp: got[4:]})  # 3 jumped over
            assert await consumer.position(tp) == 3 and reads.holds(tp)
            assert [m.offset for m in (await reads.keep(consumer, {tp: got[3:]}))[tp]] == [3, 4, 5]
            assert not reads.holds(tp)
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_a_group_member_resumes_at_its_commit_and_a_lasting_hole_is_accepted(
    stack: Addresses,
) -> None:
    """With a commit, the first batch starts there; a hole still open after the wait is
    taken (a real Kafka leaves holes for other clients' transaction markers)."""

    async def run() -> None:
        topic = f"jumps-{uuid.uuid4().hex[:8]}"
        consumer, tp, got = await _fetched(stack.kafka_bootstrap, topic, 6, commit=2)
        try:
            reads = ContiguousReads(from_commit=True, wait_s=0.3)
            assert [m.offset for m in (await reads.keep(consumer, {tp: got[2:4]}))[tp]] == [2, 3]
            assert tp not in await reads.keep(consumer, {tp: got[5:]})
            await asyncio.sleep(0.4)
            assert [m.offset for m in (await reads.keep(consumer, {tp: got[5:]}))[tp]] == [5]
            reads.forget([tp])  # e.g. revoked: the commit counts again
            assert tp not in await reads.keep(consumer, {tp: got[3:]})
            assert await consumer.position(tp) == 2
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_the_faust_stream_intake_reads_through_the_same_rule() -> None:
    """The worker's Faust app builds its consumer thread with a ContiguousReads of its own."""

    async def run() -> None:
        from streams.app import app
        from streams.faust_transport import ContiguousConsumerThread

        async def nothing(*_: Any) -> None:
            return None

        consumer = app.transport.create_consumer(callback=nothing,
                                                 on_partitions_revoked=nothing,
                                                 on_partitions_assigned=nothing)
        thread = consumer._thread  # noqa: SLF001
        assert isinstance(thread, ContiguousConsumerThread)
        assert thread.reads.from_commit  # a group member resumes at its commit

    asyncio.run(run())
