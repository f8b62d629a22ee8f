"""The Faust app: topics, projections and the agent that connects them.

Read top to bottom, this module is the data flow of DESIGN.md:

    agent / frames / decisions / learning / control topics
        └──▶ intake (batches) ──▶ features  ──▶ Redis (online features, short-term memory)
                          ├──▶ learning  ──▶ learning topic (shadow predictions, metrics)
                          │                  control topic (promotion events)
                          │                  Redis (live policy + model snapshots), MLflow
                          ├──▶ archive   ──▶ PostgreSQL events table (hot 90 d, then cold)
                          └──▶ dead-letter topic (bad input, with the reason)

Run it with ``faust -A streams.app worker`` or ``selflearn worker``; scale out
by starting more workers (up to one per partition). The intake reads whole
batches with aiokafka inside the Faust worker (``streams.intake`` explains
why: Faust's per-message path caps at ~6 000 messages/s here);
``SELFLEARN_INTAKE=stream`` uses a Faust stream agent instead. Faust tables are not used
for state: on a broker without transactions their changelog recovery is not
exact (BROKER.md). Each projection keeps its state with its own watermarks
(Redis for features, PostgreSQL for the archive and learning checkpoints), and
a batch is acknowledged only once the learning checkpoint covers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import faust
import redis

from ops.config import Settings, resolve
from ops.metrics import set_consumer_lag, start_metrics_server
from projections.archive import ArchiveProjection, EventArchive
from projections.archive_cold import ColdStore
from projections.checkpoints import CheckpointStore
from projections.learning import LearningRuntime
from projections.policy_store import PolicyStore
from projections.registry import ModelRegistry
from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
from streams.intake import BatchIntake
from streams.memory import ShortTermMemory
from streams.pipeline import Publish, WorkerPipeline
from streams.processing import FeatureProjection, Raw
from streams.store import OnlineFeatureStore

log = logging.getLogger(__name__)

settings = Settings()
addresses = resolve(settings)
PREFIX = settings.topic_prefix
BATCH = int(os.environ.get("SELFLEARN_WORKER_BATCH", "5000"))
INTAKE = os.environ.get("SELFLEARN_INTAKE", "batch")  # batch | stream (see streams.intake)

# Learning must never slow the real-time path: on a shared machine the worker
# yields the CPU to agents and the frame loop (the vision bench measures it).
if hasattr(os, "nice"):
    os.nice(int(os.environ.get("SELFLEARN_WORKER_NICE", "10")))
CHECKPOINT_S = float(os.environ.get("SELFLEARN_CHECKPOINT_S", "2.0"))

# -- the app, tuned for the embedded broker (BROKER.md): fast (re)joins --------
app = faust.App(
    f"{PREFIX}-worker",
    broker=f"kafka://{addresses.kafka_bootstrap}",
    store="memory://",
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.partitions,
    broker_rebalance_timeout=float(os.environ.get("SELFLEARN_REBALANCE_TIMEOUT", "4")),
    broker_session_timeout=float(os.environ.get("SELFLEARN_SESSION_TIMEOUT", "6")),
    broker_heartbeat_interval=1,
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=BATCH * 4,
    web_enabled=False,
    datadir=str(settings.data_dir / "faust"),
    broker_credentials=settings.kafka_ssl_context(),
)

# -- topics -------------------------------------------------------------------
sources = app.topic(*(topic_name(PREFIX, s) for s in STREAMS), value_serializer="raw")
dead_letters = app.topic(topic_name(PREFIX, DEAD_LETTER), value_serializer="raw")
outputs = {s: app.topic(topic_name(PREFIX, s), value_serializer="raw") for s in STREAMS}

# -- projections --------------------------------------------------------------
_redis = redis.Redis.from_url(addresses.redis_url)
archive = EventArchive(addresses.database_url,
                       cold=ColdStore((settings.data_dir / "cold").resolve().as_uri()))
archive.ensure_schema()
pipeline = WorkerPipeline(
    PREFIX,
    features=FeatureProjection(
        OnlineFeatureStore(_redis, prefix=PREFIX),
        ShortTermMemory(
            _redis, prefix=PREFIX,
            max_entries=int(os.environ.get("SELFLEARN_MEMORY_MAX_ENTRIES", "100000")),
            ttl_s=int(os.environ.get("SELFLEARN_MEMORY_TTL_S", str(24 * 3600))),
        ),
    ),
    archive=ArchiveProjection(archive),
    learning=LearningRuntime(PREFIX, CheckpointStore(addresses.database_url)),
    policies=PolicyStore(_redis, prefix=PREFIX),
    registry=ModelRegistry(addresses.mlflow_uri),
)


class AckGate:
    """Holds processed events until a learning checkpoint covers them, then acks them.

    ``take_events`` acknowledges each batch when the loop body ends; one extra
    reference per message (``incref``) keeps the offset uncommitted until
    :meth:`release`, so a crash re-delivers everything since the checkpoint.
    """

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.lock = asyncio.Lock()
        self.last = time.monotonic()

    def hold(self, batch: list[Any]) -> None:
        for event in batch:
            event.message.incref()
        self.held.extend(batch)

    async def release(self, stream: Any) -> None:
        await asyncio.to_thread(pipeline.checkpoint)
        for event in self.held:
            await stream.ack(event)
        self.held.clear()
        self.last = time.monotonic()


gate = AckGate()
_stream: list[Any] = []  # the agent's stream, for the checkpoint timer


async def publish(out: Publish) -> None:
    """Hand every produced record to the broker and wait until it has them all."""
    futures = [await dead_letters.send(value=record) for record in out.dead]
    futures += [await outputs[s].send(key=key, value=value) for s, key, value in out.sends]
    await asyncio.gather(*futures)


# -- the intake: batches from aiokafka (default) or the Faust stream agent ----
if INTAKE == "batch":
    intake = BatchIntake(
        addresses.kafka_bootstrap, [topic_name(PREFIX, s) for s in STREAMS],
        f"{PREFIX}-projections", pipeline, publish, batch=BATCH, checkpoint_s=CHECKPOINT_S,
        ssl_context=settings.kafka_ssl_context(),
        session_timeout_ms=int(float(os.environ.get("SELFLEARN_SESSION_TIMEOUT", "6")) * 1000),
        partitions=settings.partitions,
    )

    @app.task
    async def batch_intake() -> None:
        """Every event once through features, learning and archive, in large batches."""
        await intake.run()

else:

    @app.agent(sources)
    async def process(stream: Any) -> None:
        """Every event once through features, learning and archive (Faust stream path)."""
        _stream[:] = [stream]
        async for batch in stream.take_events(BATCH, within=0.05):
            async with gate.lock:
                gate.hold(batch)
                raw: list[Raw] = [(e.message.topic, e.message.partition, e.message.offset,
                                   e.value) for e in batch]
                # In a thread: Redis / PostgreSQL round trips (and outage retries)
                # must not freeze the loop that keeps the consumer in its group.
                await publish(await asyncio.to_thread(pipeline.handle, raw))
                if time.monotonic() - gate.last >= CHECKPOINT_S:
                    await gate.release(stream)

    @app.timer(interval=CHECKPOINT_S)
    async def checkpoint() -> None:
        """Acknowledge a quiet stream's last events too."""
        if _stream and gate.held:
            async with gate.lock:
                await gate.release(_stream[0])


@app.task
async def metrics_endpoint() -> None:
    """Prometheus metrics on SELFLEARN_METRICS_PORT (0 or unset: a free port, logged)."""
    log.info("metrics on :%d/metrics", start_metrics_server())


@app.timer(interval=15.0)
async def consumer_lag() -> None:
    """Lag per partition this worker owns (high watermark minus position)."""
    consumer: Any = intake.consumer if INTAKE == "batch" else app.consumer
    if consumer is None:
        return
    for tp in consumer.assignment():
        position = await consumer.position(tp)
        high = consumer.highwater(tp)
        if position is not None and high is not None:
            set_consumer_lag(tp.topic, tp.partition, high - position)


@app.timer(interval=3600.0)
async def retention() -> None:
    """Hourly: days older than the hot window go to cold files, their partitions dropped."""
    await asyncio.to_thread(archive.apply_retention, datetime.now(UTC))


def main() -> None:
    """Entry point for ``selflearn worker``."""
    app.main()
