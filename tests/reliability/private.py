"""Private servers a fault test may stop, freeze or put behind a proxy, and steady traffic.

The session's shared stack (tests/conftest.py) is never stopped: a test that
needs to break PostgreSQL, Redis or the broker starts its own on free ports
in its temporary folder, here.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from agents.client import AgentClient
from ops.stack.probes import redis_probe
from ops.stack.processes import Spawned, free_port, port_open, spawn, stop, wait_until
from ops.stack.servers import (
    kafka_address,
    postgres_address,
    postgres_ready,
    redis_address,
    redis_binary,
    start_kafka,
    start_postgres,
)
from schemas import Envelope
from tests.reliability.faultproxy import FaultProxy, Peer


class _Server:
    """A server process on a fixed port that can be stopped, started and frozen."""

    def __init__(self, data_dir: Path, name: str) -> None:
        self.data_dir = data_dir
        self.name = name
        self.port = free_port()
        self.proc: Spawned | None = None
        self.starts = 0

    def _spawn(self) -> Spawned:
        raise NotImplementedError

    def _ready(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.starts += 1
        self.proc = self._spawn()
        proc = self.proc
        wait_until(self._ready, timeout=90, alive=lambda: _alive(proc))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (its data stays on disk for the next :meth:`start`)."""
        if self.proc is not None:
            stop(self.proc.pid, self.proc.create_time, sig=sig, timeout=30)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP the server and everything it forked: it holds connections, answers nothing."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)  # spawned in its own session: pgid == pid

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None:
            self.thaw()
            self.stop(signal.SIGKILL)


def _alive(proc: Spawned) -> bool:
    from ops.stack.processes import is_alive

    return is_alive(proc.pid, proc.create_time)


class PrivatePostgres(_Server):
    """A PostgreSQL cluster of one test (``<data_dir>/pg``); data survives a stop."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "postgres")

    @property
    def url(self) -> str:
        return postgres_address(self.port)

    def _spawn(self) -> Spawned:
        return start_postgres(self.data_dir, self.port, self.data_dir / "postgres.log")

    def _ready(self) -> None:
        postgres_ready(self.port)

    def stop(self, sig: int = signal.SIGINT) -> None:  # SIGINT: fast shutdown
        super().stop(sig)


class PrivateRedis(_Server):
    """A Redis of one test with an append-only file, so a stop loses nothing (as deployed)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "redis")

    @property
    def url(self) -> str:
        return redis_address(self.port)

    def _spawn(self) -> Spawned:
        work = self.data_dir / "redis"
        work.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--daemonize", "no", "--dir", str(work), "--logfile", ""]
        return spawn(argv, self.data_dir / "redis.log", cwd=work)

    def _ready(self) -> None:
        redis_probe(self.url)


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


def kill9(worker: Spawned) -> None:
    """``kill -9`` a worker: no revoke, no checkpoint, no commit."""
    assert stop(worker.pid, worker.create_time, sig=signal.SIGKILL, timeout=10), \
        f"worker {worker.pid} was not running"


# -- traffic -------------------------------------------------------------------------
def event_for(i: int, agent: str) -> tuple[str, dict[str, object]]:
    """The ``i``-th event of a steady mix: outcomes (features), requests, estimates (memory)."""
    k = i % 4
    if k == 0:
        return "task.completed", {"task_id": f"{agent}-t{i}", "project": "mule",
                                  "actual_points": float(i % 8 + 1),
                                  "duration_s": 30.0 + i % 50, "success": i % 3 != 0}
    if k == 1:
        return "review.completed", {"change_id": f"{agent}-c{i}", "project": "Ant",
                                    "passed_first_try": i % 2 == 0}
    if k == 2:
        return "review.requested", {"change_id": f"{agent}-c{i}", "project": "Ant",
                                    "metrics": {"la": 0.1 * (i % 7), "lt": 10.0 + i % 90,
                                                "nf": 1 + i % 5}}
    return "task.estimated", {"task_id": f"{agent}-t{i}", "project": "mule",
                              "title": f"task number {i}", "description": "",
                              "estimate": float(i % 13)}


REVIEW_CONTEXT = {"change_id": "c", "project": "Ant", "la": 0.4, "lt": 120.0, "nf": 3}


def recorded(client: AgentClient, into: list[Envelope]) -> AgentClient:
    """Make ``client`` append every envelope it emits (``decide`` emits two) to ``into``."""
    emit = client.emit

    def recording(*args: object, **kw: object) -> object:
        ev = emit(*args, **kw)  # type: ignore[arg-type]
        assert isinstance(ev, Envelope), ev
        into.append(ev)
        return ev

    client.emit = recording  # type: ignore[method-assign,assignment]
    return client


class Traffic:
    """Emits a steady, bounded mix of events from ``clients`` on a thread; keeps what was sent.

    ``rate`` is events per second over all clients, ``limit`` the most it sends;
    a client made with a ``decision_kind`` (``review_risk``) decides instead of
    emitting, which also makes the worker publish shadow predictions and
    policies. :meth:`stop` returns every envelope the clients emitted.
    """

    def __init__(self, clients: list[AgentClient], *, rate: float, limit: int,
                 seed: int = 0) -> None:
        self.clients = clients
        self.rate = rate
        self.limit = limit
        self.sent: list[Envelope] = []
        for c in clients:
            recorded(c, self.sent)
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.limit):
            if self._halt.is_set():
                return
            client = self.clients[self._rng.randrange(len(self.clients))]
            if client.engine is not None:
                client.decide({**REVIEW_CONTEXT, "change_id": f"c{i}", "nf": i % 9})
            else:
                client.emit(*event_for(i, client.agent_id))
            ahead = started + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def stop(self, flush_s: float = 120.0) -> list[Envelope]:
        """Stop emitting, wait until every client delivered; returns what was sent."""
        self._halt.set()
        self._thread.join(30)
        for c in self.clients:
            assert c.flush(flush_s), f"{c.agent_id}: events not delivered"
        return list(self.sent)

    def wait(self, n: int, timeout: float = 60.0) -> None:
        """Until at least ``n`` events were emitted."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < n:
            assert time.monotonic() < deadline and self._thread.is_alive(), "traffic stalled"
            time.sleep(0.05)


# -- catching a worker at a chosen step -----------------------------------------------
@contextmanager
def blocked_at(database_url: str, table: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold a lock that stops writes to ``table``; yields once a worker waits on it.

    ``events`` stops a worker in the middle of a batch (features, memory and
    learning applied, the archive not yet); ``projection_checkpoints`` stops
    it in the middle of a learning checkpoint. The lock is released on exit.
    """
    with psycopg.connect(database_url) as conn:
        conn.execute(f"LOCK TABLE {table} IN SHARE MODE")  # blocks INSERT / UPDATE, not reads
        deadline = time.monotonic() + timeout
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
