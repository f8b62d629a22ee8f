"""The SDK an agent imports: emit events without ever waiting on the broker.

>>> import tempfile, os
>>> box = os.path.join(tempfile.mkdtemp(), "outbox.db")
>>> client = AgentClient("doc-keeper", bootstrap=None, outbox_path=box)  # outbox only
>>> ev = client.emit("review.completed",
...                  {"change_id": "c1", "project": "Ant", "passed_first_try": True})
>>> ev.producer, ev.schema_version
('doc-keeper', 1)
>>> bad = client.emit("no.such.type", {})
>>> bad.reason
'unknown_type'
>>> client.close()
"""

from __future__ import annotations

import itertools
import logging
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agents.decision import Decision, DecisionEngine
from agents.outbox import Outbox
from agents.privacy import scrub_payload
from agents.producer import BackgroundProducer, ProducerStats
from schemas import CATALOG, Envelope, EventValidationError, decode, encode, new_event, uuid7
from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
from schemas.deadletter import dead_letter
from schemas.envelope import check_size

log = logging.getLogger(__name__)

Scrubber = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """What ``emit`` returns for bad input: the reason code and a human message.

    The attempt itself is kept in the dead-letter topic, so nothing is lost.
    """

    reason: str
    message: str

    def __bool__(self) -> bool:
        return False


class AgentClient:
    """One agent's handle on selflearn.

    ``emit`` validates, encodes and queues an event, then returns at once; a
    background producer delivers it (keyed by agent id, so one agent's events
    keep their order). With ``bootstrap=None`` events wait in the durable
    outbox until a client with a broker address drains it.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        bootstrap: str | None,
        topic_prefix: str = "selflearn",
        outbox_path: str | Path | None = None,
        partitions: int = 8,
        queue_size: int = 100_000,
        scrub: Scrubber | None = scrub_payload,
        decision_kind: str | None = None,
        redis_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_decision: Callable[[Decision], object] | None = None,
        resend_window_s: float = 30.0,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id is required: it keys and orders this agent's events")
        self.agent_id = agent_id
        self.topic_prefix = topic_prefix
        self._key = agent_id.encode()
        self._scrub = scrub
        self._topics = {s.type: topic_name(topic_prefix, s.stream) for s in CATALOG.values()}
        self.dead_letter_topic = topic_name(topic_prefix, DEAD_LETTER)
        if outbox_path is None:
            outbox_path = Path(tempfile.gettempdir()) / "selflearn-outbox" / f"{agent_id}.db"
        self._outbox = Outbox(outbox_path)
        # Producer identity (docs/exactly-once.md): projections de-duplicate by
        # (producer id, epoch, dense sequence per stream), never by clock or offset.
        self.producer_id, self.producer_epoch = self._outbox.next_epoch()
        self._next_seq = dict.fromkeys(STREAMS, 0)
        self._producer: BackgroundProducer | None = None
        self._offline_seq = itertools.count(self._outbox.max_seq() + 1)  # no broker: outbox only
        if bootstrap is not None:
            all_topics = [topic_name(topic_prefix, s) for s in (*STREAMS, DEAD_LETTER)]
            self._producer = BackgroundProducer(
                bootstrap, self._outbox, topics=all_topics, partitions=partitions,
                queue_size=queue_size, ssl_context=ssl_context, resend_window_s=resend_window_s,
            )
        self.rejected = 0
        self._order = threading.Lock()
        self.engine: DecisionEngine | None = None
        if decision_kind is not None:
            self.engine = DecisionEngine(agent_id, decision_kind, redis_url=redis_url,
                                         prefix=topic_prefix, on_decision=on_decision)

    @classmethod
    def from_settings(cls, agent_id: str, settings: Any = None, **kwargs: Any) -> AgentClient:
        """Connect with the configured (or embedded-stack) addresses."""
        from schemas.settings import Settings, resolve

        settings = settings or Settings()
        addresses = resolve(settings)
        kwargs.setdefault("topic_prefix", settings.topic_prefix)
        kwargs.setdefault("redis_url", addresses.redis_url)
        kwargs.setdefault("ssl_context", settings.kafka_ssl_context())
        kwargs.setdefault("partitions", settings.partitions)
        kwargs.setdefault(
            "outbox_path", Path(settings.data_dir) / "outbox" / f"{agent_id}.db"
        )
        return cls(agent_id, bootstrap=addresses.kafka_bootstrap, **kwargs)

    # -- emitting (never blocks, never raises on bad input) -----------------------
    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        subject_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        _scrubbed: bool = False,
    ) -> Envelope | Rejected:
        """Validate and queue one event; returns the envelope, or :class:`Rejected`."""
        try:
            if self._scrub is not None and not _scrubbed:
                payload = self._scrub(event_type, payload)
            stream = CATALOG[event_type].stream if event_type in CATALOG else "agent"
            # Sequence and queue position are taken together, so each stream's
            # sequence is dense in the order its events reach the broker; it is
            # used up only by a valid event (a rejected one leaves no gap).
            with self._order:
                seq = self._next_seq[stream]
                event = new_event(
                    event_type, payload, producer=self.agent_id, subject_id=subject_id,
                    correlation_id=correlation_id, causation_id=causation_id,
                    producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                    sequence=seq,
                )
                data = encode(event)
                check_size(len(data))  # the worker would dead-letter it; say so here
                self._next_seq[stream] = seq + 1
                self._submit(self._topics[event.type], data)
        except EventValidationError as exc:
            attempt = {"type": event_type, "payload": payload, "subject_id": subject_id}
            return self._reject(orjson.dumps(attempt, default=str), exc)
        return event

    def decide(self, context: Mapping[str, Any], *, request_id: str | None = None) -> Decision:
        """Ask the in-process decision engine; logs the request and answer as events.

        Returns at once (no network on this path); see :mod:`agents.decision`.
        """
        if self.engine is None:
            raise RuntimeError(f"{self.agent_id}: created without decision_kind; cannot decide")
        rid = request_id or str(uuid7())
        if self._scrub is not None:
            # The engine sees exactly what the logged request carries (PII removed),
            # so an auditor can recompute the decision from the event alone.
            context = self._scrub("decision.requested", context)
        decision = self.engine.decide(context, request_id=rid)
        requested = self.emit("decision.requested",
                              {"request_id": rid, "kind": decision.kind, "context": context},
                              correlation_id=rid, _scrubbed=True)
        self.emit("decision.made", {
            "request_id": rid, "kind": decision.kind, "output": decision.output,
            "model_version": decision.model_version, "policy": decision.policy,
            "inputs_digest": decision.inputs_digest, "features": decision.features,
            "latency_us": decision.latency_us,
        }, correlation_id=rid, _scrubbed=True,
           causation_id=str(requested.event_id) if isinstance(requested, Envelope) else None)
        return decision

    def emit_event(self, event: Envelope) -> Envelope:
        """Queue an already-built envelope (e.g. one being forwarded)."""
        self._submit(self._topics[event.type], encode(event))
        return event

    def emit_raw(self, data: bytes) -> Envelope | Rejected:
        """Validate wire bytes from elsewhere and queue them; bad bytes go to dead letters."""
        try:
            event = decode(data)
        except EventValidationError as exc:
            return self._reject(data, exc)
        self._submit(self._topics[event.type], data)
        return event

    def _reject(self, raw: bytes, exc: EventValidationError) -> Rejected:
        self.rejected += 1
        log.warning("%s: event rejected: %s", self.agent_id, exc)
        record = dead_letter(
            raw, reason=exc.reason.value, error=exc.message, source="sdk", producer=self.agent_id
        )
        self._submit(self.dead_letter_topic, record)
        return Rejected(exc.reason.value, exc.message)

    def _submit(self, topic: str, value: bytes) -> None:
        if self._producer is None:
            self._outbox.put_many([(next(self._offline_seq), topic, self._key, value)])
        else:
            self._producer.submit(topic, self._key, value)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def stats(self) -> ProducerStats:
        return self._producer.stats if self._producer else ProducerStats()

    def pending(self) -> int:
        """Events not yet acknowledged by the broker."""
        return self._producer.pending() if self._producer else len(self._outbox)

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every event emitted so far is on the broker (for shutdown and tests)."""
        return self._producer.flush(timeout) if self._producer else False

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within ``timeout``; the rest stays in the outbox."""
        if self.engine is not None:
            self.engine.close()
        if self._producer is not None:
            self._producer.close(timeout)
        self._outbox.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
