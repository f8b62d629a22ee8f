"""Private servers a fault test or the soak bench may kill, stop, freeze and restart.

The machine's shared services and the session's stack are never stopped:
whoever needs to break PostgreSQL, Redis or the broker starts its own here,
on free ports in its own folder (tests/reliability, ``selflearn bench soak``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ops.stack.probes import redis_probe
from ops.stack.processes import Spawned, free_port, is_alive, port_open, spawn, stop, wait_until
from ops.stack.servers import (
    kafka_address,
    postgres_address,
    postgres_ready,
    redis_address,
    redis_binary,
    start_kafka,
    start_postgres,
)


class PrivateBroker:
    """A Tansu broker on a fixed port: killable, and restartable empty."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: Spawned | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return kafka_address(self.port)

    def start(self) -> None:
        self.starts += 1
        self.proc = start_kafka(self.data_dir, self.port, self.data_dir / f"tansu{self.starts}.log")
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private broker did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        stop(self.proc.pid, self.proc.create_time, sig=9, timeout=10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.kill()


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
        wait_until(self._ready, timeout=90, alive=lambda: is_alive(proc.pid, proc.create_time))

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


class PrivatePostgres(_Server):
    """A PostgreSQL cluster in ``<data_dir>/pg``; data survives a stop."""

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
    """A Redis with an append-only file, so a stop loses nothing (as deployed)."""

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


def kill9(worker: Spawned) -> None:
    """``kill -9`` a worker: no revoke, no checkpoint, no commit."""
    assert stop(worker.pid, worker.create_time, sig=signal.SIGKILL, timeout=10), \
        f"worker {worker.pid} was not running"
