"""Stream intake: the worker's consumer as a Faust stream agent (``SELFLEARN_INTAKE=stream``).

Faust's own per-message path: slower than the batch intake (``streams.intake``
measures why) but it is Faust end to end. ``take_events`` acknowledges each
batch when the loop body ends, so every message carries one extra reference
until a learning checkpoint covers it; a crash re-delivers everything since
the last checkpoint and the projections skip what they already applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

from streams.pipeline import Publish, WorkerPipeline
from streams.processing import Raw
from streams.topics import TOPIC_PROBE_S

log = logging.getLogger(__name__)


class StreamIntake:
    """Feeds a Faust stream through ``pipeline``; acknowledges after each checkpoint."""

    def __init__(self, pipeline: WorkerPipeline, publish: Callable[[Publish], Awaitable[None]],
                 *, batch: int, checkpoint_s: float,
                 keep_topics: Callable[[], Awaitable[list[str]]] | None = None) -> None:
        self.pipeline = pipeline
        # Re-creates the worker's topics when the broker lost them (run every
        # TOPIC_PROBE_S): Faust's clients may not create them by naming them.
        self.keep_topics = keep_topics
        self.publish = publish
        self.batch = batch
        self.checkpoint_s = checkpoint_s
        self.held: list[Any] = []
        self.lock = asyncio.Lock()
        self.last = time.monotonic()
        self.stream: Any = None
        self.consumer: Any = None  # set by the app: Faust's consumer

    async def process(self, stream: Any) -> None:
        """The agent body: every event once through the projections, in batches."""
        self.stream = stream
        async for batch in stream.take_events(self.batch, within=0.05):
            async with self.lock:
                for event in batch:
                    event.message.incref()  # held until a checkpoint covers it
                self.held.extend(batch)
                raw: list[Raw] = [(e.message.topic, e.message.partition, e.message.offset,
                                   e.value) for e in batch]
                # In a thread: Redis / PostgreSQL round trips (and outage retries)
                # must not freeze the loop that keeps the consumer in its group.
                await self.publish(await asyncio.to_thread(self.pipeline.handle, raw))
                if time.monotonic() - self.last >= self.checkpoint_s:
                    await self._release()

    async def run(self) -> None:
        """Until the worker stops: acknowledge a quiet stream's last events too."""
        probed = time.monotonic()
        while True:
            await asyncio.sleep(min(self.checkpoint_s, TOPIC_PROBE_S))
            if self.keep_topics is not None and time.monotonic() - probed >= TOPIC_PROBE_S:
                probed = time.monotonic()
                try:
                    if made := await self.keep_topics():
                        log.warning("topics %s were gone (broker restarted?); re-created them",
                                    made)
                except (KafkaError, OSError) as exc:
                    log.warning("could not check topics (%s); will retry", exc)
            if self.stream is not None and self.held:
                async with self.lock:
                    await self._release()

    async def _release(self) -> None:
        self.last = time.monotonic()
        if not await asyncio.to_thread(self.pipeline.checkpoint):
            return  # not saved (PostgreSQL away): keep holding, try at the next one
        for event in self.held:
            await self.stream.ack(event)
        self.held.clear()
        self.last = time.monotonic()
