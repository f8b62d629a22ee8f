"""The Faust app: topics, projections and the agents that connect them.

Read top to bottom, this module is the data flow of DESIGN.md:

    agent / frames / decisions topics ──▶ features agent ──▶ Redis (online features,
                                              │                 short-term memory)
                                              └──▶ dead-letter topic (bad input)

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
from collections.abc import AsyncIterable

import faust
import redis

from ops.config import Settings, resolve
from schemas.catalog import DEAD_LETTER, topic_name
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
dead_letters = app.topic(topic_name(PREFIX, DEAD_LETTER), value_serializer="raw")

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


def main() -> None:
    """Entry point for ``selflearn worker``."""
    app.main()
