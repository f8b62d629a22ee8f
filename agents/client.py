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
from agents.erasure import ErasureFollower
from agents.outbox import Outbox
from agents.privacy import scrub_payload
from agents.producer import BackgroundProducer, ProducerStats
from schemas import CATALOG, Envelope, EventValidationError, decode, encode, new_event, uuid7
from schemas.catalog import DEAD_LETTER, STREAMS, all_topics, intake_group, topic_name
from schemas.deadletter import dead_letter
from schemas.envelope import check_size
from schemas.protect import CONTEXT_PERSONAL, Protector, personal_paths

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


class _Sealed:
    """An event sealed and encoded off the caller's thread (:class:`agents.producer.Deferred`)."""

    __slots__ = ("event", "later", "soon")

    def __init__(self, event: Envelope, later: Protector, soon: Protector) -> None:
        self.event, self.later, self.soon = event, later, soon

    def __call__(self) -> bytes:
        try:
            return encode(self.event, self.later.sealed_payload(self.event))
        except Exception as exc:  # e.g. the NER model failed: seal with the quick detector
            log.warning("sealing event %s with %s failed (%s); using the quick detector",
                        self.event.event_id, type(self.later.detector).__name__,
                        type(exc).__name__)
            return self.now()

    def now(self) -> bytes:
        return encode(self.event, self.soon.sealed_payload(self.event))


def _withheld(event_type: str, payload: Any) -> Any:
    """A rejected attempt without its personal text (dead letters must not hold it)."""
    if not isinstance(payload, Mapping):
        return payload
    personal = set(CATALOG[event_type].personal_fields) if event_type in CATALOG else set()
    out = {k: ("[withheld]" if k in personal else v) for k, v in payload.items()}
    context = out.get("context")
    if isinstance(context, Mapping):
        out["context"] = {k: ("[withheld]" if k in CONTEXT_PERSONAL else v)
                          for k, v in context.items()}
    return out


class AgentClient:
    """One agent's handle on selflearn.

    ``emit`` validates, encodes and queues an event, then returns at once; a
    background producer delivers it (keyed by agent id, so one agent's events
    keep their order). With ``bootstrap=None`` events wait in the durable
    outbox until a client with a broker address drains it.

    With a ``protector`` (:meth:`from_settings` makes one), personal fields and
    the persons named in them are encrypted per data subject on the producer
    thread, before the event is encoded — so neither the broker nor the outbox
    file ever holds them in clear; ``emit`` only queues the envelope. Where the
    caller's thread must write the outbox itself (queue full, or no broker),
    ``protector_now`` seals it there (pattern detection at most, never NER).

    With a ``redis_url``, the client follows the erased subjects
    (:mod:`agents.erasure`, every ``erasure_poll_s`` seconds on its own thread)
    and drops their cached keys and the text caches of its learners.
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
        protector: Protector | None = None,
        protector_now: Protector | None = None,
        admin_config: Mapping[str, str] | None = None,
        erasure_poll_s: float = 1.0,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id is required: it keys and orders this agent's events")
        self.agent_id = agent_id
        self.topic_prefix = topic_prefix
        self._key = agent_id.encode()
        self._scrub = scrub
        self.protector = protector
        self._protect_now = protector_now or protector
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
            self._producer = BackgroundProducer(
                bootstrap, self._outbox, topics=all_topics(topic_prefix), partitions=partitions,
                queue_size=queue_size, ssl_context=ssl_context, resend_window_s=resend_window_s,
                admin_config=admin_config, confirm_group=intake_group(topic_prefix),
            )
        self.rejected = 0
        self._order = threading.Lock()
        self.engine: DecisionEngine | None = None
        if decision_kind is not None:
            self.engine = DecisionEngine(agent_id, decision_kind, redis_url=redis_url,
                                         prefix=topic_prefix, on_decision=on_decision)
        self.erasures: ErasureFollower | None = None
        if redis_url is not None and (protector is not None or self.engine is not None):
            # An erased subject's cached keys and text leave this process too
            # (agents.erasure), polled from a thread of its own: emit and decide never wait.
            from projections.redis_client import redis_client

            stores = {id(p.keys): p.keys for p in (protector, protector_now) if p is not None}
            self.erasures = ErasureFollower(
                redis_client(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0),
                topic_prefix, [k.forget for k in stores.values()], every_s=erasure_poll_s,
                name=agent_id)

    @classmethod
    def from_settings(cls, agent_id: str, settings: Any = None, **kwargs: Any) -> AgentClient:
        """Connect with the configured (or embedded-stack) addresses."""
        from projections.sealing import use_settings
        from schemas.addresses import resolve
        from schemas.settings import Settings

        settings = settings or Settings()
        use_settings(settings)  # the key that checks model snapshots read from Redis
        addresses = resolve(settings)
        kwargs.setdefault("topic_prefix", settings.topic_prefix)
        kwargs.setdefault("redis_url", addresses.redis_url)
        kwargs.setdefault("ssl_context", settings.kafka_ssl_context())
        kwargs.setdefault("admin_config", settings.librdkafka_config(addresses.kafka_bootstrap))
        kwargs.setdefault("partitions", settings.partitions)
        kwargs.setdefault(
            "outbox_path", Path(settings.data_dir) / "outbox" / f"{agent_id}.db"
        )
        if settings.privacy and "protector" not in kwargs:
            from schemas.protect import detector_for, key_store

            keys = key_store(settings)
            kwargs["protector"] = Protector(keys, detector_for(settings.pii_detector))
            quick = "none" if settings.pii_detector == "none" else "pattern"
            kwargs["protector_now"] = Protector(keys, detector_for(quick))
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
                payload = self._scrubbed(event_type, payload)
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
                # Too large for the broker: refused here, where the caller can see it
                # (the background thread encodes again after sealing personal text).
                data = encode(event)
                check_size(len(data))
                self._next_seq[stream] = seq + 1
                self._submit_event(event, data)
        except EventValidationError as exc:
            attempt = {"type": event_type, "payload": _withheld(event_type, payload),
                       "subject_id": subject_id}
            return self._reject(orjson.dumps(attempt, default=str), exc)
        return event

    def decide(self, context: Mapping[str, Any], *, request_id: str | None = None,
               subject_id: str | None = None) -> Decision:
        """Ask the in-process decision engine; logs the request and answer as events.

        Returns at once (no network on this path); see :mod:`agents.decision`.
        The engine sees the plaintext context; the logged request is sealed
        under ``subject_id`` (the data subject of the context's free text).
        """
        if self.engine is None:
            raise RuntimeError(f"{self.agent_id}: created without decision_kind; cannot decide")
        rid = request_id or str(uuid7())
        if self._scrub is not None:
            # The engine sees exactly what the logged request carries (PII removed),
            # so an auditor can recompute the decision from the event alone.
            context = self._scrubbed("decision.requested", {"context": context})["context"]
        decision = self.engine.decide(context, request_id=rid)
        requested = self.emit("decision.requested",
                              {"request_id": rid, "kind": decision.kind, "context": context},
                              subject_id=subject_id, correlation_id=rid, _scrubbed=True)
        self.emit("decision.made", {
            "request_id": rid, "kind": decision.kind, "output": decision.output,
            "model_version": decision.model_version, "policy": decision.policy,
            "inputs_digest": decision.inputs_digest, "features": decision.features,
            "latency_us": decision.latency_us,
        }, subject_id=subject_id, correlation_id=rid, _scrubbed=True,
           causation_id=str(requested.event_id) if isinstance(requested, Envelope) else None)
        return decision

    def _scrubbed(self, event_type: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """The scrubber's output; with a protector, personal text is left to the protector.

        Personal text is sealed per subject (its PII spans each under their own
        key), so the scrubber's destructive redaction is not needed there and
        would keep named persons from getting their own key.
        """
        assert self._scrub is not None
        paths = personal_paths(event_type, payload) if self.protector is not None else []
        if not paths:
            return self._scrub(event_type, payload)
        # The scrubber does not see the personal text at all: redacting text that is
        # then put back would cost the caller's thread ~10 µs per decision for nothing.
        fields = {p[0] for p in paths if len(p) == 1}
        context_keys = {p[1] for p in paths if len(p) == 2}
        stripped = {k: v for k, v in payload.items() if k not in fields}
        if context_keys:
            stripped["context"] = {k: v for k, v in payload["context"].items()
                                   if k not in context_keys}
        scrubbed = self._scrub(event_type, stripped)
        out = {k: v if k in fields else scrubbed[k] for k, v in payload.items()
               if k in fields or k in scrubbed}
        if context_keys and isinstance(out.get("context"), Mapping):
            opened = out["context"]
            out["context"] = {k: v if k in context_keys else opened[k]
                              for k, v in payload["context"].items()
                              if k in context_keys or k in opened}
        return out

    def emit_event(self, event: Envelope) -> Envelope:
        """Queue an already-built envelope (e.g. one being forwarded)."""
        self._submit_event(event)
        return event

    def emit_raw(self, data: bytes) -> Envelope | Rejected:
        """Validate wire bytes from elsewhere and queue them; bad bytes go to dead letters."""
        try:
            event = decode(data)
        except EventValidationError as exc:
            return self._reject(data, exc)
        if self.protector is None:
            self._submit(self._topics[event.type], data)
        else:
            self._submit_event(event)
        return event

    def _reject(self, raw: bytes, exc: EventValidationError) -> Rejected:
        self.rejected += 1
        log.warning("%s: event rejected: %s", self.agent_id, exc)
        record = dead_letter(
            raw, reason=exc.reason.value, error=exc.message, source="sdk", producer=self.agent_id
        )
        self._submit(self.dead_letter_topic, record)
        return Rejected(exc.reason.value, exc.message)

    def _submit_event(self, event: Envelope, data: bytes | None = None) -> None:
        """Queue ``event``; ``data`` is its encoding when the caller already made it."""
        topic = self._topics[event.type]
        if self.protector is None or self._protect_now is None:
            self._submit(topic, data if data is not None else encode(event))
        elif self._producer is None:
            self._submit(topic, encode(self._protect_now.protect(event)))
        else:
            self._producer.submit(topic, self._key, _Sealed(event, self.protector,
                                                            self._protect_now))

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
        if self.erasures is not None:
            self.erasures.close()
        if self._producer is not None:
            self._producer.close(timeout)
        self._outbox.close()
        close_keys = getattr(self.protector.keys, "close", None) if self.protector else None
        if close_keys is not None:
            close_keys()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
