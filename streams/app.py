"""The Faust app: topics, projections and the agents that connect them.

Read top to bottom, this module is the data flow of DESIGN.md:

    agent / frames / decisions topics ──▶ features agent ──▶ Redis (online features,
                                              │                 short-term memory)
                                              └──▶ dead-letter topic (bad input)
    agent / decisions / control topics ──▶ learning agent ──▶ learning topic (shadow
                                              │                 predictions, metrics)
                                              ├──▶ control topic (promotion events)
                                              ├──▶ Redis (live policy + model snapshots)
                                              └──▶ MLflow (models entering canary)
    every topic ─────────────────────────▶ archive agent ──▶ PostgreSQL events table
                                                                (hot 90 d, then cold files)

Run it with ``faust -A streams.app worker`` or ``selflearn worker``; scale out
by starting more workers (up to one per partition). Faust tables are not used
for the features: on a broker without transactions their changelog recovery
is not exact (BROKER.md), so the state lives in Redis with the applied
offsets beside it (see ``streams.store``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import Any

import faust
import redis

from ops.config import Settings, resolve
from projections.archive import ArchiveProjection, EventArchive
from projections.archive_cold import ColdStore
from projections.checkpoints import CheckpointStore
from projections.learning import LearningRuntime
from projections.policy_store import PolicyStore
from projections.promotion import Transition
from projections.registry import ModelRegistry
from schemas import CATALOG, EventValidationError, decode, encode
from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
from streams.memory import ShortTermMemory
from streams.processing import FeatureProjection, Raw, split
from streams.store import OnlineFeatureStore

log = logging.getLogger(__name__)

settings = Settings()
addresses = resolve(settings)
PREFIX = settings.topic_prefix
BATCH = int(os.environ.get("SELFLEARN_WORKER_BATCH", "2000"))

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
)

# -- topics -------------------------------------------------------------------
feature_sources = app.topic(
    topic_name(PREFIX, "agent"), topic_name(PREFIX, "frames"), topic_name(PREFIX, "decisions"),
    value_serializer="raw",
)
learning_sources = app.topic(
    topic_name(PREFIX, "agent"), topic_name(PREFIX, "decisions"), topic_name(PREFIX, "control"),
    value_serializer="raw",
)
archive_sources = app.topic(*(topic_name(PREFIX, s) for s in STREAMS), value_serializer="raw")
dead_letters = app.topic(topic_name(PREFIX, DEAD_LETTER), value_serializer="raw")
outputs = {stream: app.topic(topic_name(PREFIX, stream), value_serializer="raw")
           for stream in ("learning", "control")}

# -- projections --------------------------------------------------------------
_redis = redis.Redis.from_url(addresses.redis_url)
projection = FeatureProjection(
    OnlineFeatureStore(_redis, prefix=PREFIX),
    ShortTermMemory(
        _redis, prefix=PREFIX,
        max_entries=int(os.environ.get("SELFLEARN_MEMORY_MAX_ENTRIES", "100000")),
        ttl_s=int(os.environ.get("SELFLEARN_MEMORY_TTL_S", str(24 * 3600))),
    ),
)


archive = EventArchive(addresses.database_url,
                       cold=ColdStore((settings.data_dir / "cold").resolve().as_uri()))
archive.ensure_schema()
archive_projection = ArchiveProjection(archive)
learning_runtime = LearningRuntime(PREFIX, CheckpointStore(addresses.database_url))
policies = PolicyStore(_redis, prefix=PREFIX)
registry = ModelRegistry(addresses.mlflow_uri)
CHECKPOINT_EVERY = int(os.environ.get("SELFLEARN_CHECKPOINT_EVERY", "5000"))
CHECKPOINT_S = float(os.environ.get("SELFLEARN_CHECKPOINT_S", "2.0"))


# -- agents -------------------------------------------------------------------
@app.agent(feature_sources)
async def features(stream: AsyncIterable[bytes]) -> None:
    """Online features and memory; bad events go to the dead-letter topic.

    A batch is acknowledged only after this body returns, and the projection
    skips offsets it already applied, so a crash anywhere loses nothing and
    counts nothing twice.
    """
    async for batch in stream.take_events(BATCH, within=0.05):  # type: ignore[attr-defined]
        raw: list[Raw] = [
            (e.message.topic, e.message.partition, e.message.offset, e.value) for e in batch
        ]
        result = split(raw)
        # Wait for the broker to take every dead letter before acknowledging.
        pending = [await dead_letters.send(value=record) for record in result.dead]
        await asyncio.gather(*pending)
        projection.apply(result.events)


@app.agent(archive_sources)
async def archiver(stream: Any) -> None:
    """Every event into PostgreSQL, once (keyed by id); an outage stalls, then catches up."""
    async for batch in stream.take_events(BATCH, within=0.2):
        events = []
        for e in batch:
            try:
                events.append((e.message.topic, e.message.partition, e.message.offset,
                               decode(e.value)))
            except EventValidationError:
                continue  # the features agent dead-letters it
        # In a thread: a PostgreSQL outage must not freeze the other agents' loop.
        await asyncio.to_thread(archive_projection.apply, events)


@app.timer(interval=3600.0)
async def retention() -> None:
    """Hourly: days older than the hot window go to cold files, their partitions dropped."""
    await asyncio.to_thread(archive.apply_retention, datetime.now(UTC))


@app.agent(learning_sources)
async def learning(stream: Any) -> None:
    """Shadow learning and promotion, checkpointed before its input is acknowledged.

    Events are acknowledged by hand, only after a checkpoint that covers them
    is in PostgreSQL; a crash re-delivers the rest and the projections' own
    watermarks skip anything the checkpoint already holds.
    """
    manual = stream.noack()
    held: list[Any] = []
    sends: list[Any] = []
    last = time.monotonic()
    async for event in manual.events():
        held.append(event)
        msg = event.message
        try:
            envelope = decode(event.value)
        except EventValidationError:
            envelope = None  # the features agent dead-letters it
        if envelope is not None:
            out = learning_runtime.apply(msg.topic, msg.partition, msg.offset, envelope)
            for key, produced in out.events:
                stream_name = CATALOG[produced.type].stream
                sends.append(await outputs[stream_name].send(key=key.encode(),
                                                             value=encode(produced)))
            for t in out.policies:
                publish_policy(t)
        if len(held) >= CHECKPOINT_EVERY or time.monotonic() - last >= CHECKPOINT_S:
            await asyncio.gather(*sends)
            sends.clear()
            await asyncio.to_thread(learning_runtime.checkpoint)
            for e in held:
                await manual.ack(e)
            held.clear()
            last = time.monotonic()


def publish_policy(t: Transition) -> None:
    """New live policy to Redis (read models poll it); models entering canary to MLflow."""
    if policies.publish(t.policy, t.snapshots) and t.event.type.startswith("promotion."):
        shard = learning_runtime.shards
        metrics = next((s.shadow.metrics(t.policy.agent_id) for s in shard.values()
                        if t.policy.agent_id in s.shadow.models), {})
        registry.on_transition_async(t, metrics, {})


def main() -> None:
    """Entry point for ``selflearn worker``."""
    app.main()
