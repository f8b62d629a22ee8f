"""The event archive against real PostgreSQL (and Redis for the feature projection).

The outage test runs its own PostgreSQL (stopped and restarted on the same
port); the others share the session stack, each in its own table.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from ops.benches.archive import realistic_events, sourced
from ops.stack import servers
from ops.stack.processes import Spawned, free_port, stop, wait_until
from projections.archive import EventArchive
from projections.archive_cold import ColdStore
from projections.archive_projection import ArchiveProjection
from projections.base import Sourced
from projections.feature_store import OnlineFeatureStore
from projections.replay import point_in_time_features, read_events, rebuild_features
from schemas import Envelope
from schemas.addresses import Addresses

START = datetime(2025, 3, 1, tzinfo=UTC)


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def _ordered(events: list[Envelope]) -> list[Envelope]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


@dataclass
class PrivatePostgres:
    """A PostgreSQL of this test alone, which the test may stop and restart."""

    data_dir: Path
    port: int
    proc: Spawned | None = None

    @property
    def dsn(self) -> str:
        return servers.postgres_address(self.port)

    def start(self) -> None:
        self.proc = servers.start_postgres(self.data_dir, self.port,
                                           self.data_dir / "logs" / "postgres.log")
        wait_until(lambda: servers.postgres_ready(self.port), timeout=60.0)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc.pid, self.proc.create_time, sig=signal.SIGINT, timeout=30.0)
            self.proc = None


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(tmp_path, free_port(servers.HOST))
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def archive(stack: Addresses, tmp_path: Path) -> Iterator[EventArchive]:
    arc = EventArchive(stack.database_url, table=_table(),
                       cold=ColdStore(f"file://{tmp_path}/cold/events"))
    arc.ensure_schema()
    yield arc
    with arc.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {arc.table}, {arc.table}_cold")
        conn.commit()
    arc.close()


def _ids(dsn: str, table: str) -> tuple[int, set[str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT event_id::text FROM {table}").fetchall()
    return len(rows), {r[0] for r in rows}


def test_50k_events_stored_once_despite_redelivery_and_postgres_restart(
        private_pg: PrivatePostgres) -> None:
    events = sourced(realistic_events(50_000, start=START, span_s=3 * 86_400))
    batches = [events[i:i + 5_000] for i in range(0, len(events), 5_000)]
    restarts: list[int] = []

    def sleep_then_restart(_delay: float) -> None:
        # The worker's back-off: after two failed attempts the server comes back.
        if len(restarts) == 0 and projection.retries >= 2:
            private_pg.start()
            restarts.append(private_pg.port)

    arc = EventArchive(private_pg.dsn, table="events")
    arc.ensure_schema()
    projection = ArchiveProjection(arc, sleep=sleep_then_restart)
    stored = []
    for i, batch in enumerate(batches):
        if i == 4:
            private_pg.stop()  # PostgreSQL dies between two batches
        stored.append(projection.apply(batch))
        if i in (2, 4):  # offsets not committed before the crash: delivered again
            stored.append(projection.apply(batch))
            stored.append(projection.apply(batches[i - 1]))
    arc.close()

    assert restarts == [private_pg.port] and projection.retries >= 2
    assert sum(stored) == 50_000
    assert stored.count(0) == 4  # every redelivery stored nothing
    count, ids = _ids(private_pg.dsn, "events")
    assert count == 50_000
    assert ids == {str(ev.event_id) for _, _, _, ev in events}


def test_partitions_are_created_ahead_and_strays_leave_the_default(
        archive: EventArchive) -> None:
    created = archive.ensure_partitions(START, START + timedelta(days=2))
    assert created == [START.date() + timedelta(days=i) for i in range(3)]
    assert archive.ensure_partitions(START, START + timedelta(days=2)) == []

    ev = realistic_events(3, start=START + timedelta(days=5), span_s=60)
    assert archive.write([("t", 0, i, e) for i, e in enumerate(ev)]) == 3
    assert START.date() + timedelta(days=5) in archive.partitions()  # made on demand
    name = f"{archive.table}_p{(START + timedelta(days=5)):%Y%m%d}"
    with archive.connection() as conn:  # simulate rows that arrived before their partition
        conn.execute(f"ALTER TABLE {archive.table} DETACH PARTITION {name}")
        conn.execute(f"INSERT INTO {archive.table}_default SELECT * FROM {name}")
        conn.execute(f"DROP TABLE {name}")
        conn.commit()
    fresh = EventArchive(archive.db, table=archive.table)
    fresh.ensure_schema()
    assert fresh.ensure_partitions(START + timedelta(days=5), START + timedelta(days=5))
    with fresh.connection() as conn:
        where = conn.execute(f"SELECT DISTINCT tableoid::regclass::text FROM {archive.table}"
                             ).fetchall()
        conn.commit()
    fresh.close()
    assert where == [(name,)]
    assert archive.count() == 3


def test_retention_exports_old_days_to_cold_and_replay_reads_them(
        archive: EventArchive, tmp_path: Path) -> None:
    events = realistic_events(6_000, start=START, span_s=5 * 86_400)
    assert archive.write(sourced(events)) == 6_000
    now = START + timedelta(days=4, hours=1)
    report = archive.apply_retention(now, hot_days=2)

    assert report.cutoff == (START + timedelta(days=2)).date()
    old = [e for e in events if e.occurred_at.date() < report.cutoff]
    assert report.exported_rows == len(old) > 0
    assert sorted(report.dropped) == [f"{archive.table}_p2025030{d}" for d in (1, 2)]
    assert archive.count() == len(events) - len(old)
    assert sorted(p.name for p in (tmp_path / "cold" / "events").iterdir()) == [
        "date=2025-03-01", "date=2025-03-02"]
    assert archive.cold_days() == [START.date(), (START + timedelta(days=1)).date()]
    assert list(read_events(archive)) == _ordered(events)
    assert list(read_events(archive, include_cold=False)) == _ordered(
        [e for e in events if e.occurred_at.date() >= report.cutoff])

    # A late event for a cold day waits in the default partition, then joins cold storage.
    late = realistic_events(1, start=START + timedelta(hours=5), seed=99)[0]
    assert archive.write([("t", 0, 0, late)]) == 1
    again = archive.apply_retention(now, hot_days=2)
    assert again.exported_rows == 1 and again.dropped == []
    assert list(read_events(archive)) == _ordered([*events, late])
    assert archive.apply_retention(now, hot_days=2).exported_rows == 0


def _counters(store: OnlineFeatureStore) -> dict[str, dict[str, float]]:
    out = {}
    for entity in store.entities():
        row = store.get(entity)
        assert row is not None
        out[entity] = row.counters
    return out


def _approx(a: dict[str, dict[str, float]]) -> dict[str, object]:
    return {k: pytest.approx(v, rel=1e-9) for k, v in a.items()}


def test_replay_rebuilds_the_live_feature_projection(
        archive: EventArchive, stack: Addresses) -> None:
    events = sourced(realistic_events(8_000, start=START, span_s=2 * 86_400))
    client = redis.Redis.from_url(stack.redis_url)
    run = uuid.uuid4().hex[:8]
    live = OnlineFeatureStore(client, prefix=f"live-{run}")
    for i in range(0, len(events), 1_000):  # as the worker sees them, batch by batch
        live.apply(events[i:i + 1_000])
        archive.write(events[i:i + 1_000])
    rebuilt = OnlineFeatureStore(client, prefix=f"rebuilt-{run}")
    n = rebuild_features(read_events(archive), rebuilt, batch_size=1_500)

    expected = _counters(live)
    assert len(expected) == 8 and n == sum(1 for *_, e in events if e.type in (
        "task.completed", "review.completed", "review.requested"))
    assert _counters(rebuilt) == _approx(expected)
    # a second rebuild of the same log into the same store changes nothing
    assert rebuild_features(read_events(archive), rebuilt) == 0
    assert _counters(rebuilt) == _approx(expected)


def test_point_in_time_features_equal_what_the_online_store_held(
        archive: EventArchive, stack: Addresses) -> None:
    events = _ordered(realistic_events(6_000, start=START, span_s=3 * 86_400))
    archive.write(sourced(events))
    client = redis.Redis.from_url(stack.redis_url)
    store = OnlineFeatureStore(client, prefix=f"pit-{uuid.uuid4().hex[:8]}")
    cut = 3_777
    at = events[cut].occurred_at
    upto: list[Sourced] = [("t", 0, i, e) for i, e in enumerate(events) if e.occurred_at <= at]
    store.apply(upto)
    snapshot = {e: row.values for e in store.entities() if (row := store.get(e))}
    store.apply([("t", 0, i, e) for i, e in enumerate(events) if e.occurred_at > at])

    assert len(snapshot) == 8
    for entity, values in snapshot.items():
        assert point_in_time_features(archive, entity, at) == pytest.approx(values, rel=1e-9)
        now = store.get(entity)
        assert now is not None and now.values != values  # the store moved on since
    # after retention the offline side still answers from cold storage
    archive.apply_retention(START + timedelta(days=3, hours=12), hot_days=2)
    assert archive.cold_days()
    for entity, values in snapshot.items():
        assert point_in_time_features(archive, entity, at) == pytest.approx(values, rel=1e-9)
