"""Faust's aiokafka transport, reading every partition without holes.

Faust's consumer takes whatever a fetch returns: a batch answered past the
offset asked for is processed, and the offsets it jumped over are marked as
a gap that is committed as if acknowledged — on the embedded broker, events
the projections never saw (docs/broker.md: fetch jumps, and an "earliest"
offset that can name a later batch). This transport passes each fetch
through :class:`projections.contiguous.ContiguousReads` before Faust sees
it, so the stream intake (``SELFLEARN_INTAKE=stream``) reads what the batch
intake reads. Nothing connects at import time; :class:`SelflearnApp` builds
the transport when Faust first asks for it.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from projections.contiguous import ContiguousReads


class ContiguousConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The consumer thread, its fetches held back where a partition would jump."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reads = ContiguousReads(from_commit=True)

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer,
                             active_partitions: set[TP], timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions,
                                               timeout=timeout, max_records=max_records)
        return await self.reads.keep(consumer, dict(records))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Positions of revoked partitions no longer hold: another worker moves them on."""
        self.reads.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """A (re)assigned partition resumes at its commit, not where it stood before."""
        self.reads.forget(assigned)
        await super().on_partitions_assigned(assigned, generation_id)


class ContiguousConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ContiguousConsumerThread:
        return ContiguousConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ContiguousTransport(faust_aiokafka.Transport):
    Consumer = ContiguousConsumer


class SelflearnApp(faust.App):
    """A Faust app whose consumer reads through :class:`ContiguousConsumerThread`."""

    def _new_transport(self) -> TransportT:
        return ContiguousTransport(self.conf.broker_consumer, self)
