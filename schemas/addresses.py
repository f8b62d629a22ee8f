"""Where each server answers: the environment, else what ``selflearn up`` recorded.

>>> from schemas.settings import Settings
>>> s = Settings(data_dir="/tmp/none", kafka_bootstrap="k:9092", database_url="postgresql://d",
...              redis_url="redis://r:6379/0", _env_file=None)
>>> resolve(s).kafka_bootstrap
'k:9092'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from schemas.settings import SERVERS, STACK_FILE, Settings


@dataclass(frozen=True)
class Addresses:
    """Where each server answers, as client libraries expect it."""

    kafka_bootstrap: str
    database_url: str
    redis_url: str
    mlflow_uri: str


class StackNotRunning(RuntimeError):
    """A server is neither configured by environment nor started by ``selflearn up``."""


def read_stack_file(data_dir: Path) -> dict[str, Any] | None:
    """Return the parsed ``stack.json`` of ``data_dir``, or ``None`` if there is none."""
    path = Path(data_dir) / STACK_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StackNotRunning(
            f"{path} is damaged ({exc}); run `selflearn down` then `selflearn up`"
        ) from exc


def default_mlflow_uri(data_dir: Path) -> str:
    """The serverless MLflow tracking URI of the embedded stack (a SQLite file)."""
    return f"sqlite:///{Path(data_dir).resolve() / 'mlflow.db'}"


def process_started(pid: int) -> float:
    """When process ``pid`` started, in seconds since boot (its identity with the PID).

    Not psutil's ``create_time``: that one is boot time *on the wall clock* plus
    the start offset, so an NTP step or a resumed VM moves every process's
    ``create_time`` and a live process no longer matches its record (the test
    suite saw a 30 s step: ``kill -9`` and ``selflearn down`` then skipped
    processes that were still running). Seconds since boot never move.

    >>> import os
    >>> 0 < process_started(os.getpid()) <= process_started(os.getpid())
    True
    """
    import psutil  # local: keeps the settings import light

    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except (OSError, ValueError, IndexError):  # no procfs: psutil, wall-clock based
        return float(psutil.Process(pid).create_time() - psutil.boot_time())


def same_process(pid: int, started: float | None) -> bool:
    """True when ``pid`` is the process recorded with start ``started`` (None: any).

    ``started`` comes from :func:`process_started`; an older record holding an
    epoch ``create_time`` (any value above 10^9) is compared the old way.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if not started:
            return True
        now = proc.create_time() if started > 1e9 else process_started(pid)
        return abs(now - started) <= 1.0
    except psutil.Error:
        return False


def _is_alive(pid: int, create_time: float | None) -> bool:
    """True when ``pid`` runs and was started at ``create_time`` (a reused PID is not)."""
    return same_process(pid, create_time)


def _recorded_address(stack: dict[str, Any] | None, server: str) -> tuple[str | None, str]:
    """Address of ``server`` in ``stack.json`` and, when missing, why."""
    if stack is None:
        return None, "no stack.json"
    entry = stack.get("services", {}).get(server)
    if not entry:
        return None, f"stack.json has no {server}"
    pid = entry.get("pid")
    if pid is not None:
        if not _is_alive(pid, entry.get("create_time")):
            return None, f"the recorded {server} process (pid {pid}) is no longer running"
    return entry["address"], ""


def resolve(settings: Settings) -> Addresses:
    """Return the address of every server.

    The environment wins; otherwise the addresses recorded by ``selflearn up``
    in ``<data_dir>/stack.json`` are used. MLflow needs no server: by default
    it is a SQLite file in the data folder.

    Raises
    ------
    StackNotRunning
        When a server is neither configured nor running in the data folder;
        the message names each missing server, its variable and the command.
    """
    stack = read_stack_file(settings.data_dir)
    found: dict[str, str] = {}
    missing: list[str] = []
    for server, (field, env, label) in SERVERS.items():
        address = settings.configured(server)
        if address is None:
            address, why = _recorded_address(stack, server)
            if address is None:
                missing.append(f"  - {label}: set {env}, or start it ({why})")
                continue
        found[field] = address
    if missing:
        raise StackNotRunning(
            "No address for:\n" + "\n".join(missing) + "\n"
            f"Run `selflearn up` (data folder {settings.data_dir.resolve()}) to start the "
            "embedded servers, or point the variables above at running servers."
        )
    mlflow = settings.mlflow_uri or default_mlflow_uri(settings.data_dir)
    return with_tls(settings, Addresses(mlflow_uri=mlflow, **found))


def with_tls(settings: Settings, addresses: Addresses) -> Addresses:
    """``addresses`` with the configured PostgreSQL and Redis TLS options in their URLs.

    :func:`resolve` applies it, so every client made from an address uses TLS.
    """
    return replace(addresses,
                   database_url=settings.database_url_with_tls(addresses.database_url),
                   redis_url=settings.redis_url_with_tls(addresses.redis_url))
