"""Protocol-level health checks: does each server really answer?

Each probe raises on failure (with the reason) and returns nothing on
success, so it can be retried by :func:`ops.stack.processes.wait_until`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from urllib.parse import urlparse

_API_VERSIONS = 18


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``, or ``"host"``) -> ``(host, port)``.

    >>> split_host_port("127.0.0.1:9092", 9092)
    ('127.0.0.1', 9092)
    >>> split_host_port("kafka", 9092)
    ('kafka', 9092)
    """
    address = address.strip()
    if "://" in address:
        address = address.split("://", 1)[1]
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return host, int(port)


def kafka_probe(bootstrap: str, timeout: float = 2.0) -> None:
    """Send a Kafka ApiVersions (v0) request to the first bootstrap server that answers.

    Raises
    ------
    ConnectionError
        When no bootstrap server answers with a valid ApiVersions response.
    """
    errors: list[str] = []
    for entry in bootstrap.split(","):
        host, port = split_host_port(entry, 9092)
        try:
            _api_versions(host, port, timeout)
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise ConnectionError("Kafka ApiVersions failed: " + "; ".join(errors))


def _api_versions(host: str, port: int, timeout: float) -> None:
    client_id = b"selflearn-probe"
    correlation = 0x5E1F
    body = struct.pack(">hhih", _API_VERSIONS, 0, correlation, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        if not 6 <= size <= 1_000_000:
            raise ValueError(f"not a Kafka response (size {size})")
        payload = _recv_exact(sock, size)
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    if got_correlation != correlation:
        raise ValueError(f"wrong correlation id {got_correlation}")
    if error_code != 0:
        raise ValueError(f"ApiVersions error code {error_code}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def postgres_probe(url: str, timeout: float = 2.0) -> None:
    """Run ``SELECT 1`` on ``url`` (a libpq URL) with psycopg."""
    import psycopg

    with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
        row = conn.execute("SELECT 1").fetchone()
        if row != (1,):
            raise ValueError(f"SELECT 1 returned {row!r}")


def redis_probe(url: str, timeout: float = 2.0) -> None:
    """Send PING to ``url`` with redis-py."""
    from projections.redis_client import redis_client

    client = redis_client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if not client.ping():
            raise ValueError("PING did not answer PONG")
    finally:
        client.close()


def mlflow_probe(uri: str, timeout: float = 2.0) -> None:
    """Check an MLflow tracking URI.

    A SQLite or file store answers when its folder exists; a server when its port is open.
    """
    from pathlib import Path

    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            return
    if parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path or uri)
    else:
        return  # databricks, postgresql+...: nothing cheap to check
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (it is created on first use)")


PROBES: dict[str, Callable[[str], None]] = {
    "kafka": kafka_probe,
    "postgres": postgres_probe,
    "redis": redis_probe,
    "mlflow": mlflow_probe,
}
