"""The batch intake never skips offsets the broker answered past (real broker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.addresses import Addresses
from streams.intake import BatchIntake
from streams.topics import ensure_topics


async def _fetched(bootstrap: str, topic: str, n: int) -> tuple[AIOKafkaConsumer, Any, Any]:
    """A consumer of a fresh partition holding ``n`` records (nothing committed yet)."""
    await ensure_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"e{i}".encode(), key=b"k", partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([tp])
    await consumer.start()
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
            held = await intake._without_jumps(consumer, {tp: got[2:]})  # noqa: SLF001
            assert tp not in held  # offsets 0 and 1 not skipped
            assert await consumer.position(tp) == 0  # read again from the log's start
            whole = await intake._without_jumps(consumer, {tp: got})  # noqa: SLF001
            assert [m.offset for m in whole[tp]] == [0, 1, 2, 3, 4]
        finally:
            await consumer.stop()

    asyncio.run(run())
