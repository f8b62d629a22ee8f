"""Projection checkpoints in PostgreSQL: state bytes plus the offsets they cover.

A projection acknowledges its input only after a checkpoint that includes it
is stored, so after a crash it restores the checkpoint and the broker
re-delivers exactly what came after (anything older is skipped by the
projection's own watermarks). PostgreSQL, not the broker or Redis, is where
durable state lives on the embedded stack (docs/broker.md).

During a PostgreSQL outage :meth:`CheckpointStore.save` raises
:class:`CheckpointUnavailable` (the caller then acknowledges nothing and
tries again at its next checkpoint: nothing is lost, some input is
re-delivered) and :meth:`CheckpointStore.load` waits for the server, since a
shard cannot go on without its state.

>>> CheckpointStore.DDL.startswith("CREATE TABLE IF NOT EXISTS projection_checkpoints")
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)
CONNECT_TIMEOUT_S = 5  # a frozen server must not hold a checkpoint forever


class CheckpointUnavailable(RuntimeError):
    """PostgreSQL did not answer; nothing was saved. Acknowledge nothing, try later."""


class CheckpointStore:
    """``save`` / ``load`` of one bytes blob per (projection, partition).

    Parameters
    ----------
    dsn
        libpq URL of the PostgreSQL that keeps the checkpoints.
    sleep
        Called with the back-off delay while :meth:`load` waits (tests inject one).
    """

    DDL = (
        "CREATE TABLE IF NOT EXISTS projection_checkpoints ("
        " projection text NOT NULL, part integer NOT NULL, state bytea NOT NULL,"
        " saved_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (projection, part))"
    )

    def __init__(self, dsn: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.dsn = dsn
        self._sleep = sleep
        self._ready = False  # the table is created on first use, not by the constructor

    def _ensure_table(self) -> None:
        if not self._ready:
            with psycopg.connect(self.dsn, autocommit=True,
                                 connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute(self.DDL)
            self._ready = True

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S)

    def save(self, projection: str, states: dict[int, bytes]) -> None:
        """Store every partition's state in one transaction.

        Raises
        ------
        CheckpointUnavailable
            PostgreSQL did not answer; nothing of this checkpoint was stored.
        """
        try:
            self._ensure_table()
            with self._connect() as conn:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO projection_checkpoints (projection, part, state) "
                        "VALUES (%s, %s, %s) ON CONFLICT (projection, part) DO UPDATE "
                        "SET state = EXCLUDED.state, saved_at = now()",
                        [(projection, part, state) for part, state in states.items()],
                    )
                conn.commit()
        except _LOST as exc:
            raise CheckpointUnavailable(f"checkpoint not saved: {exc}") from exc

    def load(self, projection: str, part: int) -> bytes | None:
        """The last saved state of one partition, or None; waits out an outage."""
        delay = 0.05
        while True:
            try:
                self._ensure_table()
                with self._connect() as conn:
                    row = conn.execute(
                        "SELECT state FROM projection_checkpoints "
                        "WHERE projection = %s AND part = %s", (projection, part),
                    ).fetchone()
                return bytes(row[0]) if row else None
            except _LOST as exc:
                log.warning("checkpoint store unavailable (%s); retrying in %.2fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
