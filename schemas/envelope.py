"""The one immutable envelope around every selflearn event, and its wire format.

>>> ev = new_event("review.completed", {"change_id": "c1", "project": "Ant",
...                "passed_first_try": True}, producer="code-reviewer")
>>> decode(encode(ev)) == ev
True
>>> ev.payload["project"]
'Ant'
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

from schemas.catalog import CATALOG, KINDS, EventSpec
from schemas.errors import EventValidationError, ReasonCode
from schemas.ids import uuid7

# Version 2 added the producer identity (docs/wire-contract.md); version 1
# envelopes (no ``envelope_version`` field) are read as unsequenced events.
ENVELOPE_VERSION = 2
ENVELOPE_FIELDS = (
    "event_id", "type", "schema_version", "occurred_at", "producer",
    "subject_id", "correlation_id", "causation_id", "payload",
    "envelope_version", "producer_id", "producer_epoch", "sequence",
)
_IDENTITY = ("producer_id", "producer_epoch", "sequence")
# Largest encoded event accepted (docs/wire-contract.md): ~100x a typical event.
# Every projection holds events (memory in Redis, the archive, replay), and a
# record must stay under the broker's and clients' 1 MB default with room for
# its dead-letter wrapping.
MAX_EVENT_BYTES = 256 * 1024
_ENVELOPE_SET = frozenset(ENVELOPE_FIELDS)
_REQUIRED = ("event_id", "type", "schema_version", "occurred_at", "producer", "payload")


def freeze(value: Any) -> Any:
    """Deep read-only copy: mappings become MappingProxyType, lists become tuples."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value  # the common case, without the slow ABC check below
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain mutable copy of a frozen value (dicts and lists)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value  # the common case, without the slow ABC check below
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Envelope:
    """An immutable domain event. Build it with :func:`new_event`, never by hand."""

    event_id: uuid.UUID
    type: str
    schema_version: int
    occurred_at: datetime
    producer: str
    payload: Mapping[str, Any]
    subject_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    producer_id: str | None = None  # producer instance, its epoch, dense sequence per stream
    producer_epoch: int | None = None
    sequence: int | None = None

    def as_dict(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Wire-shaped plain dict (ids as strings, time as ISO-8601 UTC with µs).

        ``payload``: a plain payload to write in place of the event's own.
        """
        out = self._common(payload)
        if self.sequence is not None:
            out["producer_id"] = self.producer_id
            out["producer_epoch"] = self.producer_epoch
            out["sequence"] = self.sequence
        return out

    def _common(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "envelope_version": ENVELOPE_VERSION,
            "event_id": str(self.event_id),
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat(timespec="microseconds").replace(
                "+00:00", "Z"
            ),
            "producer": self.producer,
            "subject_id": self.subject_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": thaw(self.payload) if payload is None else payload,
        }

    @property
    def key(self) -> bytes:
        """Partition key: the producer, so one agent's events stay in order."""
        return self.producer.encode()


def validate_payload(spec: EventSpec, payload: Any) -> None:
    """Raise :class:`EventValidationError` unless ``payload`` matches ``spec`` exactly."""
    if not isinstance(payload, dict | Mapping):
        raise EventValidationError(ReasonCode.BAD_FIELD, f"{spec.type}: payload must be an object")
    for name in payload:
        if name not in spec.fields:
            raise EventValidationError(
                ReasonCode.UNKNOWN_FIELD, f"{spec.type}: payload.{name} is not a known field"
            )
    for name, fs in spec.fields.items():
        if name not in payload:
            if fs.required:
                raise EventValidationError(
                    ReasonCode.MISSING_FIELD, f"{spec.type}: payload.{name} is required"
                )
            continue
        value = payload[name]
        if value is None:
            if fs.required and not fs.nullable:
                raise EventValidationError(
                    ReasonCode.BAD_FIELD, f"{spec.type}: payload.{name} must not be null"
                )
            continue
        ok = isinstance(value, KINDS[fs.kind]) and not (
            fs.kind in ("int", "number") and isinstance(value, bool)
        )
        if not ok:
            raise EventValidationError(
                ReasonCode.BAD_FIELD,
                f"{spec.type}: payload.{name} must be {fs.kind}, got {type(value).__name__}",
            )


def spec_for(event_type: Any) -> EventSpec:
    if not isinstance(event_type, str) or event_type not in CATALOG:
        raise EventValidationError(
            ReasonCode.UNKNOWN_TYPE,
            f"unknown event type {event_type!r}; known: {', '.join(sorted(CATALOG))}",
        )
    return CATALOG[event_type]


def new_event(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    producer: str,
    subject_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    producer_id: str | None = None,
    producer_epoch: int | None = None,
    sequence: int | None = None,
) -> Envelope:
    """Validate and build a current-version event (fresh UUIDv7, UTC now unless given).

    ``producer_id``, ``producer_epoch`` and ``sequence`` come together or not
    at all: the SDK stamps them (see :mod:`agents.client`).
    """
    spec = spec_for(event_type)
    validate_payload(spec, payload)
    if not producer:
        raise EventValidationError(ReasonCode.MISSING_FIELD, "producer (agent id) is required")
    when = occurred_at or datetime.now(UTC)
    if when.tzinfo is None:
        raise EventValidationError(ReasonCode.BAD_FIELD, "occurred_at must be timezone-aware")
    return Envelope(
        event_id=event_id or uuid7(),
        type=event_type,
        schema_version=spec.version,
        occurred_at=when.astimezone(UTC),
        producer=producer,
        payload=freeze(payload),
        subject_id=subject_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        **_identity(producer_id, producer_epoch, sequence),
    )


def _identity(pid: Any, epoch: Any, seq: Any) -> dict[str, Any]:
    """The producer identity fields, validated: all three or none."""
    if pid is None and epoch is None and seq is None:
        return {}
    if pid is None or epoch is None or seq is None:
        present = {"producer_id": pid, "producer_epoch": epoch, "sequence": seq}
        missing = ", ".join(n for n in _IDENTITY if present[n] is None)
        raise EventValidationError(
            ReasonCode.MISSING_FIELD, f"producer identity is incomplete: {missing} missing"
        )
    if not isinstance(pid, str) or not pid or len(pid) > 64:
        raise EventValidationError(ReasonCode.BAD_FIELD, "producer_id must be a string of 1-64")
    for name, value in (("producer_epoch", epoch), ("sequence", seq)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
            raise EventValidationError(
                ReasonCode.BAD_FIELD, f"{name} must be an integer in 0..2^53"
            )
    return {"producer_id": pid, "producer_epoch": epoch, "sequence": seq}


def encode(event: Envelope, payload: dict[str, Any] | None = None) -> bytes:
    """Serialise an envelope with orjson (``payload``: plain, written in place of its own)."""
    return orjson.dumps(event.as_dict(payload))


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise EventValidationError(ReasonCode.BAD_FIELD, "occurred_at must be an ISO-8601 string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise EventValidationError(ReasonCode.BAD_FIELD, f"occurred_at: {exc}") from None
    if when.tzinfo is None:
        raise EventValidationError(ReasonCode.BAD_FIELD, "occurred_at must carry a UTC offset")
    return when.astimezone(UTC)


def _optional_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise EventValidationError(ReasonCode.BAD_FIELD, f"{name} must be a string or null")
    return value


def from_dict(raw: Any) -> Envelope:
    """Validate a wire-shaped dict, upcast old versions, and return the envelope."""
    if not isinstance(raw, dict):
        raise EventValidationError(ReasonCode.NOT_AN_OBJECT, "an event must be a JSON object")
    for name in _REQUIRED:
        if name not in raw:
            raise EventValidationError(ReasonCode.MISSING_FIELD, f"envelope.{name} is required")
    envelope_version = raw.get("envelope_version", 1)
    if envelope_version not in (1, ENVELOPE_VERSION) or isinstance(envelope_version, bool):
        raise EventValidationError(
            ReasonCode.UNSUPPORTED_VERSION,
            f"envelope v{envelope_version!r} is not supported (current v{ENVELOPE_VERSION})",
        )
    spec = spec_for(raw["type"])
    version = raw["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventValidationError(ReasonCode.BAD_FIELD, "schema_version must be an integer")
    payload = raw["payload"]
    if version != spec.version:
        if version > spec.version or version < 1:
            raise EventValidationError(
                ReasonCode.UNSUPPORTED_VERSION,
                f"{spec.type} v{version} is not supported (current v{spec.version})",
            )
        if not isinstance(payload, dict):
            raise EventValidationError(ReasonCode.BAD_FIELD, "payload must be an object")
        for v in range(version, spec.version):
            if v not in spec.upcasters:
                raise EventValidationError(
                    ReasonCode.UNSUPPORTED_VERSION, f"no upcaster for {spec.type} v{v}"
                )
            try:
                payload = spec.upcasters[v](payload)
            except (KeyError, TypeError) as exc:
                raise EventValidationError(
                    ReasonCode.BAD_FIELD, f"{spec.type} v{v} payload cannot be upcast: {exc}"
                ) from None
    validate_payload(spec, payload)
    try:
        event_id = uuid.UUID(raw["event_id"])
    except (ValueError, TypeError, AttributeError):
        raise EventValidationError(ReasonCode.BAD_FIELD, "event_id must be a UUID") from None
    producer = raw["producer"]
    if not isinstance(producer, str) or not producer:
        raise EventValidationError(ReasonCode.BAD_FIELD, "producer must be a non-empty string")
    if not _ENVELOPE_SET.issuperset(raw):
        unknown = sorted(k for k in raw if k not in _ENVELOPE_SET)
        raise EventValidationError(
            ReasonCode.UNKNOWN_FIELD, f"envelope field(s) {', '.join(unknown)} are not known"
        )
    return Envelope(
        event_id=event_id,
        type=spec.type,
        schema_version=spec.version,
        occurred_at=_parse_time(raw["occurred_at"]),
        producer=producer,
        payload=freeze(payload),
        subject_id=_optional_str(raw, "subject_id"),
        correlation_id=_optional_str(raw, "correlation_id"),
        causation_id=_optional_str(raw, "causation_id"),
        **(_identity(raw.get("producer_id"), raw.get("producer_epoch"), raw.get("sequence"))
           if envelope_version > 1 else {}),
    )


def check_size(n: int) -> None:
    """Raise ``too_large`` for an encoded event of ``n`` bytes above :data:`MAX_EVENT_BYTES`.

    >>> check_size(MAX_EVENT_BYTES + 1)
    Traceback (most recent call last):
    ...
    schemas.errors.EventValidationError: too_large: event is 262145 bytes; at most 262144 accepted
    """
    if n > MAX_EVENT_BYTES:
        raise EventValidationError(
            ReasonCode.TOO_LARGE, f"event is {n} bytes; at most {MAX_EVENT_BYTES} accepted"
        )


def decode(data: bytes | bytearray | memoryview | str | None) -> Envelope:
    """Parse and validate wire bytes; raises :class:`EventValidationError` with a reason code."""
    if data is None:
        raise EventValidationError(ReasonCode.MALFORMED, "empty message (no value)")
    check_size(len(data))
    try:
        raw = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise EventValidationError(ReasonCode.MALFORMED, f"not valid JSON: {exc}") from None
    return from_dict(raw)
