"""A private Redis Cluster on loopback: N primaries, each with replicas, as separate processes.

For the reliability suite and for trying the cluster mode by hand; it is no
deployment (one host, no persistence: a restarted node comes back empty and
re-syncs from its primary). Each node runs ``redis-server --cluster-enabled
yes`` in its own folder; ``redis-cli --cluster create`` assigns the slots
and the replicas. The cluster bus listens on port + 10 000, so ports are
picked below 55 536 with both free.

>>> RedisClusterNodes(Path("/tmp/x"), primaries=3, replicas=1).size
6
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from ops.stack.processes import Spawned, is_alive, spawn, stop, wait_until
from ops.stack.servers import redis_binary

HOST = "127.0.0.1"
BUS_OFFSET = 10_000


def server_binary() -> str:
    """The system's ``redis-server`` (Debian's 7.0 here), else the embedded stack's."""
    system = Path("/usr/bin/redis-server")
    return str(system) if system.exists() else redis_binary()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def cluster_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` ports whose cluster-bus ports (+10 000) are free too."""
    rng = rng or random.Random()
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(20_000, 45_000)
        if port not in out and _free(port) and _free(port + BUS_OFFSET):
            out.append(port)
    return out


class RedisClusterNodes:
    """``primaries`` × (1 + ``replicas``) ``redis-server`` processes forming one cluster.

    ``node_timeout_ms`` is how long a silent primary takes to be declared
    failed (then its replica is promoted): short here, so a failover takes
    a second or two.
    """

    def __init__(self, data_dir: Path, *, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.data_dir = data_dir
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.procs: dict[int, Spawned] = {}

    @property
    def size(self) -> int:
        return self.primaries * (1 + self.replicas)

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming one node (the client discovers the others)."""
        return f"redis+cluster://{HOST}:{self.ports[0]}"

    def start(self) -> RedisClusterNodes:
        self.ports = cluster_ports(self.size)
        for port in self.ports:
            self.start_node(port)
        cli = str(Path(server_binary()).with_name("redis-cli"))
        subprocess.run(
            [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60)
        wait_until(self._healthy, timeout=60)
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart) the node of ``port``; it keeps its identity in ``nodes.conf``."""
        work = self.data_dir / f"redis-{port}"
        work.mkdir(parents=True, exist_ok=True)
        argv = [server_binary(), "--bind", HOST, "--port", str(port),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                "--daemonize", "no",
                "--dir", str(work), "--logfile", ""]
        proc = spawn(argv, work / "redis.log", cwd=work)
        self.procs[port] = proc
        wait_until(lambda: _ping(port), timeout=30,
                   alive=lambda: is_alive(proc.pid, proc.create_time))

    def kill(self, port: int) -> None:
        """``kill -9`` one node."""
        proc = self.procs.pop(port)
        stop(proc.pid, proc.create_time, sig=signal.SIGKILL, timeout=10)

    def roles(self) -> dict[int, str]:
        """``master`` or ``slave`` per live node's port, as each says of itself now."""
        return {port: str(_node(port).info("replication")["role"]) for port in self.procs}

    def primary_ports(self) -> list[int]:
        return sorted(p for p, role in self.roles().items() if role == "master")

    def _healthy(self) -> None:
        """Every live node says ``cluster_state:ok`` and every primary has its replicas."""
        for port in self.procs:
            if not _cluster_ok(port):
                raise RuntimeError(f"node {port}: cluster not ok yet")
        primaries = self.primary_ports()
        if len(primaries) != self.primaries:
            raise RuntimeError(f"{len(primaries)} primaries, want {self.primaries}")
        for port in primaries:
            info = _node(port).info("replication")
            online = sum(1 for i in range(int(info.get("connected_slaves", 0)))
                         if info.get(f"slave{i}", {}).get("state") == "online")
            if online < self.replicas:
                raise RuntimeError(f"primary {port}: {online} replica(s) in sync")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_until(self._healthy, timeout=timeout)

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)


def _node(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)


def _cluster_ok(port: int) -> bool:
    return str(_node(port).cluster("INFO").get("cluster_state")) == "ok"


def _ping(port: int) -> None:
    if not _node(port).ping():
        raise RuntimeError(f"node {port} does not answer")


def wait_failover(nodes: RedisClusterNodes, killed: int, timeout: float = 30.0) -> float:
    """Seconds until the cluster is ``ok`` again without the ``killed`` primary."""
    began = time.monotonic()

    def promoted() -> None:
        primaries = nodes.primary_ports()
        if killed in primaries or len(primaries) != nodes.primaries:
            raise RuntimeError("no replica promoted yet")
        for port in nodes.procs:
            if not _cluster_ok(port):
                raise RuntimeError("cluster not ok yet")

    wait_until(promoted, timeout=timeout)
    return time.monotonic() - began
