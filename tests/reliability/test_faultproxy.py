"""The fault proxy itself: each fault does what the reliability tests rely on."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.reliability.faultproxy import FaultProxy, from_process, not_from_process


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A threaded echo server on 127.0.0.1; counts the bytes it received."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()
    stop.set()
    t.join(2)
    server.close()


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_forwards_bytes_unchanged(echo: tuple[str, int]) -> None:
    payload = os.urandom(300_000)
    with FaultProxy(echo) as proxy, _connect(proxy) as c:
        c.sendall(payload)
        assert _recv_exactly(c, len(payload)) == payload


def test_latency_with_jitter_delays_and_keeps_order(echo: tuple[str, int]) -> None:
    with FaultProxy(echo, seed=7) as proxy, _connect(proxy) as c:
        proxy.latency(0.05, 0.04)
        started = time.monotonic()
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        assert time.monotonic() - started >= 0.02  # two hops of >= 0.01 s each
        sent = b"".join(i.to_bytes(4, "big") for i in range(2000))
        for i in range(0, len(sent), 400):  # many small chunks, each with its own jitter
            c.sendall(sent[i:i + 400])
        assert _recv_exactly(c, len(sent)) == sent


def test_blackhole_holds_bytes_then_delivers_them(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy, _connect(proxy) as c:
        c.sendall(b"before")
        assert _recv_exactly(c, 6) == b"before"
        proxy.blackhole()
        c.sendall(b"during")
        c.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv(6)
        with _connect(proxy) as late:  # a new connection hangs too
            late.settimeout(0.3)
            late.sendall(b"new")
            with pytest.raises(TimeoutError):
                late.recv(3)
            proxy.blackhole(False)
            late.settimeout(5)
            assert _recv_exactly(late, 3) == b"new"
        c.settimeout(5)
        assert _recv_exactly(c, 6) == b"during"


def test_reset_after_n_bytes_cuts_the_connection(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:
        proxy.reset_after(10_000)
        with _connect(proxy) as c:
            got = b""
            with pytest.raises(ConnectionResetError):
                c.sendall(os.urandom(4000))
                got += _recv_exactly(c, 4000)
                for _ in range(10):
                    c.sendall(os.urandom(4000))
                    got += c.recv(65536)
                    time.sleep(0.05)
        assert len(got) <= 10_000 and proxy.resets == 1
        proxy.reset_after(None)
        with _connect(proxy) as c:  # new connections work again
            c.sendall(os.urandom(20_000))
            assert len(_recv_exactly(c, 20_000)) == 20_000


def test_down_refuses_and_up_accepts_again(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:
        c = _connect(proxy)
        c.sendall(b"a")
        assert c.recv(1) == b"a"
        proxy.down()
        c.settimeout(2)
        try:
            assert c.recv(1) == b""  # closed by the proxy ...
        except ConnectionResetError:
            pass  # ... or reset: either way not left hanging
        c.close()
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        proxy.up()
        with _connect(proxy) as again:
            again.sendall(b"c")
            assert again.recv(1) == b"c"


def test_faults_only_reach_the_clients_they_affect(echo: tuple[str, int]) -> None:
    with FaultProxy(echo, affects=not_from_process(os.getpid())) as proxy:
        proxy.blackhole()
        with _connect(proxy) as c:  # this process is spared
            c.sendall(b"ok")
            assert _recv_exactly(c, 2) == b"ok"
    with FaultProxy(echo, affects=from_process(os.getpid())) as proxy:
        proxy.blackhole()
        with _connect(proxy) as c:
            c.settimeout(0.3)
            c.sendall(b"no")
            with pytest.raises(TimeoutError):
                c.recv(2)
