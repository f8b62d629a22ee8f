"""Test helpers that read topics back from the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from projections.contiguous import ContiguousReads

Record = tuple[int, int, bytes | None]  # (partition, offset, value)


async def _read(bootstrap: str, topic: str, until: Callable[[list[Record]], bool],
                timeout: float) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, request_timeout_ms=5_000,
    )
    reads = ContiguousReads()  # a test must not see the broker's fetch jumps as losses
    await consumer.start()
    try:
        while time.monotonic() < deadline and not until(got):
            try:
                batch = await reads.keep(
                    consumer, await consumer.getmany(timeout_ms=300, max_records=5_000))
            except KafkaError:
                await asyncio.sleep(0.2)
                continue
            for tp, messages in batch.items():
                got.extend((tp.partition, m.offset, m.value) for m in messages)
    finally:
        await consumer.stop()
    return got


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None,
               until: Callable[[list[Record]], bool] | None = None,
               timeout: float = 60.0) -> list[Record]:
    """Read ``topic`` from the beginning until ``expect`` records (or ``until``) or timeout."""
    if until is None:
        def until(got: list[Record]) -> bool:
            return expect is not None and len(got) >= expect
    return asyncio.run(_read(bootstrap, topic, until, timeout))
