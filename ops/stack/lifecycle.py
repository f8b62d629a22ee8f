"""The embedded stack: start, reuse, report and stop the local servers.

``up`` starts, in the data folder, every server that the environment does
not configure (Kafka-protocol broker, PostgreSQL, Redis), waits until each
answers its own protocol, and records addresses and PIDs in
``<data_dir>/stack.json``. ``down`` stops exactly the recorded processes.

>>> from schemas.settings import Settings
>>> sorted(status(Settings(data_dir="/nonexistent", _env_file=None))["servers"])
['kafka', 'mlflow', 'postgres', 'redis']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.stack import servers
from ops.stack.probes import PROBES
from ops.stack.processes import Spawned, free_port, is_alive, stop, tail, wait_until
from ops.stack.workers import stop_workers
from schemas.addresses import (
    Addresses,
    default_mlflow_uri,
    process_started,
    read_stack_file,
    resolve,
)
from schemas.settings import SERVERS, Settings


class StackError(RuntimeError):
    """A server of the embedded stack could not be started."""


@dataclass(frozen=True)
class _Kind:
    """How to start, address and stop one kind of server."""

    start: Callable[[Path, int, Path], Spawned]
    address: Callable[[int], str]
    ready: Callable[[int], None]
    ready_timeout: float
    stop_signal: int = signal.SIGTERM


# Start order: the slowest first; the broker (instant, in-memory) last.
KINDS: dict[str, _Kind] = {
    # SIGINT is PostgreSQL's "fast shutdown": roll back and exit cleanly.
    "postgres": _Kind(
        servers.start_postgres, servers.postgres_address, servers.postgres_ready, 60.0,
        signal.SIGINT,
    ),
    "redis": _Kind(
        servers.start_redis, servers.redis_address,
        lambda port: PROBES["redis"](servers.redis_address(port)), 20.0,
    ),
    "kafka": _Kind(
        servers.start_kafka, servers.kafka_address,
        lambda port: PROBES["kafka"](servers.kafka_address(port)), 20.0,
    ),
}
_START_ATTEMPTS = 3


# --- stack.json ----------------------------------------------------------------


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` on one data folder across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_stack(data_dir: Path, services: dict[str, dict[str, Any]]) -> None:
    """Atomically write ``stack.json`` (or remove it when nothing runs)."""
    path = data_dir / "stack.json"
    if not services:
        path.unlink(missing_ok=True)
        return
    doc = {"version": 1, "data_dir": str(data_dir), "services": services}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _services(data_dir: Path) -> dict[str, dict[str, Any]]:
    stack = read_stack_file(data_dir) or {}
    return dict(stack.get("services", {}))


# --- up --------------------------------------------------------------------------


def _answers(name: str, address: str) -> bool:
    try:
        PROBES[name](address)
        return True
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False


def _reusable(name: str, entry: dict[str, Any] | None) -> bool:
    """True when a recorded server still runs and answers."""
    if not entry or not is_alive(entry["pid"], entry.get("create_time")):
        return False
    try:
        wait_until(lambda: PROBES[name](entry["address"]), timeout=5.0)
        return True
    except TimeoutError:
        return False


def _entry(name: str, port: int, spawned: Spawned) -> dict[str, Any]:
    return {
        "address": KINDS[name].address(port),
        "port": port,
        "pid": spawned.pid,
        "create_time": spawned.create_time,
        "log": str(spawned.log),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _adopt_postmaster(data_dir: Path) -> dict[str, Any] | None:
    """A PostgreSQL already running on ``<data_dir>/pg`` but not recorded (e.g. lost stack.json)."""
    found = servers.running_postmaster(data_dir / "pg")
    if found is None:
        return None
    pid, port = found
    address = servers.postgres_address(port)
    try:
        servers.postgres_ready(port)
    except Exception:  # noqa: BLE001 - not answering: let the normal start report it
        return None
    return {
        "address": address, "port": port, "pid": pid,
        "create_time": process_started(pid),
        "log": str(data_dir / "logs" / "postgres.log"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _await_ready(kind: _Kind, port: int, spawned: Spawned) -> None:
    """Wait until the server on ``port`` answers, or its process dies."""
    wait_until(
        lambda: kind.ready(port),
        timeout=kind.ready_timeout,
        alive=lambda: is_alive(spawned.pid, spawned.create_time),
    )


def _start(name: str, data_dir: Path) -> dict[str, Any]:
    """Start one server on a free port and wait until it answers.

    A port taken between choosing it and binding it is retried on a new port.
    """
    kind = KINDS[name]
    log = data_dir / "logs" / f"{name}.log"
    last_error = ""
    for _ in range(_START_ATTEMPTS):
        port = free_port(servers.HOST)
        log_size = log.stat().st_size if log.exists() else 0
        try:
            spawned = kind.start(data_dir, port, log)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            raise StackError(
                f"{SERVERS[name][2]} could not be launched: {exc}\n"
                f"(Or set {SERVERS[name][1]} to a running server.)"
            ) from exc
        entry = _entry(name, port, spawned)
        try:
            _await_ready(kind, port, spawned)
            return entry
        except Exception as exc:  # noqa: BLE001 - reported below with the log
            stop(spawned.pid, spawned.create_time, sig=kind.stop_signal, timeout=10.0)
            last_error = str(exc)
            new_output = log.read_bytes()[log_size:].decode(errors="replace").lower()
            if "in use" not in new_output:
                break
    env = SERVERS[name][1]
    raise StackError(
        f"{SERVERS[name][2]} did not start: {last_error}\n"
        f"Log: {log}\n{tail(log)}\n"
        f"(Or set {env} to a running server.)"
    )


def up(settings: Settings) -> Addresses:
    """Start every server not configured by environment; reuse running ones.

    Idempotent: servers recorded in ``stack.json`` that still run and answer
    are kept. Returns the addresses of all servers (configured or embedded).

    Raises
    ------
    StackError
        When a server does not start or answer; servers started by this call
        are stopped again, and the message names the log file.
    """
    data_dir = settings.data_dir.resolve()
    with _locked(data_dir):
        services = _services(data_dir)
        started: list[str] = []
        try:
            for name in KINDS:
                if settings.configured(name):
                    continue
                entry = services.get(name)
                if _reusable(name, entry):
                    continue
                if entry:  # recorded but dead or mute: replace it
                    stop(entry["pid"], entry.get("create_time"), sig=KINDS[name].stop_signal)
                    services.pop(name)
                adopted = _adopt_postmaster(data_dir) if name == "postgres" else None
                services[name] = adopted or _start(name, data_dir)
                started.append(name)
                _write_stack(data_dir, services)
        except BaseException:
            for name in started:
                entry = services.pop(name)
                stop(entry["pid"], entry.get("create_time"), sig=KINDS[name].stop_signal)
            _write_stack(data_dir, services)
            raise
    return resolve(settings)


# --- down ------------------------------------------------------------------------


def down(settings: Settings) -> list[str]:
    """Stop exactly the processes recorded in ``stack.json`` and forget them.

    Servers configured by environment are never touched. Data (the
    PostgreSQL cluster, logs) stays in the data folder. Returns the names
    of the servers that were stopped.
    """
    data_dir = settings.data_dir.resolve()
    if not data_dir.exists():
        return []
    stopped: list[str] = []
    if stop_workers(data_dir):
        stopped.append("workers")
    with _locked(data_dir):
        services = _services(data_dir)
        for name, entry in list(services.items()):
            sig = KINDS[name].stop_signal if name in KINDS else signal.SIGTERM
            if stop(entry["pid"], entry.get("create_time"), sig=sig, timeout=30.0):
                stopped.append(name)
            del services[name]
            _write_stack(data_dir, services)
    return stopped


# --- status ----------------------------------------------------------------------


def status(settings: Settings) -> dict[str, Any]:
    """Report each server: address, who provides it, and whether it answers.

    Returns ``{"data_dir": str, "servers": {name: info}}`` where ``info`` has
    ``address``, ``source`` (``"configured"``, ``"embedded"``, ``"default"``
    or ``"missing"``), ``pid``, ``reachable``, ``error``, ``env`` and ``log``.
    """
    data_dir = settings.data_dir.resolve()
    try:
        services = _services(data_dir)
    except Exception:  # noqa: BLE001 - a damaged stack.json reads as "nothing started"
        services = {}
    report: dict[str, dict[str, Any]] = {}
    for name, (_field, env, _label) in SERVERS.items():
        entry = services.get(name) or {}
        configured = settings.configured(name)
        info: dict[str, Any] = {"env": env, "pid": None, "log": entry.get("log")}
        if configured:
            info.update(address=configured, source="configured")
        elif entry:
            alive = is_alive(entry["pid"], entry.get("create_time"))
            info.update(address=entry["address"], source="embedded",
                        pid=entry["pid"] if alive else None)
        else:
            info.update(address=None, source="missing")
        report[name] = info
    mlflow = settings.mlflow_uri or default_mlflow_uri(data_dir)
    report["mlflow"] = {
        "env": "SELFLEARN_MLFLOW_URI", "pid": None, "log": None, "address": mlflow,
        "source": "configured" if settings.mlflow_uri else "default",
    }
    for name, info in report.items():
        info["reachable"], info["error"] = _probe(name, _with_tls(settings, name,
                                                                  info["address"]))
    return {"data_dir": str(data_dir), "servers": report}


def _with_tls(settings: Settings, name: str, address: str | None) -> str | None:
    """The address a client uses: the configured TLS options added (as ``resolve`` does)."""
    if address is None:
        return None
    if name == "postgres":
        return settings.database_url_with_tls(address)
    if name == "redis":
        return settings.redis_url_with_tls(address)
    return address


def _probe(name: str, address: str | None) -> tuple[bool, str | None]:
    if address is None:
        return False, "not started: run `selflearn up` or set " + SERVERS[name][1]
    started = time.monotonic()
    try:
        PROBES[name](address)
        return True, None
    except Exception as exc:  # noqa: BLE001 - report, never raise
        took = time.monotonic() - started
        return False, f"{type(exc).__name__}: {exc}".strip() + f" ({took:.1f} s)"
