"""Which incarnation of a topic the worker reads: the topic id the broker reports.

Offsets mean something only inside one incarnation of a partition. A broker
that restarts empty (the embedded Tansu) or a topic deleted and re-created
starts again at offset 0 under a new topic id (Kafka ≥ 2.8 and Tansu both
assign a fresh UUID per creation). The batch intake records the ids when it
is assigned partitions and checks them before every commit: an offset read
in one incarnation is never committed into another, and a partition whose
topic changed is read again from its start (the projections skip by
identity what they already applied; docs/exactly-once.md).

aiokafka's metadata requests predate topic ids, so this asks through
librdkafka's admin client (``confluent-kafka``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import wait
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


class _DebugLog:
    """librdkafka's own log lines, at debug level.

    Its connection errors would otherwise go to stderr from every process
    holding a client; whoever asks (worker, SDK) logs what a failed lookup
    means for it.
    """

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


class TopicIncarnations:
    """Looks up the current id of topics (None: the topic does not exist now)."""

    def __init__(self, config: Mapping[str, Any], timeout_s: float = 2.0) -> None:
        settings: dict[str, Any] = {**config, "logger": _DebugLog()}
        self._admin = AdminClient(settings)
        self._timeout_s = timeout_s

    def current(self, topics: Iterable[str]) -> dict[str, str | None]:
        """Topic id of each topic, or None where it is missing or the broker did not say."""
        names = list(topics)
        futures = self._admin.describe_topics(TopicCollection(names),
                                              request_timeout=self._timeout_s)
        wait(futures.values(), timeout=self._timeout_s)  # one deadline for all of them
        self._admin.poll(0)  # hands queued log lines to the logger above
        out: dict[str, str | None] = {}
        for name in names:
            future = futures[name]
            try:
                out[name] = str(future.result().topic_id) if future.done() else None
            except KafkaException as exc:
                log.debug("no topic id for %s: %s", name, exc)
                out[name] = None
        return out
