"""The event archive: every event, exactly once, in PostgreSQL (TimescaleDB when present).

One table (``events`` by default) keyed by ``(occurred_at, event_id)``:

- **TimescaleDB** (extension available): a hypertable on ``occurred_at``
  with one-day chunks, compression after 7 days; chunks older than the hot
  window (90 days) are exported to cold storage and dropped by
  :meth:`EventArchive.apply_retention` (without a cold store, a TimescaleDB
  retention policy drops them instead).
- **Plain PostgreSQL**: native range partitioning by UTC day, partitions
  created ahead (:meth:`EventArchive.ensure_partitions`, and on demand by
  :meth:`EventArchive.write`), plus a default partition so no event is ever
  rejected; :meth:`EventArchive.apply_retention` exports old partitions to
  :class:`~projections.archive_cold.ColdStore` and drops them.

Why the key is ``(occurred_at, event_id)`` and still exactly-once
-----------------------------------------------------------------
A partitioned table's primary key must contain the partition column. The
envelope is immutable: a redelivered event carries the same ``event_id``
*and* the same ``occurred_at``, so it maps to the same key, lands in the same
partition, and ``ON CONFLICT DO NOTHING`` skips it. Two keys with one
``event_id`` would need two different events with one UUIDv7, which
:func:`schemas.uuid7` does not produce. Putting ``occurred_at`` first also
makes the key the index that event-time reads (replay) scan in order.

Writes are ``COPY`` into a temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, in one transaction: a batch
is stored completely or not at all, and its row count says how many events
were new. A worker commits its broker offsets only after :meth:`write`
returned; :class:`projections.archive_projection.ArchiveProjection` retries
through a PostgreSQL outage.

>>> import os
>>> dsn = os.environ.get("SELFLEARN_DATABASE_URL")
>>> if dsn:  # doctest: +SKIP
...     archive = EventArchive(dsn); archive.ensure_schema()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from projections import archive_sql as q
from projections.archive_cold import ColdStore
from projections.base import Sourced

log = logging.getLogger(__name__)
Backend = str  # "timescaledb" or "partitioned"
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)
_TEMP_BUFFERS = "64MB"  # per-session memory for the staging table
_SIZED: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


class ArchiveUnavailable(RuntimeError):
    """PostgreSQL did not answer; nothing of the batch was stored. Retry the same batch."""


@dataclass
class RetentionReport:
    """What :meth:`EventArchive.apply_retention` moved to cold storage and dropped."""

    cutoff: date
    dropped: list[str] = field(default_factory=list)
    exported_rows: int = 0
    files: list[str] = field(default_factory=list)


class EventArchive:
    """Idempotent, partitioned event store in PostgreSQL.

    Parameters
    ----------
    db
        A libpq URL (one connection, reconnected after a failure; use one
        archive per thread) or a :class:`psycopg_pool.ConnectionPool`.
    table
        Name of the events table; partitions, staging and the cold catalog
        are named after it.
    cold
        Where :meth:`apply_retention` exports old events (optional).
    hot_days
        Days kept in PostgreSQL.
    """

    def __init__(self, db: str | ConnectionPool, *, table: str = "events",
                 cold: ColdStore | None = None, hot_days: int = 90) -> None:
        self.db = db
        self.table = q.check_name(table)
        self.cold = cold
        self.hot_days = hot_days
        self.backend: Backend | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._days: set[date] = set()      # partitions known to exist
        self._horizon: date | None = None  # days before this are cold: no partition for them

    # --- connections -----------------------------------------------------------

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        set_json_loads(orjson.loads, conn)
        if conn not in _SIZED:  # once per session, before its first temporary row
            # A 5 000-event batch stages ~7 MB (mostly jsonb), about all of the
            # default 8 MB of temp buffers; bigger batches would spill to disk.
            try:
                conn.execute(f"SET temp_buffers = '{_TEMP_BUFFERS}'")
            except psycopg.errors.InvalidParameterValue:  # temp tables already used
                conn.rollback()
            _SIZED.add(conn)
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A configured connection (orjson for JSONB, UTC); raises ArchiveUnavailable."""
        try:
            if isinstance(self.db, ConnectionPool):
                with self.db.connection() as conn:
                    self._configure(conn)
                    yield conn
                return
            with self._lock:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = psycopg.connect(self.db, connect_timeout=5)
                    self._configure(self._conn)
                try:
                    yield self._conn
                except BaseException:
                    if not self._conn.closed:
                        self._conn.rollback()
                    raise
        except _LOST as exc:
            self._drop_connection()
            raise ArchiveUnavailable(
                f"PostgreSQL did not answer ({type(exc).__name__}: {str(exc).strip()}); "
                "the batch was not stored, deliver it again (do not commit its offsets)"
            ) from exc

    def reader(self) -> psycopg.Connection[Any]:
        """A new dedicated connection for long reads (replay); the caller closes it."""
        dsn = self.db if isinstance(self.db, str) else self.db.conninfo
        try:
            conn = psycopg.connect(str(dsn), connect_timeout=5)
        except _LOST as exc:
            raise ArchiveUnavailable(f"PostgreSQL did not answer: {exc}") from exc
        self._configure(conn)
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the archive's own connection (a pool is left to its owner)."""
        self._drop_connection()

    # --- schema ----------------------------------------------------------------

    def ensure_schema(self) -> Backend:
        """Create the table (hypertable or partitioned) if needed; returns the backend."""
        with self.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
            timescale = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone() is not None
            existing = conn.execute(
                "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (self.table,)
            ).fetchone()
            if existing is not None:  # keep whatever shape the table already has
                timescale = existing[0] != "p" and self._is_hypertable(conn)
            if timescale:
                self._ensure_timescale(conn)
            else:
                conn.execute(q.create_table(self.table, partitioned=True))
                conn.execute(q.sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {d} PARTITION OF {t} DEFAULT"
                ).format(d=q.ident(f"{self.table}_default"), t=q.ident(self.table)))
            conn.execute(q.create_cold_catalog(self.table))
            conn.commit()
        self.backend = "timescaledb" if timescale else "partitioned"
        self._days = set(self.partitions())
        self._horizon = self._cold_horizon()
        return self.backend

    def _is_hypertable(self, conn: psycopg.Connection[Any]) -> bool:
        try:
            return conn.execute(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
                (self.table,),
            ).fetchone() is not None
        except psycopg.errors.UndefinedTable:
            conn.rollback()
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
            return False

    def _ensure_timescale(self, conn: psycopg.Connection[Any]) -> None:
        t = q.sql.Literal(self.table)
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(q.create_table(self.table, partitioned=False))
        conn.execute(q.sql.SQL(
            "SELECT create_hypertable({t}, 'occurred_at', chunk_time_interval => "
            "INTERVAL '1 day', if_not_exists => true)").format(t=t))
        conn.execute(q.sql.SQL(
            "ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_segmentby = "
            "'producer', timescaledb.compress_orderby = 'occurred_at, event_id')"
        ).format(t=q.ident(self.table)))
        conn.execute(q.sql.SQL(
            "SELECT add_compression_policy({t}, INTERVAL '7 days', if_not_exists => true)"
        ).format(t=t))
        if self.cold is None:  # nothing to export to: let TimescaleDB drop old chunks itself
            conn.execute(q.sql.SQL(
                "SELECT add_retention_policy({t}, make_interval(days => {d}), "
                "if_not_exists => true)").format(t=t, d=q.sql.Literal(self.hot_days)))

    def _lock_key(self) -> int:
        return zlib.crc32(f"selflearn.archive.{self.table}".encode())

    def _cold_horizon(self) -> date | None:
        with self.connection() as conn:
            row = conn.execute(q.sql.SQL("SELECT max(day) FROM {c}").format(
                c=q.ident(f"{self.table}_cold"))).fetchone()
            conn.commit()
        return row[0] + timedelta(days=1) if row and row[0] else None

    # --- partitions ------------------------------------------------------------

    def partitions(self) -> list[date]:
        """Days that have their own partition (empty on TimescaleDB), ascending."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(%s)", (self.table,)
            ).fetchall()
            conn.commit()
        prefix = f"{self.table}_p"
        out = []
        for (name,) in rows:
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                out.append(datetime.strptime(name[len(prefix):], "%Y%m%d").date())
        return sorted(out)

    def ensure_partitions(self, start: date | datetime, end: date | datetime) -> list[date]:
        """Create the daily partitions of ``[start, end]`` (inclusive); returns the new days.

        Rows of those days already sitting in the default partition are moved
        into the new partition in the same transaction. Days already exported
        to cold storage get no partition (late events for them stay in the
        default partition until the next :meth:`apply_retention`).
        """
        if self.backend is None:
            self.ensure_schema()
        if self.backend == "timescaledb":
            return []
        first = start.date() if isinstance(start, datetime) else start
        last = end.date() if isinstance(end, datetime) else end
        wanted = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        if self._horizon is not None:
            wanted = [d for d in wanted if d >= self._horizon]
        created = []
        for day in wanted:
            if day in self._days:
                continue
            with self.connection() as conn:
                if self._create_partition(conn, day):
                    created.append(day)
                conn.commit()
            self._days.add(day)
        return created

    def _create_partition(self, conn: psycopg.Connection[Any], day: date) -> bool:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
        name = q.partition_name(self.table, day)
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        if row is not None and row[0] is not None:
            return False
        lo, hi = q.day_bounds(day)
        fmt = {"p": q.ident(name), "t": q.ident(self.table),
               "d": q.ident(f"{self.table}_default")}
        conn.execute(q.sql.SQL(
            "CREATE TABLE {p} (LIKE {t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(**fmt))
        conn.execute(q.sql.SQL(
            "WITH moved AS (DELETE FROM {d} WHERE occurred_at >= %s AND occurred_at < %s "
            "RETURNING *) INSERT INTO {p} SELECT * FROM moved").format(**fmt), (lo, hi))
        conn.execute(q.sql.SQL(
            "ALTER TABLE {t} ATTACH PARTITION {p} FOR VALUES FROM ({lo}) TO ({hi})"
        ).format(**fmt, lo=q.sql.Literal(lo), hi=q.sql.Literal(hi)))
        return True

    # --- writing ---------------------------------------------------------------

    def write(self, batch: Sequence[Sourced]) -> int:
        """Store a batch idempotently; returns how many events were new.

        The batch is one transaction: after an :class:`ArchiveUnavailable`
        nothing of it is stored, and delivering it again is always safe.

        Raises
        ------
        ArchiveUnavailable
            PostgreSQL did not answer (down, restarting, network).
        """
        if not batch:
            return 0
        if self.backend is None:
            self.ensure_schema()
        if self.backend == "partitioned":
            days = {ev.occurred_at.date() for _, _, _, ev in batch}
            missing = [d for d in days - self._days
                       if self._horizon is None or d >= self._horizon]
            for day in sorted(missing):
                self.ensure_partitions(day, day)
        with self.connection() as conn:
            conn.execute(q.create_staging(self.table))
            with conn.cursor() as cur:
                cur.adapters.register_dumper(q.JsonText, q.JsonTextDumper)
                # Binary COPY (psycopg's C dumpers); a queued writer sends from its
                # own thread, so PostgreSQL parses rows while Python encodes more.
                with cur.copy(q.copy_into_staging(self.table),
                              writer=QueuedLibpqWriter(cur)) as copy:
                    copy.set_types(q.COPY_TYPES)
                    for t, p, o, ev in batch:
                        copy.write_row(q.copy_row(t, p, o, ev))
                cur.execute(q.insert_from_staging(self.table))
                stored = cur.rowcount
            conn.commit()
        return stored

    def count(self) -> int:
        """Events in the hot store (PostgreSQL)."""
        with self.connection() as conn:
            row = conn.execute(q.sql.SQL("SELECT count(*) FROM {t}").format(
                t=q.ident(self.table))).fetchone()
            n = row[0] if row is not None else 0
            conn.commit()
        return int(n)

    def cold_days(self) -> list[date]:
        """Days recorded as exported to cold storage."""
        with self.connection() as conn:
            rows = conn.execute(q.sql.SQL("SELECT DISTINCT day FROM {c} ORDER BY day").format(
                c=q.ident(f"{self.table}_cold"))).fetchall()
            conn.commit()
        return [r[0] for r in rows]

    # --- retention -------------------------------------------------------------

    def apply_retention(self, now: datetime, hot_days: int | None = None) -> RetentionReport:
        """Export every day older than the hot window to cold storage, then drop it.

        Days before ``(now - hot_days).date()`` leave PostgreSQL: each day's
        rows are written to :attr:`cold` (rows already there are skipped, so
        a crash between export and drop repeats nothing), recorded in the
        ``<table>_cold`` catalog, and the partition (or chunk) is dropped.
        """
        from projections.archive_retention import apply_retention

        return apply_retention(self, now, self.hot_days if hot_days is None else hot_days)


def utc_day(when: datetime) -> date:
    """The UTC calendar day of an aware datetime."""
    return when.astimezone(UTC).date()
