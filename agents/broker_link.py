"""What the SDK's producer asks the broker, apart from sending: idempotence, topics, settings.

Split from :mod:`agents.producer`, which owns the delivery state; nothing
here runs on the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.incarnations import TopicIncarnations
from streams.topics import kafka_tls

log = logging.getLogger("agents.producer")

# What each broker answered to InitProducerId, so only the first producer asks.
_IDEMPOTENT_BROKERS: dict[str, bool] = {}


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


async def _init_producer_id(bootstrap: str, ssl_context: ssl.SSLContext | None,
                            timeout_ms: int) -> bool:
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                             request_timeout_ms=timeout_ms, **kafka_tls(ssl_context))
    try:
        with _quiet("aiokafka.producer.sender"):
            await probe.start()
    except KafkaConnectionError:
        raise
    except KafkaError:
        log.info("broker refuses idempotent producers; using acks=all only")
        return False
    finally:
        await probe.stop()
    return True


def grants_idempotence(bootstrap: str, ssl_context: ssl.SSLContext | None,
                       timeout_ms: int) -> bool:
    """Whether the broker hands out producer ids (InitProducerId), asked as aiokafka does.

    Asked once per broker and process. librdkafka is given a producer id by
    Tansu too, but Tansu's answer to aiokafka's request is an error and it
    keeps no producer state across a restart, so this answer decides
    (docs/broker.md). Raises ``KafkaConnectionError`` when unreachable.
    """
    known = _IDEMPOTENT_BROKERS.get(bootstrap)
    if known is None:
        known = asyncio.run(_init_producer_id(bootstrap, ssl_context, timeout_ms))
        _IDEMPOTENT_BROKERS[bootstrap] = known
    return known


class _DebugLog:
    """librdkafka's log lines at debug level: the producer logs what an outage means."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


def producer_config(base: Mapping[str, str], *, idempotent: bool, queue_size: int,
                    timeout_ms: int) -> dict[str, Any]:
    """librdkafka settings of the SDK's producer (``base``: bootstrap and TLS)."""
    return {
        **base,
        "acks": "all",
        "enable.idempotence": idempotent,
        # Without idempotence only one request in flight keeps retries in order.
        "max.in.flight.requests.per.connection": 5 if idempotent else 1,
        # The Java client's and aiokafka's partitioner: an agent id maps to the
        # partition every other client picks for it.
        "partitioner": "murmur2_random",
        "allow.auto.create.topics": False,  # topics are made with the configured partitions
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": queue_size,
        "request.timeout.ms": timeout_ms,
        "message.timeout.ms": 2 * timeout_ms,
        "socket.connection.setup.timeout.ms": timeout_ms,
        "reconnect.backoff.max.ms": 1_000,
        "logger": _DebugLog(),
    }


class TopicWatch:
    """Notices a broker that forgot our topics or holds new incarnations of them."""

    def __init__(self, bootstrap: str, topics: Iterable[str], config: Mapping[str, str],
                 window_s: float, timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._topics = tuple(topics)
        self._config = config
        self._window_s = window_s
        self._timeout_s = timeout_s
        self._incarnations: TopicIncarnations | None = None  # made once connected
        self._topic_ids: dict[str, str] = {}

    def renewed(self) -> set[str]:
        """Topics whose id differs from the last one seen (an unknown id is no change)."""
        if self._incarnations is None:
            self._incarnations = TopicIncarnations(self._config)
        now = self._incarnations.current(self._topics)
        renewed = {t for t, tid in now.items()
                   if tid is not None and self._topic_ids.get(t, tid) != tid}
        self._topic_ids.update({t: tid for t, tid in now.items() if tid is not None})
        return renewed

    def forgot(self, producer: Producer) -> bool:
        """True when the broker is unreachable, lost our topics, or has new ones.

        Tansu acknowledges writes to a topic it no longer knows and then never
        serves them (docs/broker.md), so a restart must be noticed before the
        re-send window has passed: the producer asks every ``PROBE_S``.
        Presence is not enough: after a restart another client (a worker, a
        second agent) may re-create the topics before this probe runs, and what
        this producer wrote in between is gone. So each topic's id is compared
        with the one seen before: a different id is a new incarnation, and the
        window is sent again into it.
        """
        try:
            cluster = producer.list_topics(timeout=self._timeout_s)
        except KafkaException:
            return True
        missing = {t for t in self._topics
                   if t not in cluster.topics or cluster.topics[t].error is not None}
        if missing:
            log.warning("broker %s lost %d topics (restarted?); re-creating them and "
                        "re-sending what no worker has committed (at least the last %.0f s)",
                        self._bootstrap, len(missing), self._window_s)
            return True
        renewed = self.renewed()
        if renewed:
            log.warning("broker %s has new incarnations of %d topics (restarted?); "
                        "re-sending what no worker has committed (at least the last %.0f s)",
                        self._bootstrap, len(renewed), self._window_s)
        return bool(renewed)

    def close(self) -> None:
        """Drop the admin client (its librdkafka threads end with it)."""
        self._incarnations = None


class GroupCommits:
    """The workers' committed offsets, asked with a consumer that never joins the group.

    ``committed`` answers ``{}`` when the broker does not (the caller then keeps
    what it holds: not knowing is never taken as "applied").
    """

    def __init__(self, config: Mapping[str, Any], group: str, timeout_s: float) -> None:
        self._config = {**config, "group.id": group, "enable.auto.commit": False,
                        "logger": _DebugLog()}
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def committed(self, parts: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        try:
            if self._consumer is None:
                self._consumer = Consumer(self._config)
            answer = self._consumer.committed([TopicPartition(t, p) for t, p in parts],
                                              timeout=self._timeout_s)
        except (KafkaException, RuntimeError) as exc:
            log.debug("committed offsets unavailable: %s", exc)
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in answer
                if tp.error is None and tp.offset >= 0}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
