"""Hot → cold: export days older than the hot window, then drop them from PostgreSQL.

Called through :meth:`projections.archive.EventArchive.apply_retention`.
Per day, in one PostgreSQL transaction: lock the day's rows against writers,
stream them in ``(occurred_at, event_id)`` order into a new cold part file,
record the file in ``<table>_cold``, drop the partition (or delete the rows
from the default partition, or drop the TimescaleDB chunks), commit. A crash
before the commit leaves the rows in PostgreSQL; the next run finds the part
file already written, skips every event already in cold storage, and
finishes the job — so each event ends up in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from projections import archive_sql as q

if TYPE_CHECKING:
    from projections.archive import EventArchive, RetentionReport


def _records(cur: psycopg.Cursor[Any], skip: set[str]) -> Iterator[dict[str, Any]]:
    for row in cur:
        if not skip or str(row[0]) not in skip:
            yield q.cold_record(row)


def _export_day(archive: EventArchive, conn: psycopg.Connection[Any], relation: str,
                day: date) -> tuple[int, str | None]:
    """Write one day of ``relation`` as a new cold part (inside the caller's transaction)."""
    cold = archive.cold
    assert cold is not None
    skip = cold.ids(day) if cold.parts(day) else set()
    part = cold.next_part(day)
    lo, hi = q.day_bounds(day)
    cols = q.sql.SQL(", ").join(q.ident(c) for c in q.READ_COLUMNS)
    with conn.cursor(name=f"export_{day:%Y%m%d}", binary=True) as cur:
        cur.itersize = 5_000
        cur.execute(q.sql.SQL(
            "SELECT {cols} FROM {r} WHERE occurred_at >= %s AND occurred_at < %s "
            "ORDER BY occurred_at, event_id").format(cols=cols, r=q.ident(relation)), (lo, hi))
        n = cold.write_day(day, part, _records(cur, skip))
    catalog = q.ident(f"{archive.table}_cold")
    if n:
        url = f"{cold.url}/date={day.isoformat()}/part-{part}.ndjson.gz"
        conn.execute(q.sql.SQL(
            "INSERT INTO {c} (day, part, url, row_count) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (day, part) DO UPDATE SET url = EXCLUDED.url, "
            "row_count = EXCLUDED.row_count").format(c=catalog), (day, part, url, n))
        return n, url
    for path in cold.parts(day):  # crash recovery: a part written but never recorded
        number = int(path.name.split("-")[1].split(".")[0])
        count = sum(1 for _ in cold._read_part(path))
        conn.execute(q.sql.SQL(
            "INSERT INTO {c} (day, part, url, row_count) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (day, part) DO NOTHING").format(c=catalog),
            (day, number, path.resolve().as_uri(), count))
    return 0, None


def _oldest_day(conn: psycopg.Connection[Any], relation: str, before: datetime) -> date | None:
    row = conn.execute(q.sql.SQL(
        "SELECT min(occurred_at) FROM {r} WHERE occurred_at < %s").format(r=q.ident(relation)),
        (before,)).fetchone()
    return row[0].astimezone(UTC).date() if row and row[0] else None


def apply_retention(archive: EventArchive, now: datetime, hot_days: int) -> RetentionReport:
    """See :meth:`projections.archive.EventArchive.apply_retention`."""
    from projections.archive import RetentionReport

    if archive.cold is None:
        raise ValueError(
            "apply_retention needs a cold store: EventArchive(db, cold=ColdStore('file:///…'))"
        )
    if archive.backend is None:
        archive.ensure_schema()
    cutoff = (now.astimezone(UTC) - timedelta(days=hot_days)).date()
    cutoff_ts = datetime.combine(cutoff, time(), tzinfo=UTC)
    report = RetentionReport(cutoff=cutoff)

    def note(n: int, url: str | None) -> None:
        report.exported_rows += n
        if url:
            report.files.append(url)

    conn = archive.reader()
    try:
        if archive.backend == "partitioned":
            for day in [d for d in archive.partitions() if d < cutoff]:
                name = q.partition_name(archive.table, day)
                with conn.transaction():
                    conn.execute(q.sql.SQL("LOCK TABLE {p} IN ACCESS EXCLUSIVE MODE").format(
                        p=q.ident(name)))
                    note(*_export_day(archive, conn, name, day))
                    conn.execute(q.sql.SQL("DROP TABLE {p}").format(p=q.ident(name)))
                archive._days.discard(day)
                report.dropped.append(name)
            default = f"{archive.table}_default"
            while True:
                with conn.transaction():
                    conn.execute(q.sql.SQL("LOCK TABLE {d} IN EXCLUSIVE MODE").format(
                        d=q.ident(default)))
                    oldest = _oldest_day(conn, default, cutoff_ts)
                    if oldest is None:
                        break
                    note(*_export_day(archive, conn, default, oldest))
                    lo, hi = q.day_bounds(oldest)
                    conn.execute(q.sql.SQL(
                        "DELETE FROM {d} WHERE occurred_at >= %s AND occurred_at < %s"
                    ).format(d=q.ident(default)), (lo, hi))
        else:
            # One-day chunks are aligned to UTC midnight: export day by day, then
            # drop whole chunks (a crash in between re-exports nothing twice).
            with conn.transaction():
                chunk = _oldest_day(conn, archive.table, cutoff_ts)
            while chunk is not None and chunk < cutoff:
                with conn.transaction():
                    note(*_export_day(archive, conn, archive.table, chunk))
                chunk += timedelta(days=1)
            with conn.transaction():
                dropped = conn.execute("SELECT drop_chunks(%s, older_than => %s)",
                                       (archive.table, cutoff_ts)).fetchall()
                report.dropped.extend(str(r[0]) for r in dropped)
    finally:
        conn.close()
    if archive._horizon is None or archive._horizon < cutoff:
        archive._horizon = cutoff
    return report
