"""Replay: read the event log back (archive hot + cold, or the broker) and rebuild projections.

The offline side of the feature store lives here too: :func:`point_in_time_features`
recomputes, from the archive, the feature values an entity had at any past
moment, with the same :mod:`projections.features` definition the online store uses.

Order is event time, then event id — the order in which a replay is
deterministic, whatever order the broker delivered events in.

>>> import datetime
>>> from schemas import new_event
>>> t = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
>>> evs = [new_event("review.completed", {"change_id": "c", "project": "p",
...        "passed_first_try": ok}, producer="code-reviewer", occurred_at=t)
...        for ok in (True, False)]
>>> features_of(evs, "agent:code-reviewer")["success_rate"]
0.5
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import queue
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from projections import archive_sql as q
from projections.archive import EventArchive
from projections.base import Sourced
from projections.contiguous import ContiguousReads
from projections.feature_store import OnlineFeatureStore
from projections.features import deltas, reference, values
from schemas import CATALOG, Envelope, EventValidationError, decode, from_dict

log = logging.getLogger(__name__)
AGENT_FEATURE_TYPES = ("task.completed", "review.completed", "review.requested")
CAMERA_FEATURE_TYPES = ("frame.processed",)


def _order(ev: Envelope) -> tuple[datetime, uuid.UUID]:
    return ev.occurred_at, ev.event_id


def _hot(archive: EventArchive, since: datetime | None, until: datetime | None,
         producer: str | None, types: Sequence[str] | None, itersize: int) -> Iterator[Envelope]:
    where: list[q.sql.Composable] = []
    params: list[Any] = []
    for cond, value in (("occurred_at >= %s", since), ("occurred_at < %s", until),
                        ("producer = %s", producer)):
        if value is not None:
            where.append(q.sql.SQL(cond))
            params.append(value)
    if types is not None:
        where.append(q.sql.SQL("type = ANY(%s)"))
        params.append(list(types))
    # The payload comes as JSON text, parsed only if a consumer reads it (JsonPayload).
    cols = q.sql.SQL(", ").join([*(q.ident(c) for c in q.READ_COLUMNS[:8]),
                                   q.sql.SQL("payload::text")])
    stmt = q.sql.SQL("SELECT {cols} FROM {t}{w} ORDER BY occurred_at, event_id").format(
        cols=cols, t=q.ident(archive.table),
        w=q.sql.SQL(" WHERE ") + q.sql.SQL(" AND ").join(where) if where else q.sql.SQL(""))
    conn = archive.reader()
    chunks: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def fetch() -> None:  # PostgreSQL sends the next rows while this thread decodes
        try:
            with conn.cursor(name="replay", binary=True) as cur:
                cur.itersize = itersize
                cur.execute(stmt, params)
                while not stop.is_set() and (rows := cur.fetchmany(itersize)):
                    chunks.put(rows)
            chunks.put(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
            chunks.put(exc)

    worker = threading.Thread(target=fetch, name="replay-fetch", daemon=True)
    worker.start()
    try:
        while (rows := chunks.get()) is not None:
            if isinstance(rows, BaseException):
                raise rows
            yield from map(q.envelope_from_row, rows)
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                chunks.get_nowait()
            worker.join(timeout=0.05)
        conn.close()


def cold_envelope(rec: dict[str, Any]) -> Envelope:
    """An envelope from a cold record (current versions directly, older ones upcast)."""
    rec = dict(rec)
    rec.pop("_src", None)
    spec = CATALOG.get(rec.get("type", ""))
    if spec is None or spec.version != rec.get("schema_version"):
        return from_dict(rec)
    return Envelope(
        event_id=uuid.UUID(rec["event_id"]), type=rec["type"], schema_version=spec.version,
        occurred_at=datetime.fromisoformat(rec["occurred_at"]).astimezone(UTC),
        producer=rec["producer"], payload=q.freeze_json(rec["payload"]),
        subject_id=rec.get("subject_id"), correlation_id=rec.get("correlation_id"),
        causation_id=rec.get("causation_id"),
    )


def _cold(archive: EventArchive, since: datetime | None, until: datetime | None,
          producer: str | None, types: Sequence[str] | None) -> Iterator[Envelope]:
    if archive.cold is None:
        return
    wanted = set(types) if types is not None else None
    for day in archive.cold.days():
        if since is not None and day < since.astimezone(UTC).date():
            continue
        if until is not None and day > until.astimezone(UTC).date():
            break
        for rec in archive.cold.read_day(day):
            if (producer is not None and rec["producer"] != producer) or (
                    wanted is not None and rec["type"] not in wanted):
                continue
            ev = cold_envelope(rec)
            if (since is None or ev.occurred_at >= since) and (
                    until is None or ev.occurred_at < until):
                yield ev


def read_events(archive: EventArchive, *, since: datetime | None = None,
                until: datetime | None = None, producer: str | None = None,
                types: Sequence[str] | None = None, include_cold: bool = True,
                itersize: int = 10_000) -> Iterator[Envelope]:
    """Archived events with ``since <= occurred_at < until``, in (event time, event id) order.

    Hot rows are streamed from PostgreSQL with a server-side cursor; cold
    files (when the archive has a cold store and ``include_cold``) are merged
    in. An event present in both (an export interrupted before its drop) is
    yielded once.

    Parameters
    ----------
    archive
        The archive (its ``cold`` store is read too).
    since, until
        Event-time bounds, aware datetimes; ``None`` means unbounded.
    producer, types
        Only events of this producer / of these types.
    include_cold
        Also read cold storage.
    """
    if archive.backend is None:
        archive.ensure_schema()
    hot = _hot(archive, since, until, producer, types, itersize)
    if not include_cold or archive.cold is None:  # one source, unique keys: nothing to merge
        yield from hot
        return
    sources = [hot, _cold(archive, since, until, producer, types)]
    last: uuid.UUID | None = None
    for ev in heapq.merge(*sources, key=_order):
        if ev.event_id != last:
            last = ev.event_id
            yield ev


async def _consume(bootstrap: str, topics: Sequence[str], timeout: float) -> list[bytes | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: list[bytes | None] = []
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            await consumer.force_metadata_update()
            parts = [TopicPartition(t, p) for t in topics
                     for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > 0}
        reads = ContiguousReads()  # an audit must not skip what the broker answered past
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Tansu reports a partition's end as the first offset of its last record
        # batch plus one, not the true end: past the reported end, keep reading
        # until a fetch for that partition comes back empty.
        reached: set[Any] = set()
        while todo and loop.time() < deadline:
            batch = await reads.keep(
                consumer, await consumer.getmany(*todo, timeout_ms=500, max_records=10_000))
            for tp in list(todo):
                messages = batch.get(tp, [])
                out.extend(m.value for m in messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    reached.add(tp)
                elif not messages and tp in reached and not reads.holds(tp):
                    todo.discard(tp)
        if todo:
            raise TimeoutError(f"broker did not deliver {sorted(map(str, todo))} "
                               f"up to their end offsets within {timeout:.0f} s")
    finally:
        await consumer.stop()
    return out


def read_broker(bootstrap: str, topics: Sequence[str], *, since: datetime | None = None,
                until: datetime | None = None, producer: str | None = None,
                types: Sequence[str] | None = None, timeout: float = 60.0) -> Iterator[Envelope]:
    """Events on ``topics`` from the beginning up to their current end, in event-time order.

    Invalid records are skipped (they are in the dead-letter topic already);
    filters mean the same as in :func:`read_events`. The topics are read
    fully into memory and sorted: meant for audits of the broker's retained
    window, not for years of history (use the archive for that).
    """
    wanted = set(types) if types is not None else None
    events = []
    for value in asyncio.run(_consume(bootstrap, topics, timeout)):
        try:
            ev = decode(value)
        except EventValidationError as exc:
            log.info("skipping invalid record: %s", exc)
            continue
        if (producer is None or ev.producer == producer) and (
                wanted is None or ev.type in wanted) and (
                since is None or ev.occurred_at >= since) and (
                until is None or ev.occurred_at < until):
            events.append(ev)
    events.sort(key=_order)
    return iter(events)


def replay_positions(events: Iterable[Envelope], topic: str = "replay") -> Iterator[Sourced]:
    """Synthetic broker positions: partition 0, offset = rank in replay order.

    Replaying the same ordered log again yields the same positions, so the
    online store's per-partition offset check makes a repeated rebuild a no-op.
    """
    for offset, ev in enumerate(events):
        yield topic, 0, offset, ev


def rebuild_features(events: Iterable[Envelope], store: OnlineFeatureStore, *,
                     batch_size: int = 5_000, topic: str = "replay") -> int:
    """Apply ``events`` (in replay order) to a fresh ``store``; returns events applied.

    Use a new prefix for ``store`` (e.g. ``OnlineFeatureStore(r, prefix="rebuild")``)
    and switch readers over when done.
    """
    applied = 0
    batch: list[Sourced] = []
    for item in replay_positions(events, topic):
        batch.append(item)
        if len(batch) >= batch_size:
            applied += store.apply(batch)
            batch = []
    if batch:
        applied += store.apply(batch)
    return applied


def features_of(events: Iterable[Envelope], entity: str) -> dict[str, float]:
    """Feature values of ``entity`` after ``events`` (pure, in memory)."""
    mine = (ev for ev in events if (hit := deltas(ev)) is not None and hit[0] == entity)
    return values(reference(mine).get(entity, {}))


def point_in_time_features(archive: EventArchive, entity: str, at: datetime) -> dict[str, float]:
    """Feature values of ``entity`` as they were at ``at`` (events with ``occurred_at <= at``).

    The offline twin of :meth:`projections.feature_store.OnlineFeatureStore.get`: same
    definitions, computed from the archive (hot and cold), so training data
    can be joined to the features a decision really saw.
    """
    kind, _, key = entity.partition(":")
    types: tuple[str, ...]
    if kind == "agent":
        producer, types = key, AGENT_FEATURE_TYPES
    elif kind == "camera":
        producer, types = None, CAMERA_FEATURE_TYPES
    else:
        raise ValueError(f"unknown entity {entity!r}: expected 'agent:<id>' or 'camera:<id>'")
    events = read_events(archive, until=at + timedelta(microseconds=1), producer=producer,
                         types=types)
    return features_of(events, entity)
