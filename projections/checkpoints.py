"""Projection checkpoints in PostgreSQL: state bytes plus the offsets they cover.

A projection acknowledges its input only after a checkpoint that includes it
is stored, so after a crash it restores the checkpoint and the broker
re-delivers exactly what came after (anything older is skipped by the
projection's own watermarks). PostgreSQL, not the broker or Redis, is where
durable state lives on the embedded stack (docs/broker.md).

>>> CheckpointStore.DDL.startswith("CREATE TABLE IF NOT EXISTS projection_checkpoints")
True
"""

from __future__ import annotations

import psycopg


class CheckpointStore:
    """``save`` / ``load`` of one bytes blob per (projection, partition)."""

    DDL = (
        "CREATE TABLE IF NOT EXISTS projection_checkpoints ("
        " projection text NOT NULL, part integer NOT NULL, state bytea NOT NULL,"
        " saved_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (projection, part))"
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._ready = False  # the table is created on first use, not by the constructor

    def _ensure_table(self) -> None:
        if not self._ready:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(self.DDL)
            self._ready = True

    def save(self, projection: str, states: dict[int, bytes]) -> None:
        """Store every partition's state in one transaction."""
        self._ensure_table()
        with psycopg.connect(self.dsn) as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO projection_checkpoints (projection, part, state) "
                    "VALUES (%s, %s, %s) ON CONFLICT (projection, part) DO UPDATE "
                    "SET state = EXCLUDED.state, saved_at = now()",
                    [(projection, part, state) for part, state in states.items()],
                )
            conn.commit()

    def load(self, projection: str, part: int) -> bytes | None:
        """The last saved state of one partition, or None."""
        self._ensure_table()
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT state FROM projection_checkpoints WHERE projection = %s AND part = %s",
                (projection, part),
            ).fetchone()
        return bytes(row[0]) if row else None
