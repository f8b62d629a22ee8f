"""TLS to PostgreSQL and Redis: private TLS-only servers refuse plaintext and serve everything.

Debian's ``redis-server`` 7 and PostgreSQL 15 run on loopback with a throw-away
CA (tests/tls_servers.py): TLS 1.3 only, client certificate required. The
settings under test are the ``SELFLEARN_*`` TLS variables; the worker, the SDK,
``selflearn status`` and the reliability checker all reach the servers
through the addresses :func:`schemas.addresses.resolve` returns.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
import redis

from ops.stack.lifecycle import status
from ops.stack.processes import Spawned, stop
from ops.stack.workers import worker_env
from schemas import Envelope
from schemas.addresses import resolve
from schemas.settings import Settings
from tests.reliability.harness import Lab, PrivateBroker, check
from tests.tls_servers import Pki, make_pki, missing_binaries, start_postgres, start_redis

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "ops" / "scripts" / "tls-servers.sh"


@dataclass
class World:
    pki: Pki
    redis_port: int
    pg_port: int
    broker: PrivateBroker
    data_dir: Path

    @property
    def redis_url(self) -> str:  # plain: the TLS settings turn it into rediss://
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def env(self) -> dict[str, str]:
        """Every TLS setting, as an operator would set it."""
        return {
            "SELFLEARN_KAFKA_BOOTSTRAP": self.broker.address,
            "SELFLEARN_DATABASE_URL": self.database_url,
            "SELFLEARN_REDIS_URL": self.redis_url,
            "SELFLEARN_DATABASE_SSL_ROOTCERT": str(self.pki.ca),
            "SELFLEARN_DATABASE_SSL_CERT": str(self.pki.client_cert),
            "SELFLEARN_DATABASE_SSL_KEY": str(self.pki.client_key),
            "SELFLEARN_REDIS_SSL_CA_CERTS": str(self.pki.ca),
            "SELFLEARN_REDIS_SSL_CERTFILE": str(self.pki.client_cert),
            "SELFLEARN_REDIS_SSL_KEYFILE": str(self.pki.client_key),
            "SELFLEARN_DATA_DIR": str(self.data_dir),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if missing_binaries():
        done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True)
        if why := missing_binaries():
            pytest.skip(f"Debian redis-server 7 / PostgreSQL 15 (TLS builds) are not installed "
                        f"and cannot be installed here ({why}; needs root and apt-get): run "
                        f"`sudo bash {INSTALL}`; {done.stderr.strip()[-300:]}")
    base = tmp_path_factory.mktemp("tls")
    pki = make_pki(base / "pki")
    procs: list[Spawned] = []
    broker = PrivateBroker(base / "broker")
    try:
        r, redis_port = start_redis(base / "redis", pki)
        procs.append(r)
        pg, pg_port = start_postgres(base / "pg", pki)
        procs.append(pg)
        broker.start()
        yield World(pki, redis_port, pg_port, broker, base / "data")
    finally:
        if broker.proc is not None:
            broker.kill()
        for p in procs:
            stop(p.pid, p.create_time, timeout=15)


def _settings(world: World, monkeypatch: pytest.MonkeyPatch, **drop: bool) -> Settings:
    for name, value in world.env().items():
        if not drop.get(name):
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _pg_protocol(url: str) -> str | None:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                           ).fetchone()
        return None if row is None else str(row[0])


def _tls_handshake(port: int, pki: Pki, *, max_version: ssl.TLSVersion) -> str | None:
    """A raw TLS handshake with the client certificate; returns the negotiated version."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.maximum_version = max_version
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"PING\r\n")
        assert tls.recv(16) == b"+PONG\r\n"
        return tls.version()


def test_plaintext_connections_are_refused(world: World) -> None:
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(world.redis_url, socket_timeout=3, socket_connect_timeout=3).ping()
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(world.database_url + "?sslmode=disable", connect_timeout=5)


def test_only_tls_1_3_with_a_client_certificate_is_served(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _tls_handshake(world.redis_port, world.pki,
                          max_version=ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls_handshake(world.redis_port, world.pki, max_version=ssl.TLSVersion.TLSv1_2)
    full = _settings(world, monkeypatch)
    url = full.database_url_with_tls(world.database_url)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url + "&ssl_max_protocol_version=TLSv1.2", connect_timeout=5)
    # Without the client certificate both servers refuse, though the CA is right.
    anonymous = _settings(world, monkeypatch, SELFLEARN_DATABASE_SSL_CERT=True,
                          SELFLEARN_DATABASE_SSL_KEY=True, SELFLEARN_REDIS_SSL_CERTFILE=True,
                          SELFLEARN_REDIS_SSL_KEYFILE=True)
    addresses = resolve(anonymous)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(addresses.redis_url, socket_timeout=3).ping()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(addresses.database_url, connect_timeout=5)


def test_settings_from_the_environment_reach_both_servers_over_tls_1_3(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(world, monkeypatch)
    addresses = resolve(settings)
    assert addresses.redis_url.startswith("rediss://")
    assert "sslmode=verify-full" in addresses.database_url
    assert _pg_protocol(addresses.database_url) == "TLSv1.3"
    client = redis.Redis.from_url(addresses.redis_url, socket_timeout=3)
    assert client.ping()
    conn = client.connection_pool.get_connection()
    sock = conn._sock  # type: ignore[attr-defined]
    assert isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3"
    client.connection_pool.release(conn)
    # `selflearn status` probes with the same options; without them both look down.
    servers = status(settings)["servers"]
    assert servers["postgres"]["reachable"] and servers["redis"]["reachable"], servers
    plain = _settings(world, monkeypatch, **{k: True for k in world.env() if "_SSL_" in k})
    servers = status(plain)["servers"]
    assert not servers["postgres"]["reachable"] and not servers["redis"]["reachable"], servers


def test_the_worker_and_the_sdk_run_over_tls(
        world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(world, monkeypatch)
    tls = resolve(settings)
    # The worker gets the plain URLs and the TLS settings (ops/stack/workers.py PASSED_ON):
    # it can only reach the servers if its own Settings apply them.
    plain = replace(tls, database_url=world.database_url, redis_url=world.redis_url)
    env = worker_env(settings, plain)
    assert env["SELFLEARN_REDIS_URL"].startswith("redis://") and "ssl" not in env[
        "SELFLEARN_DATABASE_URL"]
    assert env["SELFLEARN_REDIS_SSL_KEYFILE"] == str(world.pki.client_key)
    lab = Lab.create(settings, plain, tmp_path)
    try:
        lab.worker("w1")
        lab.addresses = tls  # the SDK and the checker below: the resolved TLS addresses
        agent = "tls-estimator"
        client = lab.client(agent, decision_kind="task_estimate",
                            redis_url=lab.addresses.redis_url)
        sent: list[Envelope] = []
        for i in range(400):
            ev = client.emit("task.completed", {
                "task_id": f"t-{i}", "project": "mule", "actual_points": float(i % 8 + 1),
                "duration_s": 60.0 + i % 7, "success": i % 3 != 0})
            assert isinstance(ev, Envelope), ev
            sent.append(ev)
        assert client.flush(60)
        verdict = check(lab, sent)  # features and memory in Redis, archive in PostgreSQL
        assert verdict.clean(), verdict
        # A first decision request makes the worker publish this agent's policy; the SDK's
        # read model refreshes it and the agent's online features from the TLS Redis.
        engine = client.engine
        assert engine is not None
        ctx = {"task_id": "x", "project": "mule"}
        assert client.decide(ctx).policy == "baseline"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                engine.policy is not None and engine.decide(ctx, request_id="probe").features):
            time.sleep(0.2)
        decision = client.decide(ctx)
        assert engine.policy is not None and decision.features, decision
        assert engine.refresh_failures == 0
    finally:
        lab.close()
