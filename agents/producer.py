"""Background producer: drains the emit queue to the broker, spills to the outbox.

The caller's thread only appends to an in-memory deque (or, when that is full,
writes one row to the local SQLite outbox). A daemon thread owns an asyncio
loop and an aiokafka producer; it sends in batches with ``acks=all`` and
idempotence when the broker supports it. When a send fails, the batch goes
to the outbox and everything after it queues behind, so order per key is
kept; once the broker answers again the outbox is replayed oldest first.
Re-sent events may duplicate ones the broker already had; every event
carries its id, so consumers de-duplicate.

Acknowledged events are also kept for ``resend_window_s`` (bounded by
``resend_max``): after an outage they are sent again, because a broker that
restarts without durable storage (the embedded Tansu, docs/broker.md) forgets
what it had acknowledged. Duplicates are harmless by design; lost events
are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agents.outbox import Outbox, Row
from streams.incarnations import TopicIncarnations
from streams.topics import ensure_topics, kafka_tls

log = logging.getLogger(__name__)

BATCH = 5_000
IDLE_SLEEP_S = 0.002
PROBE_S = 1.0  # how often the broker is asked whether it still has our topics
RETRY_S = 0.5
SWITCH_INTERVAL_S = 0.0002


class Deferred(Protocol):
    """An event whose bytes are made off the caller's thread (sealing personal data).

    ``__call__`` runs on the producer thread (it may run PII detection and
    encryption there); ``now`` runs on the caller's thread when the queue is
    full and the event must go to the outbox at once (cheaper: no NER).
    """

    def __call__(self) -> bytes: ...

    def now(self) -> bytes: ...


Queued = tuple[int, str, bytes, "bytes | Deferred"]


@dataclass
class ProducerStats:
    """Counters an operator (and the tests) can read at any time."""

    submitted: int = 0
    sent: int = 0
    spilled: int = 0
    send_failures: int = 0
    idempotent: bool = False
    connected: bool = False


_PARTITIONER = DefaultPartitioner()

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


class BackgroundProducer:
    """Owns the broker connection on a daemon thread; ``submit`` never waits on it."""

    def __init__(
        self,
        bootstrap: str,
        outbox: Outbox,
        *,
        topics: Iterable[str] = (),
        partitions: int = 8,
        queue_size: int = 100_000,
        idempotence: bool | None = None,
        request_timeout_ms: int = 5_000,
        resend_window_s: float = 30.0,
        resend_max: int = 100_000,
        ssl_context: ssl.SSLContext | None = None,
        admin_config: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._ssl = ssl_context
        # Topic ids tell a re-created topic from the one we wrote to (see
        # _broker_forgot). librdkafka needs its own TLS settings; without them a
        # TLS broker is probed by topic presence only.
        if admin_config is None and ssl_context is None:
            admin_config = {"bootstrap.servers": bootstrap}
        self._admin_config = admin_config
        self._incarnations: TopicIncarnations | None = None  # made once connected
        self._topic_ids: dict[str, str] = {}
        self.stats = ProducerStats()
        self._outbox = outbox
        self._topics = tuple(topics)
        self._partitions = partitions
        self._queue: deque[Queued] = deque()
        self._queue_size = queue_size
        self._idempotence = idempotence
        self._timeout_ms = request_timeout_ms
        self._seq = itertools.count(outbox.max_seq() + 1)
        self._in_flight = 0
        self._taking = 0
        self._recent: deque[tuple[float, Row]] = deque()
        self._outage = False
        self._partitions_of: dict[tuple[str, bytes], int] = {}
        # The window must outlast the restart probe, or a restart goes unrepaired.
        self._resend_window_s = max(resend_window_s, 3 * PROBE_S)
        self._resend_max = resend_max
        self._stopping = threading.Event()
        # The producer thread runs Python code in bursts; a short GIL switch
        # interval (default 5 ms) bounds how long it can delay the caller's
        # thread (emit, decide, the frame loop) to a fraction of a millisecond.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._main, name="selflearn-producer", daemon=True)
        self._thread.start()

    # -- caller side (hot path) -------------------------------------------------
    def submit(self, topic: str, key: bytes, value: bytes | Deferred) -> None:
        """Queue one event (bytes, or :class:`Deferred` bytes); returns at once.

        Never touches the network. A deferred value is made on the producer
        thread, before anything leaves the process or reaches the outbox.
        """
        self.stats.submitted += 1
        if len(self._queue) >= self._queue_size:
            data = value if isinstance(value, bytes) else value.now()
            self._outbox.put_many([(next(self._seq), topic, key, data)])
            self.stats.spilled += 1
        else:
            self._queue.append((next(self._seq), topic, key, value))

    def pending(self) -> int:
        """Events not yet acknowledged by the broker (queued, in flight or in the outbox)."""
        return len(self._queue) + self._taking + self._in_flight + len(self._outbox)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Try to deliver what is queued for up to ``timeout`` s, then spill the rest."""
        self.flush(timeout)
        self._stopping.set()
        self._thread.join(timeout + 5)
        self._outbox.put_many(self._take(len(self._queue)))

    # -- background thread ------------------------------------------------------
    def _take(self, limit: int) -> list[Row]:
        rows: list[Row] = []
        # Sealing a batch takes a while: rows taken but not yet in flight still
        # count as pending, so flush() cannot return before they are sent.
        with contextlib.suppress(IndexError):
            for _ in range(limit):
                seq, topic, key, value = self._queue.popleft()
                self._taking += 1
                rows.append((seq, topic, key, value if isinstance(value, bytes) else value()))
        self._taking = 0
        return rows

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _connect(self) -> AIOKafkaProducer | None:
        try:
            if self._topics:
                await ensure_topics(self.bootstrap, self._topics, self._partitions, self._ssl)
                # The incarnation written to from now on (anything before it is
                # re-sent from the window when an outage led here).
                await self._renewed_topics()
            known = self._idempotence
            if known is None:
                known = _IDEMPOTENT_BROKERS.get(self.bootstrap)
            tries = [True, False] if known is None else [known]
            for idempotent in tries:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                    enable_idempotence=idempotent, request_timeout_ms=self._timeout_ms,
                    max_batch_size=256 * 1024, **kafka_tls(self._ssl),
                )
                try:
                    # aiokafka logs a refused InitProducerId as an error; here it is an
                    # expected answer of brokers without idempotence (Tansu).
                    with _quiet("aiokafka.producer.sender"):
                        await producer.start()
                except KafkaError:
                    await producer.stop()
                    if idempotent and len(tries) > 1:
                        log.info("broker refuses idempotent producers; using acks=all only")
                        _IDEMPOTENT_BROKERS[self.bootstrap] = False
                        continue
                    raise
                _IDEMPOTENT_BROKERS.setdefault(self.bootstrap, idempotent)
                self.stats.idempotent = idempotent
                self.stats.connected = True
                return producer
        except (KafkaError, OSError) as exc:
            log.debug("broker %s unreachable: %s", self.bootstrap, exc)
        return None

    async def _deliver(self, producer: AIOKafkaProducer, rows: list[Row]) -> bool:
        """Send rows and wait for every acknowledgement; False if any failed.

        Rows are appended to record batches per partition (``send_batch``):
        one future per batch instead of one per event, which halves the
        producer thread's CPU per event. Batches of one partition go out in
        order, and the partition is the default partitioner's for the key,
        exactly as ``send`` would choose.
        """
        try:
            futures = []
            open_batches: dict[tuple[str, int], Any] = {}
            for _, topic, key, value in rows:
                partition = await self._partition(producer, topic, key)
                batch = open_batches.get((topic, partition))
                if batch is None:
                    batch = open_batches[(topic, partition)] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = open_batches[(topic, partition)] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for (topic, partition), batch in open_batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("delivery of %d events failed (%s)", len(rows), exc)
            self.stats.send_failures += 1
            return False
        self.stats.sent += len(rows)
        self._remember_acked(rows)
        return True

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        cached = self._partitions_of.get((topic, key))
        if cached is None:
            parts = sorted(await producer.partitions_for(topic))
            cached = self._partitions_of[(topic, key)] = _PARTITIONER(key, parts, parts)
        return cached

    def _remember_acked(self, rows: list[Row]) -> None:
        now = time.monotonic()
        self._recent.extend((now, row) for row in rows)
        horizon = now - self._resend_window_s
        while self._recent and (
            len(self._recent) > self._resend_max or self._recent[0][0] < horizon
        ):
            self._recent.popleft()

    def _requeue_recent(self) -> None:
        """After an outage: acknowledged-but-recent events go out again, in order."""
        if self._recent:
            self._outbox.put_many(row for _, row in self._recent)
            self._recent.clear()

    async def _broker_forgot(self, producer: AIOKafkaProducer) -> bool:
        """True when the broker is unreachable, lost our topics, or has new ones.

        Tansu acknowledges writes to a topic it no longer knows and then never
        serves them (docs/broker.md), so a restart must be noticed before the
        re-send window has passed: every ``PROBE_S`` the topics are looked up.
        Presence is not enough: after a restart another client (a worker, a
        second agent) may re-create the topics before this probe runs, and what
        this producer wrote in between is gone. So each topic's id is compared
        with the one seen before: a different id is a new incarnation, and the
        window is sent again into it.
        """
        try:
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(),
                                             self._timeout_ms / 1000)
        except (TimeoutError, KafkaError, OSError):
            return True
        missing = set(self._topics) - set(cluster.topics())
        if missing:
            log.warning("broker %s lost %d topics (restarted?); re-creating them and "
                        "re-sending the last %.0f s", self.bootstrap, len(missing),
                        self._resend_window_s)
            return True
        renewed = await self._renewed_topics()
        if renewed:
            log.warning("broker %s has new incarnations of %d topics (restarted?); "
                        "re-sending the last %.0f s", self.bootstrap, len(renewed),
                        self._resend_window_s)
        return bool(renewed)

    async def _renewed_topics(self) -> set[str]:
        """Topics whose id differs from the last one seen (an unknown id is no change)."""
        if self._admin_config is None:
            return set()
        if self._incarnations is None:
            self._incarnations = TopicIncarnations(self._admin_config)
        now = await asyncio.to_thread(self._incarnations.current, self._topics)
        renewed = {t for t, tid in now.items()
                   if tid is not None and self._topic_ids.get(t, tid) != tid}
        self._topic_ids.update({t: tid for t, tid in now.items() if tid is not None})
        return renewed

    async def _run(self) -> None:
        producer: AIOKafkaProducer | None = None
        probed = time.monotonic()
        while not self._stopping.is_set():
            if producer is None:
                producer = await self._connect()
                if producer is not None and self._outage:
                    self._requeue_recent()
                    self._outage = False
                if producer is None:
                    self._outbox.put_many(self._take(len(self._queue)))
                    await asyncio.sleep(RETRY_S)
                    continue
                self._partitions_of.clear()  # a re-created topic may have other partitions
                probed = time.monotonic()
            ok = True
            if self._topics and time.monotonic() - probed >= PROBE_S:
                probed = time.monotonic()
                ok = not await self._broker_forgot(producer)
            if ok and len(self._outbox):
                # Keep order: everything queued now goes behind what is waiting.
                self._outbox.put_many(self._take(len(self._queue)))
                rows = self._outbox.peek(BATCH)
                ok = await self._deliver(producer, rows)
                if ok:
                    self._outbox.delete_through(rows[-1][0])
            elif ok:
                self._in_flight = len(rows := self._take(BATCH))
                if not rows:
                    await asyncio.sleep(IDLE_SLEEP_S)
                    continue
                ok = await self._deliver(producer, rows)
                if not ok:
                    self._outbox.put_many(rows)
                    self.stats.spilled += len(rows)
                self._in_flight = 0
            if not ok:
                self._outage = True
                self.stats.connected = False
                with contextlib.suppress(Exception):
                    await producer.stop()
                producer = None
                await asyncio.sleep(RETRY_S)
        if producer is not None:
            await producer.stop()
