"""Topic administration shared by the worker, the SDK and the tools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

_NO_AUTO_CREATE = {"allow_auto_topic_creation": False}
TOPIC_PROBE_S = 5.0  # how often the worker checks that its topics still exist


def kafka_tls(ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS (none when ``ssl_context`` is None)."""
    return {"security_protocol": "SSL", "ssl_context": ssl_context} if ssl_context else {}


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int,
                        ssl_context: ssl.SSLContext | None = None) -> list[str]:
    """Create those of ``topics`` the broker does not list (``partitions`` each); returns them.

    Existing topics are left alone: at start, and when a broker restarted empty.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000,
                                **kafka_tls(ssl_context))
    await admin.start()
    try:
        missing = sorted(set(topics) - set(await admin.list_topics()))
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # made meanwhile by another
                await admin.create_topics([NewTopic(t, num_partitions=partitions,
                                                    replication_factor=1) for t in missing])
    finally:
        await admin.close()
    return missing


def make_topics(bootstrap: str, topics: Iterable[str], partitions: int,
                ssl_context: ssl.SSLContext | None = None) -> list[str]:
    """:func:`ensure_topics` from synchronous code, on a loop of its own in another thread.

    For start-up hooks that run before (or beside) the caller's event loop,
    which ``asyncio.run`` on this thread would replace.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="topics") as pool:
        return pool.submit(asyncio.run, ensure_topics(bootstrap, list(topics), partitions,
                                                      ssl_context)).result()


def refuse_auto_create() -> None:
    """Make this process's aiokafka clients ask for metadata with topic auto-creation off.

    A broker creates a topic that a metadata request names when auto-creation
    is on (Kafka's default, with ``num.partitions`` = 1; Tansu makes 4) and the
    request allows it. librdkafka and the Java clients have a switch for it
    (``allow.auto.create.topics``; the SDK sets it off); aiokafka has none and
    always allows it. So after a broker restarted empty, the worker's consumer
    refreshing its metadata re-created our topics with the broker's partition
    count before ``ensure_topics`` could make them with ours, and every agent
    whose key hashes differently modulo that count moved partition (its events
    counted as sequence gaps in the new shard, and co-partitioning broke).
    Topics are only ever made by :func:`ensure_topics`. The worker calls this
    before Faust starts its clients (Faust's consumer, starting on a fresh
    broker, created them with 4 partitions so) and makes its topics right
    after; either intake re-creates every topic the worker reads or writes
    once the broker lost them. The SDK does not call it (it would change an
    agent's own aiokafka clients).
    """
    import aiokafka.client

    if getattr(aiokafka.client.MetadataRequest, "keywords", None) != _NO_AUTO_CREATE:
        aiokafka.client.MetadataRequest = functools.partial(  # type: ignore[misc]
            MetadataRequest, **_NO_AUTO_CREATE)
