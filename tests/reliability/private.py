"""Private servers only tests need (a broker behind the fault proxy), and lock-steps.

The session's shared stack (tests/conftest.py) is never stopped: a test that
needs to break PostgreSQL, Redis or the broker starts its own on free ports
in its temporary folder (:mod:`ops.stack.private`, shared with the soak
bench, as is the steady traffic of :mod:`ops.usecases.traffic`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from ops.stack.private import PrivatePostgres, PrivateRedis, kill9
from ops.stack.processes import Spawned, free_port, port_open, stop
from ops.stack.servers import kafka_address, start_kafka
from ops.usecases.traffic import REVIEW_CONTEXT, Traffic, event_for, recorded
from tests.reliability.faultproxy import FaultProxy, Peer

__all__ = ["REVIEW_CONTEXT", "PrivatePostgres", "PrivateRedis", "ProxiedBroker", "Traffic",
           "blocked_at", "event_for", "kill9", "recorded"]


class ProxiedBroker:
    """A private Tansu that advertises a fault proxy's port: every client goes through it."""

    def __init__(self, data_dir: Path, *, seed: int = 0,
                 affects: Callable[[Peer], bool] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proxy = FaultProxy(("127.0.0.1", self.port), port=free_port(), seed=seed,
                                affects=affects)
        self.proc: Spawned | None = None

    @property
    def address(self) -> str:
        return kafka_address(self.proxy.port)

    def start(self) -> ProxiedBroker:
        self.proxy.start()
        self.proc = start_kafka(self.data_dir, self.port, self.data_dir / "tansu.log",
                                advertised_port=self.proxy.port)
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private broker did not start"
            time.sleep(0.05)
        return self

    def close(self) -> None:
        self.proxy.stop()
        if self.proc is not None:
            stop(self.proc.pid, self.proc.create_time, sig=signal.SIGKILL, timeout=10)
            self.proc = None


# -- catching a worker at a chosen step -----------------------------------------------
@contextmanager
def blocked_at(database_url: str, table: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold a lock that stops writes to ``table``; yields once a worker waits on it.

    ``events`` stops a worker in the middle of a batch (features, memory and
    learning applied, the archive not yet); ``projection_checkpoints`` stops
    it in the middle of a learning checkpoint. The lock is released on exit.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as probe:
        # A worker makes its tables when it first needs them (a loaded machine: seconds).
        while probe.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:  # type: ignore[index]
            assert time.monotonic() < deadline, f"no worker created {table}"
            time.sleep(0.05)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"LOCK TABLE {table} IN SHARE MODE")  # blocks INSERT / UPDATE, not reads
        with psycopg.connect(database_url, autocommit=True) as watch:
            while not watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND state = 'active' AND pid <> %s AND query ILIKE %s",
                (conn.info.backend_pid, f"%{table}%"),
            ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, f"no worker reached a write to {table}"
                time.sleep(0.02)
        yield
        conn.rollback()
