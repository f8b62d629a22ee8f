"""Configuration: where the broker, PostgreSQL, Redis and MLflow live.

Every setting comes from an environment variable with the ``SELFLEARN_``
prefix. A server address left unset means "use the embedded stack": the
addresses that ``selflearn up`` wrote to ``<data_dir>/stack.json``.

>>> s = Settings(data_dir="/tmp/x", redis_url="redis://r:6379/0", _env_file=None)
>>> s.topic_prefix, s.partitions
('selflearn', 8)
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"

# server name -> (Addresses field, environment variable, what it is)
SERVERS: dict[str, tuple[str, str, str]] = {
    "kafka": ("kafka_bootstrap", "SELFLEARN_KAFKA_BOOTSTRAP", "Kafka-protocol broker"),
    "postgres": ("database_url", "SELFLEARN_DATABASE_URL", "PostgreSQL"),
    "redis": ("redis_url", "SELFLEARN_REDIS_URL", "Redis"),
}


class Settings(BaseSettings):
    """Runtime settings, read from ``SELFLEARN_*`` environment variables.

    Parameters
    ----------
    data_dir
        Folder of the embedded stack: data, logs and ``stack.json``.
    kafka_bootstrap, database_url, redis_url, mlflow_uri
        Addresses of external servers. ``None`` means the embedded stack.
    kafka_security_protocol, kafka_ssl_cafile, kafka_ssl_certfile, kafka_ssl_keyfile
        ``SSL`` plus PEM files for a TLS 1.3 Kafka (production compose).
    topic_prefix
        Prefix of every topic name, so two runs can share one broker.
    partitions
        Partitions of each topic created by the project.
    worker_batch, intake, worker_nice, checkpoint_s
        The worker: records per batch, ``batch`` (aiokafka batches) or ``stream``
        (a Faust agent), CPU niceness (learning yields to the real-time path),
        seconds between learning checkpoints (acknowledgements wait for them).
    rebalance_timeout, session_timeout
        Consumer-group timers, short for the embedded broker's fast (re)joins.
    memory_max_entries, memory_ttl_s
        Short-term memory bound per agent and entry lifetime (100 000, 24 h).
    metrics_port, metrics_addr
        Prometheus endpoint of each process (0: a free port, logged).
    """

    model_config = SettingsConfigDict(env_prefix="SELFLEARN_", extra="ignore")

    data_dir: Path = Path("./.selflearn")
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    mlflow_uri: str | None = None
    topic_prefix: str = "selflearn"
    partitions: int = Field(default=8, ge=1)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    worker_batch: int = Field(default=5000, ge=1)
    intake: Literal["batch", "stream"] = "batch"
    worker_nice: int = 10
    checkpoint_s: float = Field(default=2.0, gt=0)
    rebalance_timeout: float = Field(default=4.0, gt=0)
    session_timeout: float = Field(default=6.0, gt=0)
    memory_max_entries: int = Field(default=100_000, ge=1)
    memory_ttl_s: int = Field(default=24 * 3600, ge=1)
    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for Kafka clients when ``kafka_security_protocol`` is SSL (production)."""
        if self.kafka_security_protocol.upper() != "SSL":
            return None
        ctx = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.kafka_ssl_certfile:
            ctx.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        return ctx

    def librdkafka_config(self, bootstrap: str) -> dict[str, str]:
        """The same broker and TLS settings for librdkafka clients (``confluent-kafka``)."""
        config = {"bootstrap.servers": bootstrap}
        if self.kafka_security_protocol.upper() == "SSL":
            config["security.protocol"] = "SSL"
            if self.kafka_ssl_cafile:
                config["ssl.ca.location"] = self.kafka_ssl_cafile
            if self.kafka_ssl_certfile:
                config["ssl.certificate.location"] = self.kafka_ssl_certfile
            if self.kafka_ssl_keyfile:
                config["ssl.key.location"] = self.kafka_ssl_keyfile
        return config

    @property
    def stack_file(self) -> Path:
        """Path of the ``stack.json`` written by ``selflearn up``."""
        return self.data_dir / STACK_FILE

    def configured(self, server: str) -> str | None:
        """The address configured by environment for ``server`` (kafka/postgres/redis)."""
        field = SERVERS[server][0]
        value: str | None = getattr(self, field)
        return value or None


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
    return Addresses(mlflow_uri=mlflow, **found)
