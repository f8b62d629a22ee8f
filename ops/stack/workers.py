"""Starting Faust workers as processes (CLI, demo, benchmarks and tests share this)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ops.stack.processes import Spawned, spawn, stop
from schemas.addresses import Addresses
from schemas.settings import Settings

WORKERS_FILE = "workers.json"
WORKER_APP = "ops.stack.worker_app"  # the module `faust -A` loads
# The repository root (ops/stack/workers.py is three levels down), so a worker started
# from any folder imports this checkout.
REPO_ROOT = Path(__file__).resolve().parents[2]


# Settings a worker inherits as they are: TLS of every server (the addresses carry the
# PostgreSQL and Redis options too, but a worker re-resolving them needs the same files).
PASSED_ON = ("kafka_security_protocol", "kafka_ssl_cafile", "kafka_ssl_certfile",
             "kafka_ssl_keyfile", "database_ssl_mode", "database_ssl_rootcert",
             "database_ssl_cert", "database_ssl_key", "redis_ssl_ca_certs",
             "redis_ssl_certfile", "redis_ssl_keyfile", "tls_min_version",
             "identity")  # a worker acts as whoever started it (audit records, roles)


def worker_env(settings: Settings, addresses: Addresses, **extra: str) -> dict[str, str]:
    """Environment that points a worker at exactly these servers and topics."""
    passed = {f"SELFLEARN_{name.upper()}": str(value) for name in PASSED_ON
              if (value := getattr(settings, name)) is not None}
    return {
        **passed,
        "SELFLEARN_DATA_DIR": str(settings.data_dir),
        "SELFLEARN_KAFKA_BOOTSTRAP": addresses.kafka_bootstrap,
        "SELFLEARN_DATABASE_URL": addresses.database_url,
        "SELFLEARN_REDIS_URL": addresses.redis_url,
        "SELFLEARN_MLFLOW_URI": addresses.mlflow_uri,
        "SELFLEARN_TOPIC_PREFIX": settings.topic_prefix,
        "SELFLEARN_PARTITIONS": str(settings.partitions),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT),
                                       os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def start_worker(settings: Settings, addresses: Addresses, log: Path, **extra: str) -> Spawned:
    """Start ``faust -A ops.stack.worker_app worker`` detached; returns its PID and log file.

    The worker is recorded in ``<data_dir>/workers.json`` so ``selflearn down``
    stops it with the servers.
    """
    argv = [sys.executable, "-m", "faust", "-A", WORKER_APP, "worker", "-l", "info",
            "--without-web"]
    spawned = spawn(argv, log, env=worker_env(settings, addresses, **extra))
    registry = Path(settings.data_dir) / WORKERS_FILE
    known = json.loads(registry.read_text()) if registry.exists() else []
    known.append({"pid": spawned.pid, "create_time": spawned.create_time})
    registry.write_text(json.dumps(known))
    return spawned


def stop_workers(data_dir: Path) -> int:
    """Stop every worker recorded in the data folder; returns how many were running."""
    registry = Path(data_dir) / WORKERS_FILE
    if not registry.exists():
        return 0
    stopped = sum(stop(w["pid"], w["create_time"], timeout=15.0)
                  for w in json.loads(registry.read_text()))
    registry.unlink()
    return stopped


def wait_ready(log: Path, timeout: float = 90.0, after: int = 0) -> None:
    """Wait until the worker's log says it is ready (``after``: byte offset to search from)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and b"Worker]: Ready" in log.read_bytes()[after:]:
            return
        time.sleep(0.2)
    raise TimeoutError(f"worker not ready after {timeout:.0f}s; see {log}")
