"""SQL text and row codecs of the event archive (see :mod:`projections.archive`).

Kept apart from the archive's control flow so each stays readable: this
module only says *what* the tables look like, how an event becomes a line of
a binary ``COPY`` row, and how a stored row becomes an :class:`~schemas.Envelope`
again.

>>> from schemas import new_event
>>> ev = new_event("review.completed", {"change_id": "c\\t1", "project": "p",
...                "passed_first_try": True}, producer="code-reviewer")
>>> row = copy_row("selflearn.agent", 3, 42, ev)
>>> len(row) == len(COLUMNS) == len(COPY_TYPES), row[8:11]
(True, ('selflearn.agent', 3, 42))
>>> bytes(row[-1])
b'{"change_id":"c\\\\t1","project":"p","passed_first_try":true}'
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any

import orjson
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from schemas import CATALOG, Envelope, from_dict

# Column order of the events table, of the staging table and of COPY lines.
COLUMNS = (
    "event_id", "occurred_at", "type", "schema_version", "producer", "subject_id",
    "correlation_id", "causation_id", "src_topic", "src_partition", "src_offset", "payload",
)
# What a reader selects, in this order (see :func:`envelope_from_row`).
READ_COLUMNS = (
    "event_id", "occurred_at", "type", "schema_version", "producer", "subject_id",
    "correlation_id", "causation_id", "payload", "src_topic", "src_partition", "src_offset",
)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def check_name(table: str) -> str:
    """Return ``table`` if it is a safe, short, lower-case SQL name, else raise ValueError."""
    if not _NAME.match(table):
        raise ValueError(
            f"archive table name {table!r} must match {_NAME.pattern} "
            "(lower case, digits, underscores; at most 40 characters)"
        )
    return table


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def create_table(table: str, *, partitioned: bool) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` of the events table (optionally range-partitioned)."""
    tail = sql.SQL(" PARTITION BY RANGE (occurred_at)") if partitioned else sql.SQL("")
    return sql.SQL("""
        CREATE TABLE IF NOT EXISTS {t} (
            event_id       uuid        NOT NULL,
            occurred_at    timestamptz NOT NULL,
            type           text        NOT NULL,
            schema_version integer     NOT NULL,
            producer       text        NOT NULL,
            subject_id     text,
            correlation_id text,
            causation_id   text,
            src_topic      text        NOT NULL,
            src_partition  integer     NOT NULL,
            src_offset     bigint      NOT NULL,
            archived_at    timestamptz NOT NULL DEFAULT now(),
            payload        jsonb       NOT NULL,
            PRIMARY KEY (occurred_at, event_id)
        ){tail}""").format(t=ident(table), tail=tail)


def create_cold_catalog(table: str) -> sql.Composed:
    """The record of what went to cold storage: one row per exported file."""
    return sql.SQL("""
        CREATE TABLE IF NOT EXISTS {c} (
            day         date        NOT NULL,
            part        integer     NOT NULL,
            url         text        NOT NULL,
            row_count   bigint      NOT NULL,
            exported_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (day, part)
        )""").format(c=ident(f"{table}_cold"))


def staging(table: str) -> str:
    """Name of the per-connection staging table of ``table``."""
    return f"{table}_stage_bin"


def create_staging(table: str) -> sql.Composed:
    """Per-connection temporary staging table (:data:`COLUMNS` order), emptied at commit."""
    return sql.SQL("""
        CREATE TEMP TABLE IF NOT EXISTS {s} (
            event_id uuid, occurred_at timestamptz, type text, schema_version integer,
            producer text, subject_id text, correlation_id text, causation_id text,
            src_topic text, src_partition integer, src_offset bigint, payload jsonb
        ) ON COMMIT DELETE ROWS""").format(s=ident(staging(table)))


def copy_into_staging(table: str) -> sql.Composed:
    """Binary ``COPY`` into staging: rows from :func:`copy_row`, types :data:`COPY_TYPES`."""
    cols = sql.SQL(", ").join(ident(c) for c in COLUMNS)
    return sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT BINARY)").format(
        s=ident(staging(table)), cols=cols)


def insert_from_staging(table: str) -> sql.Composed:
    """Idempotent move from staging: a row already archived is silently skipped."""
    cols = sql.SQL(", ").join(ident(c) for c in COLUMNS)
    return sql.SQL(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} ON CONFLICT DO NOTHING"
    ).format(t=ident(table), s=ident(staging(table)), cols=cols)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of a UTC day."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- events to COPY text -------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping | MappingProxyType):
        return dict(value)
    raise TypeError(f"cannot archive a value of type {type(value).__name__}")


# PostgreSQL types of a :func:`copy_row`, for ``Copy.set_types`` (binary COPY).
COPY_TYPES = ("uuid", "timestamptz", "text", "int4", "text", "text", "text", "text",
              "text", "int4", "int8", "jsonb")
_JSONB_OID = 3802  # fixed in PostgreSQL's catalog (pg_type.dat)


class JsonText(bytes):
    """JSON text already encoded (by orjson), sent to a ``jsonb`` column as is."""

    __slots__ = ()


class JsonTextDumper(Dumper):
    """Binary ``jsonb`` from :class:`JsonText`: the format version byte, then the text.

    Register it on the cursor doing the ``COPY``
    (``cur.adapters.register_dumper(JsonText, JsonTextDumper)``): psycopg
    then dumps every ``jsonb`` field of that copy with it.
    """

    format = Format.BINARY
    oid = _JSONB_OID

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj


def copy_row(topic: str, partition: int, offset: int, ev: Envelope) -> tuple[Any, ...]:
    """One row for ``Copy.write_row``, columns in :data:`COLUMNS` order.

    psycopg's C dumpers encode ids, times and numbers in binary; only the
    payload is serialised in Python (orjson).
    """
    return (ev.event_id, ev.occurred_at, ev.type, ev.schema_version, ev.producer,
            ev.subject_id, ev.correlation_id, ev.causation_id, topic, partition, offset,
            JsonText(orjson.dumps(ev.payload, default=_plain)))


# --- stored rows back to envelopes -----------------------------------------------

_NESTED = (dict, list)
_LEAVES = frozenset({str, int, float, bool, type(None)})


def freeze_json(value: Any) -> Any:
    """:func:`schemas.envelope.freeze` for freshly parsed JSON (dicts, lists, scalars).

    Takes ownership of ``value``: dicts are frozen in place (no copy), and
    containers holding only scalars are checked at C speed, so this is several
    times faster than the generic :func:`schemas.envelope.freeze`.

    >>> freeze_json({"a": [1, {"b": 2}]})["a"][1]["b"]
    2
    """
    kind = type(value)
    if kind is dict:
        if not _LEAVES.issuperset(map(type, value.values())):
            for k, v in value.items():
                if type(v) in _NESTED:
                    value[k] = freeze_json(v)
        return MappingProxyType(value)
    if kind is list:
        if _LEAVES.issuperset(map(type, value)):
            return tuple(value)
        return tuple(freeze_json(v) if type(v) in _NESTED else v for v in value)
    return value


class JsonPayload(Mapping[str, Any]):
    """A read-only payload parsed from its stored JSON text on first use.

    Replay hands every event to projections that read the payload of only a
    few types (the feature projection ignores decisions, the bulk of the
    archive); parsing and freezing those payloads nobody reads was most of the
    cost of a replay. Behaves as the frozen mapping :func:`freeze_json` gives.

    >>> p = JsonPayload('{"a": {"b": [1, 2]}}')
    >>> p["a"]["b"], len(p), p == {"a": {"b": (1, 2)}}
    ((1, 2), 1, True)
    """

    __slots__ = ("_raw", "_map")

    def __init__(self, raw: str | bytes) -> None:
        self._raw: str | bytes | None = raw
        self._map: Mapping[str, Any] | None = None

    def _data(self) -> Mapping[str, Any]:
        if self._map is None:
            self._map = freeze_json(orjson.loads(self._raw))  # type: ignore[arg-type]
            self._raw = None
        return self._map

    def __getitem__(self, key: str) -> Any:
        return (self._map if self._map is not None else self._data())[key]

    def get(self, key: str, default: Any = None) -> Any:
        return (self._map if self._map is not None else self._data()).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"JsonPayload({dict(self._data())!r})"


def envelope_from_row(row: tuple[Any, ...]) -> Envelope:
    """Rebuild an envelope from a row selected in :data:`READ_COLUMNS` order.

    The payload may come parsed (a dict) or as JSON text (``payload::text``,
    what replay selects): text becomes a :class:`JsonPayload`, parsed on first use.

    Rows of the current schema version were validated when they were written,
    so they are rebuilt directly; older versions go through
    :func:`schemas.from_dict`, which upcasts them to the current shape.
    """
    event_id, occurred_at, etype, version, producer, subject, corr, caus, payload = row[:9]
    spec = CATALOG.get(etype)
    if spec is None or spec.version != version:
        if isinstance(payload, str | bytes):
            payload = orjson.loads(payload)
        return from_dict({
            "event_id": str(event_id), "type": etype, "schema_version": version,
            "occurred_at": occurred_at.isoformat(), "producer": producer,
            "subject_id": subject, "correlation_id": corr, "causation_id": caus,
            "payload": payload,
        })
    return Envelope(
        event_id=event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(event_id),
        type=etype, schema_version=version, occurred_at=occurred_at.astimezone(UTC),
        producer=producer,
        payload=JsonPayload(payload) if isinstance(payload, str | bytes) else freeze_json(payload),
        subject_id=subject,
        correlation_id=corr, causation_id=caus,
    )


def cold_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """The cold-storage line of a stored row: the wire envelope plus ``_src`` position."""
    ev = envelope_from_row(row)
    out = ev.as_dict()
    out["_src"] = [row[9], row[10], row[11]]
    return out
