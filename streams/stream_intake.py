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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.errors import IllegalStateError, KafkaError

from streams.incarnations import TopicIncarnations
from streams.pipeline import Publish, WorkerPipeline
from streams.processing import Raw
from streams.topics import TOPIC_PROBE_S

log = logging.getLogger(__name__)


class StreamIntake:
    """Feeds a Faust stream through ``pipeline``; acknowledges after each checkpoint."""

    def __init__(self, pipeline: WorkerPipeline, publish: Callable[[Publish], Awaitable[None]],
                 *, batch: int, checkpoint_s: float,
                 keep_topics: Callable[[], Awaitable[list[str]]] | None = None,
                 incarnations: TopicIncarnations | None = None,
                 topics: Sequence[str] = ()) -> None:
        self.pipeline = pipeline
        # Re-creates the worker's topics when the broker lost them (run every
        # TOPIC_PROBE_S): Faust's clients may not create them by naming them.
        self.keep_topics = keep_topics
        # The incarnation (topic id) each of ``topics`` is read in, checked as often.
        self.incarnations = incarnations
        self.topics = list(topics)
        self.topic_ids: dict[str, str] = {}
        self.publish = publish
        self.batch = batch
        self.checkpoint_s = checkpoint_s
        self.held: list[Any] = []
        self.lock = asyncio.Lock()
        self.last = time.monotonic()
        self.stream: Any = None
        self.consumer: Any = None  # set by the app: Faust's (ContiguousConsumer)

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
        """Until the worker stops: acknowledge a quiet stream's last events too.

        Every ``TOPIC_PROBE_S`` lost topics are re-created and re-created ones
        read again (the first probe, at once, notes which incarnation is read).
        """
        probed = 0.0
        while True:
            if time.monotonic() - probed >= TOPIC_PROBE_S:
                probed = time.monotonic()
                await self._probe_topics()
            await asyncio.sleep(min(self.checkpoint_s, TOPIC_PROBE_S))
            if self.stream is not None and self.held:
                async with self.lock:
                    await self._release()

    async def _probe_topics(self) -> None:
        try:
            if self.keep_topics is not None and (made := await self.keep_topics()):
                log.warning("topics %s were gone (broker restarted?); re-created them", made)
        except (KafkaError, OSError) as exc:
            log.warning("could not check topics (%s); will retry", exc)
        await self._read_renewed_topics_again()

    async def _read_renewed_topics_again(self) -> None:
        """A topic under a new id was re-created (an empty broker restart): read it from 0.

        The events held from its old incarnation are acknowledged first, so
        that the consumer's reset discards those acknowledgements too; the
        projections skip by identity whatever they already applied.
        """
        if self.incarnations is None or self.consumer is None:
            return
        now = await asyncio.to_thread(self.incarnations.current, self.topics)
        renewed = {t for t, tid in now.items()
                   if tid is not None and self.topic_ids.get(t, tid) != tid}
        self.topic_ids.update({t: tid for t, tid in now.items() if tid is not None})
        if not renewed:
            return
        log.warning("topics %s were re-created (broker restarted?): reading them again "
                    "from the start", sorted(renewed))
        async with self.lock:
            old = [e for e in self.held if e.message.topic in renewed]
            for event in old:
                await self.stream.ack(event)
            self.held = [e for e in self.held if e.message.topic not in renewed]
            try:
                await self.consumer.read_again({tp for tp in self.consumer.assignment()
                                                if tp.topic in renewed})
            except IllegalStateError:  # mid-rebalance: the new assignment starts afresh
                log.info("partitions moved while re-reading them; the rebalance resets them")

    async def _release(self) -> None:
        self.last = time.monotonic()
        if not await asyncio.to_thread(self.pipeline.checkpoint):
            return  # not saved (PostgreSQL away): keep holding, try at the next one
        for event in self.held:
            await self.stream.ack(event)
        self.held.clear()
        self.last = time.monotonic()
