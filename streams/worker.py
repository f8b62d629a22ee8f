"""What a worker connects to, built at start-up and never at import.

:func:`build_pipeline` is the pure wiring of the projections (a test or a
doctest can call it with any addresses); :class:`WorkerRuntime` resolves the
servers, lowers the CPU priority, runs the archive's DDL and builds the intake
when the worker starts.

>>> from schemas.addresses import Addresses
>>> from schemas.settings import Settings
>>> addresses = Addresses("localhost:9092", "postgresql://localhost/x",
...                       "redis://localhost:6379/0", "sqlite:///tmp/mlflow.db")
>>> pipeline, archive = build_pipeline(Settings(_env_file=None), addresses)
>>> type(pipeline).__name__, type(pipeline.features).__name__
('WorkerPipeline', 'FeatureProjection')
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.errors import IllegalStateError

from projections.agent_specs import configured_agents
from projections.archive import ArchiveUnavailable, EventArchive
from projections.archive_cold import ColdStore
from projections.archive_projection import ArchiveProjection
from projections.checkpoints import CheckpointStore
from projections.feature_store import OnlineFeatureStore
from projections.learning import LearningRuntime
from projections.memory import ShortTermMemory
from projections.online import FeatureProjection, MemoryProjection
from projections.policy_store import PolicyStore
from projections.redis_client import redis_client
from projections.registry import ModelRegistry
from schemas.addresses import Addresses, StackNotRunning, resolve
from schemas.catalog import DEAD_LETTER, STREAMS, all_topics, intake_group, topic_name
from schemas.cipher import FieldCipher
from schemas.protect import key_store
from schemas.settings import Settings
from streams.incarnations import TopicIncarnations
from streams.intake import BatchIntake
from streams.pipeline import Publish, WorkerPipeline
from streams.sensor import Sensor
from streams.stream_intake import StreamIntake
from streams.topics import ensure_topics, refuse_auto_create

log = logging.getLogger(__name__)


class Intake(Protocol):
    """How events reach the pipeline: ``batch`` (aiokafka) or ``stream`` (a Faust agent)."""

    consumer: Any  # for lag: anything with assignment(), position(tp), highwater(tp)

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping)."""


def build_pipeline(settings: Settings, addresses: Addresses,
                   sensor: Sensor | None = None) -> tuple[WorkerPipeline, EventArchive]:
    """Every projection of a worker, wired; connects to nothing until used."""
    client = redis_client(addresses.redis_url)
    prefix = settings.topic_prefix
    # Readers decrypt personal text with the same key folder the SDK writes to.
    keys = key_store(settings)
    cipher = FieldCipher(keys)
    archive = EventArchive(addresses.database_url,
                           cold=ColdStore((settings.data_dir / "cold").resolve().as_uri()))
    pipeline = WorkerPipeline(
        prefix,
        features=FeatureProjection(OnlineFeatureStore(client, prefix=prefix)),
        memory=MemoryProjection(
            ShortTermMemory(client, prefix=prefix, max_entries=settings.memory_max_entries,
                            ttl_s=settings.memory_ttl_s)),
        archive=ArchiveProjection(archive),
        learning=LearningRuntime(prefix, CheckpointStore(addresses.database_url), cipher,
                                 configured_agents(settings.challengers)),
        policies=PolicyStore(client, prefix=prefix),
        registry=ModelRegistry(addresses.mlflow_uri),
        sensor=sensor,
        keys=keys,
        min_replicas=settings.redis_min_replicas,
        wait_ms=settings.redis_wait_ms,
    )
    return pipeline, archive


def broker_url(settings: Settings) -> str:
    """``kafka://`` URL of the configured or embedded broker, Kafka's default if neither.

    Reads ``stack.json`` at most; without a broker the worker fails at start-up
    (in :meth:`WorkerRuntime.start`) with a message naming what is missing.
    """
    try:
        return f"kafka://{resolve(settings).kafka_bootstrap}"
    except StackNotRunning:
        return "kafka://localhost:9092"


BROKER_WAIT_S = 120.0


def wait_for_broker(url: str, timeout: float = BROKER_WAIT_S) -> bool:
    """Wait until a broker address of ``url`` accepts connections; False after ``timeout``.

    Faust's producer tries its bootstrap servers once when the worker starts
    and the worker exits if none answers, so a worker started beside a broker
    that is still coming up (a restart, a deployment starting both at once)
    would be gone. It waits here first, before Faust starts anything.

    >>> wait_for_broker("kafka://127.0.0.1:1", timeout=0.0)
    False
    """
    addresses = [a.strip() for a in url.removeprefix("kafka://").replace(";", ",").split(",")]
    deadline = time.monotonic() + timeout
    logged = False
    while True:
        for address in addresses:
            host, _, port = address.rpartition(":")
            with contextlib.suppress(OSError, ValueError), \
                    socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        if time.monotonic() >= deadline:
            return False
        if not logged:
            log.warning("waiting up to %.0f s for the broker at %s", timeout, url)
            logged = True
        time.sleep(0.5)


def throughput_gc(gen0: int) -> None:
    """Collect the young generation every ``gen0`` allocations (0: Python's default).

    Also what ``bench learn`` runs with, so it measures the worker's setting.
    """
    if gen0 > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, gen2)


class WorkerRuntime:
    """The worker's connections and intake, created by :meth:`start`."""

    def __init__(self, settings: Settings, publish: Callable[[Publish], Awaitable[None]],
                 sensor: Sensor | None = None) -> None:
        self.settings = settings
        self.publish = publish
        self.sensor = sensor or Sensor()
        self.started = asyncio.Event()
        self.archive: EventArchive | None = None
        self.intake: Intake | None = None

    async def start(self) -> Intake:
        """Resolve servers, yield the CPU, create the archive schema, build the intake."""
        s = self.settings
        addresses = resolve(s)
        # Learning must never slow the real-time path: on a shared machine the worker
        # yields the CPU to agents and the frame loop (the vision bench measures it).
        if s.worker_nice and hasattr(os, "nice"):
            os.nice(s.worker_nice)
        throughput_gc(s.worker_gc_gen0)
        pipeline, self.archive = build_pipeline(s, addresses, self.sensor)
        refuse_auto_create()  # from here on only ensure_topics makes topics (either intake)
        await self._ensure_schema(self.archive)
        if s.intake == "batch":
            self.intake = BatchIntake(
                addresses.kafka_bootstrap, [topic_name(s.topic_prefix, t) for t in STREAMS],
                intake_group(s.topic_prefix), pipeline, self.publish, batch=s.worker_batch,
                checkpoint_s=s.checkpoint_s, ssl_context=s.kafka_ssl_context(),
                session_timeout_ms=int(s.session_timeout * 1000), partitions=s.partitions,
                incarnations=TopicIncarnations(s.librdkafka_config(addresses.kafka_bootstrap)),
                outputs=[topic_name(s.topic_prefix, DEAD_LETTER)])
        else:
            topics = all_topics(s.topic_prefix)
            self.intake = StreamIntake(
                pipeline, self.publish, batch=s.worker_batch, checkpoint_s=s.checkpoint_s,
                keep_topics=functools.partial(ensure_topics, addresses.kafka_bootstrap, topics,
                                              s.partitions, s.kafka_ssl_context()))
        self.started.set()
        return self.intake

    @staticmethod
    async def _ensure_schema(archive: EventArchive) -> None:
        """Create the archive's tables, waiting for PostgreSQL: a worker started during
        an outage must wait for it, not exit."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(archive.ensure_schema)
                return
            except ArchiveUnavailable as exc:
                log.warning("%s; trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def report_lag(self) -> None:
        """Lag per partition this worker owns (high watermark minus position)."""
        consumer = self.intake.consumer if self.intake is not None else None
        if consumer is None:
            return
        for tp in list(consumer.assignment()):
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # revoked by a rebalance since assignment() answered
                continue
            high = consumer.highwater(tp)
            if position is not None and high is not None:
                self.sensor.on_lag(tp.topic, tp.partition, high - position)
