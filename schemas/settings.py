"""Configuration: where the broker, PostgreSQL, Redis and MLflow live.

Every setting comes from an environment variable with the ``SELFLEARN_``
prefix. A server address left unset means "use the embedded stack": the
addresses that ``selflearn up`` wrote to ``<data_dir>/stack.json``.

>>> s = Settings(data_dir="/tmp/x", redis_url="redis://r:6379/0", _env_file=None)
>>> s.topic_prefix, s.partitions
('selflearn', 8)
"""

from __future__ import annotations

import os
import re
import secrets
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"
SNAPSHOT_KEY_FILE = "snapshot.key"
MIN_SNAPSHOT_KEY_CHARS = 32

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
        ``redis+cluster://host:port`` (``rediss+cluster://``) is a Redis
        Cluster reached through any one of its nodes (docs/redis-cluster.md).
    redis_min_replicas, redis_wait_ms
        Replicas each Redis primary must acknowledge the worker's writes on
        before it acknowledges a batch to the broker (Redis ``WAIT``; 0: no
        wait), and how long one wait may take. With 1 on a cluster whose
        primaries each have a replica, a primary killed after its writes were
        acknowledged cannot take them with it (docs/redis-cluster.md).
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
    worker_gc_gen0
        Allocations between the worker's young-generation garbage collections
        (Python's default is 700; 0 keeps it). The projections allocate many
        short-lived objects beside a large long-lived state, and each collection
        also ages that state towards costly full ones: 50 000 made ``bench learn``
        15–20 % faster (README, benchmarks). Only the worker: a larger young
        generation means longer single pauses, which the SDK's callers must not see.
    rebalance_timeout, session_timeout
        Consumer-group timers, short for the embedded broker's fast (re)joins.
    memory_max_entries, memory_ttl_s
        Short-term memory bound per agent and entry lifetime (100 000, 24 h).
    metrics_port, metrics_addr
        Prometheus endpoint of each process (0: a free port, logged).
    privacy, pii_detector, keys_dir, kek_path
        Per-subject encryption of personal fields in the SDK (docs/privacy.md):
        on/off; the PII detector the SDK's background thread runs over personal
        text (``none``, ``pattern`` ~35 µs, ``ner`` ~25 ms a text: only for slow
        agents); the key folder (default ``<data_dir>/keys``) and the master key
        file (default inside it; put it elsewhere in production, or use a KMS).
    database_ssl_mode, database_ssl_rootcert, database_ssl_cert, database_ssl_key
        libpq TLS: ``sslmode`` (``verify-full`` once a root CA is set) and PEM
        files of the CA and of an optional client certificate.
    redis_ssl_ca_certs, redis_ssl_certfile, redis_ssl_keyfile
        Redis TLS (``rediss://``, implied by a CA file): the CA and an optional
        client certificate.
    tls_min_version
        Oldest TLS version any client accepts (PostgreSQL, Redis, Kafka).
    snapshot_key, snapshot_key_file
        Secret of the HMAC-SHA256 that seals pickled model state (River models,
        drift detectors) before it goes to Redis, PostgreSQL or MLflow: at least
        32 characters, or a file holding them. Unset: ``<data_dir>/snapshot.key``,
        generated once (see :func:`snapshot_key`). Every process of one
        deployment (workers, agents, audit) needs the same key.
    identity
        Who runs the command (``SELFLEARN_IDENTITY``), for access control and the
        audit log; unset: the first line of ``<data_dir>/identity``, else the OS
        user (docs/access.md).
    audit_checkpoint_s
        Seconds between the worker's signed checkpoints of the audit log.
    challengers
        Challengers per agent id, replacing its defaults (JSON): registered
        learner names or River specs, e.g. ``SELFLEARN_CHALLENGERS='{"task-estimator":
        ["river.feature_extraction.BagOfWords(on=\\"title\\")|linear_model.LinearRegression"]}'``
        (:func:`projections.agent_specs.configured_agents`; docs/river.md).
    """

    model_config = SettingsConfigDict(env_prefix="SELFLEARN_", extra="ignore")

    data_dir: Path = Path("./.selflearn")
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_wait_ms: int = Field(default=2000, ge=1)
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
    worker_gc_gen0: int = Field(default=50_000, ge=0)
    checkpoint_s: float = Field(default=2.0, gt=0)
    rebalance_timeout: float = Field(default=4.0, gt=0)
    session_timeout: float = Field(default=6.0, gt=0)
    memory_max_entries: int = Field(default=100_000, ge=1)
    memory_ttl_s: int = Field(default=24 * 3600, ge=1)
    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"
    privacy: bool = True
    pii_detector: Literal["none", "pattern", "ner"] = "pattern"
    keys_dir: Path | None = None
    kek_path: Path | None = None

    def key_folder(self) -> Path:
        """Where the data keys live: ``keys_dir`` or ``<data_dir>/keys``."""
        return self.keys_dir or self.data_dir / "keys"
    database_ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca",
                               "verify-full"] | None = None
    database_ssl_rootcert: str | None = None
    database_ssl_cert: str | None = None
    database_ssl_key: str | None = None
    redis_ssl_ca_certs: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.3"
    snapshot_key: SecretStr | None = None
    snapshot_key_file: Path | None = None
    identity: str | None = None
    audit_checkpoint_s: float = Field(default=60.0, gt=0)
    challengers: dict[str, list[str]] = Field(default_factory=dict)

    @property
    def _tls_version(self) -> ssl.TLSVersion:
        return ssl.TLSVersion.TLSv1_3 if self.tls_min_version == "TLSv1.3" else (
            ssl.TLSVersion.TLSv1_2)

    def database_ssl_params(self) -> dict[str, str]:
        """libpq parameters for TLS to PostgreSQL; empty when none is configured.

        >>> s = Settings(database_ssl_rootcert="/c/ca.crt", _env_file=None)
        >>> s.database_ssl_params()  # doctest: +NORMALIZE_WHITESPACE
        {'sslmode': 'verify-full', 'sslrootcert': '/c/ca.crt',
         'ssl_min_protocol_version': 'TLSv1.3'}
        """
        mode = self.database_ssl_mode or ("verify-full" if self.database_ssl_rootcert else None)
        if mode is None:
            return {}
        params = {"sslmode": mode, "sslrootcert": self.database_ssl_rootcert,
                  "sslcert": self.database_ssl_cert, "sslkey": self.database_ssl_key}
        if mode not in ("disable", "allow", "prefer"):  # only when TLS is certain
            params["ssl_min_protocol_version"] = self.tls_min_version
        return {k: v for k, v in params.items() if v}

    def database_url_with_tls(self, url: str) -> str:
        """``url`` (a libpq URI or ``key=value`` string) with the TLS parameters added.

        Parameters already in ``url`` win, so applying this twice changes nothing.

        >>> s = Settings(database_ssl_rootcert="/c/ca.crt", _env_file=None)
        >>> s.database_url_with_tls("postgresql://u@db:5432/x")
        'postgresql://u@db:5432/x?sslmode=verify-full&sslrootcert=%2Fc%2Fca.crt&ssl_min_protocol_version=TLSv1.3'
        >>> s.database_url_with_tls("host=db sslmode=require")
        "host=db sslmode=require sslrootcert='/c/ca.crt' ssl_min_protocol_version='TLSv1.3'"
        """
        params = self.database_ssl_params()
        if not params:
            return url
        if re.match(r"postgres(ql)?://", url):
            return _add_query(url, params)
        present = set(re.findall(r"(\w+)\s*=", url))
        quoted = (f"{k}='{_libpq_quote(v)}'" for k, v in params.items() if k not in present)
        return " ".join([url, *quoted]).strip()

    def redis_tls(self, url: str | None = None) -> bool:
        """True when Redis is reached over TLS: a ``rediss://`` URL or a configured CA/cert."""
        scheme_tls = url is not None and url.startswith(("rediss://", "rediss+cluster://"))
        return scheme_tls or bool(self.redis_ssl_ca_certs or self.redis_ssl_certfile)

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``redis.Redis`` / ``RedisCluster`` for the configured TLS.

        >>> Settings(redis_ssl_ca_certs="/c/ca.crt", _env_file=None).redis_kwargs()["ssl"]
        True
        >>> Settings(_env_file=None).redis_kwargs()
        {}
        """
        return self._redis_tls_kwargs() if self.redis_tls() else {}

    def _redis_tls_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required",
                                  "ssl_check_hostname": True,
                                  "ssl_min_version": self._tls_version}
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if value := getattr(self, f"redis_{key}"):
                kwargs[key] = value
        return kwargs

    def redis_url_with_tls(self, url: str) -> str:
        """``url`` as ``rediss://`` carrying the TLS options ``redis.Redis.from_url`` reads.

        The options travel in the URL so every client made from an address
        (the SDK, the worker, every tool) gets them; options already there win.

        >>> s = Settings(redis_ssl_ca_certs="/c/ca.crt", _env_file=None)
        >>> s.redis_url_with_tls("redis://r:6379/0")
        'rediss://r:6379/0?ssl_cert_reqs=required&ssl_check_hostname=true&ssl_min_version=772&ssl_ca_certs=%2Fc%2Fca.crt'
        >>> Settings(_env_file=None).redis_url_with_tls("redis://r:6379/0")
        'redis://r:6379/0'
        >>> s.redis_url_with_tls("redis+cluster://r:7000").split("?")[0]
        'rediss+cluster://r:7000'
        """
        if not self.redis_tls(url) or url.startswith("unix://"):
            return url
        kwargs = self._redis_tls_kwargs()
        kwargs.pop("ssl")  # the scheme says it
        params = {k: str(int(v)) if k == "ssl_min_version" else
                  str(v).lower() if isinstance(v, bool) else str(v) for k, v in kwargs.items()}
        scheme = "rediss+cluster://" if "+cluster://" in url else "rediss://"
        return _add_query(scheme + url.split("://", 1)[1], params)

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for Kafka clients when ``kafka_security_protocol`` is SSL (production)."""
        if self.kafka_security_protocol.upper() != "SSL":
            return None
        ctx = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        ctx.minimum_version = self._tls_version
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


def _add_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` appended to its query; keys already present are kept."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, v) for k, v in params.items() if k not in have]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="")))


def _libpq_quote(value: str) -> str:
    """A value for a libpq ``key='value'`` string (backslash and quote escaped)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def snapshot_key(settings: Settings) -> bytes:
    """The HMAC key that seals pickled model state, from configuration.

    ``SELFLEARN_SNAPSHOT_KEY`` wins, then the file ``SELFLEARN_SNAPSHOT_KEY_FILE``;
    with neither, the embedded default ``<data_dir>/snapshot.key`` is read, and
    created once (64 random hex characters, mode 0600) if missing. Creation is
    atomic (a hard link that fails if the file exists), so processes starting
    together all end up with the same key. The key never travels with the
    state it protects.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> k = snapshot_key(Settings(data_dir=d, _env_file=None))
    >>> len(k), k == snapshot_key(Settings(data_dir=d, _env_file=None))
    (64, True)
    >>> snapshot_key(Settings(data_dir=d, snapshot_key="x" * 32, _env_file=None)) == b"x" * 32
    True
    """
    if settings.snapshot_key is not None:
        key = settings.snapshot_key.get_secret_value().encode()
        where = "SELFLEARN_SNAPSHOT_KEY"
    else:
        path = settings.snapshot_key_file or Path(settings.data_dir) / SNAPSHOT_KEY_FILE
        if settings.snapshot_key_file is None and not path.exists():
            _create_key_file(path)
        key = path.read_bytes().strip()
        where = str(path)
    if len(key) < MIN_SNAPSHOT_KEY_CHARS:
        raise ValueError(f"the snapshot key in {where} is {len(key)} characters long; "
                         f"use at least {MIN_SNAPSHOT_KEY_CHARS} random characters")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic, and fails if the key already exists
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
