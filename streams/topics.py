"""Topic administration shared by the worker, the SDK and the tools."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def kafka_tls(ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS (none when ``ssl_context`` is None)."""
    return {"security_protocol": "SSL", "ssl_context": ssl_context} if ssl_context else {}


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int,
                        ssl_context: ssl.SSLContext | None = None) -> None:
    """Create missing topics (``partitions`` each); existing ones are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000,
                                **kafka_tls(ssl_context))
    await admin.start()
    try:
        new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
    finally:
        await admin.close()
