"""The embedded stack against real servers: they answer, start, stop and reuse data."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from ops.stack.lifecycle import down, status, up
from ops.stack.probes import split_host_port
from ops.stack.processes import free_port, port_open
from schemas.addresses import Addresses, StackNotRunning, read_stack_file, resolve
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SERVER_VARS = ("KAFKA_BOOTSTRAP", "DATABASE_URL", "REDIS_URL", "MLFLOW_URI", "DATA_DIR")


def embedded_settings(data_dir: Path, **configured: str) -> Settings:
    """Settings that start every server not given in ``configured``, whatever the environment."""
    fields: dict[str, Any] = {"kafka_bootstrap": None, "database_url": None, "redis_url": None}
    fields.update(configured)
    return Settings(data_dir=data_dir, **fields)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_using(folder: Path) -> list[psutil.Process]:
    """Live processes running in ``folder`` or whose command line mentions it."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd = proc.info["cwd"] or ""
        if cwd.startswith(str(folder)) or any(str(folder) in a for a in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def server_ports(services: dict[str, dict[str, Any]]) -> list[int]:
    """The TCP ports recorded in ``stack.json`` services."""
    return [int(entry["port"]) for entry in services.values()]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ops.cli`` in a clean environment (no SELFLEARN_* server variables)."""
    env = {k: v for k, v in os.environ.items() if k.removeprefix("SELFLEARN_") not in SERVER_VARS}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )


# --- the session stack answers its own protocols -------------------------------------


def test_broker_round_trips_one_message(stack: Addresses, settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"{settings.topic_prefix}.smoke"

    async def round_trip() -> bytes:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"agent-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            message = await asyncio.wait_for(consumer.getone(), timeout=20)
            return bytes(message.value or b"")
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == b"hello"


def test_postgres_round_trips_a_row(stack: Addresses) -> None:
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("CREATE TEMP TABLE smoke (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO smoke VALUES (1, 'hello')")
        assert conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone() == ("hello",)


def test_redis_round_trips_a_key(stack: Addresses, settings: Settings) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    key = f"{settings.topic_prefix}:smoke"
    client.set(key, b"hello", ex=60)
    assert client.get(key) == b"hello"
    client.close()


def test_status_reports_every_server_reachable(stack: Addresses, settings: Settings) -> None:
    report = status(settings)["servers"]
    assert {name: info["reachable"] for name, info in report.items()} == {
        "kafka": True, "postgres": True, "redis": True, "mlflow": True,
    }
    assert report["redis"]["address"] == stack.redis_url


def test_resolve_agrees_with_up(stack: Addresses, settings: Settings) -> None:
    assert resolve(settings) == stack


# --- lifecycle, each in its own data folder ------------------------------------------


def test_cli_up_then_down_leaves_no_process_behind(tmp_path: Path) -> None:
    started = run_cli("up", "--data-dir", str(tmp_path), "--json")
    assert started.returncode == 0, started.stderr
    report = json.loads(started.stdout)
    services = read_stack_file(tmp_path)["services"]  # type: ignore[index]
    assert set(services) == {"kafka", "postgres", "redis"}
    # The CLI has exited; its servers run on, detached.
    assert all(info["reachable"] for info in report["servers"].values())
    assert all(not gone(entry["pid"]) for entry in services.values())

    stopped = run_cli("down", "--data-dir", str(tmp_path))
    assert stopped.returncode == 0, stopped.stderr

    assert all(gone(entry["pid"]) for entry in services.values())
    assert [p for p in server_ports(services) if port_open("127.0.0.1", p)] == []
    assert processes_using(tmp_path) == []
    assert not (tmp_path / "stack.json").exists()


def test_cli_up_failure_says_what_to_set_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "CALF_TANSU_BIN": str(tmp_path / "no-such-broker")}
    env = {k: v for k, v in env.items() if k.removeprefix("SELFLEARN_") not in SERVER_VARS}
    failed = subprocess.run(
        [sys.executable, "-m", "ops.cli", "up", "--data-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert failed.returncode == 1
    assert "SELFLEARN_KAFKA_BOOTSTRAP" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "stack.json").exists()
    # PostgreSQL and Redis, started before the broker failed, were stopped again.
    assert (tmp_path / "logs" / "redis.log").exists()
    assert processes_using(tmp_path) == []


def test_up_is_idempotent_and_second_up_keeps_postgres_data(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    first = up(settings)
    try:
        pids = {k: v["pid"] for k, v in read_stack_file(tmp_path)["services"].items()}  # type: ignore[index]
        assert up(settings) == first  # running servers are reused, not restarted
        assert {k: v["pid"] for k, v in read_stack_file(tmp_path)["services"].items()} == pids  # type: ignore[index]
        with psycopg.connect(first.database_url) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
            conn.execute("INSERT INTO kept VALUES (42)")
    finally:
        down(settings)
    assert all(gone(pid) for pid in pids.values())

    second = up(settings)
    try:
        with psycopg.connect(second.database_url) as conn:
            assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
    finally:
        down(settings)
    assert processes_using(tmp_path) == []


def test_up_restarts_only_a_server_that_died(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, database_url="postgresql://unused")
    up(settings)
    try:
        before = read_stack_file(tmp_path)["services"]  # type: ignore[index]
        psutil.Process(before["redis"]["pid"]).kill()
        after_kill = up(settings)
        after = read_stack_file(tmp_path)["services"]  # type: ignore[index]
        assert after["kafka"]["pid"] == before["kafka"]["pid"]
        assert after["redis"]["pid"] != before["redis"]["pid"]
        assert redis.Redis.from_url(after_kill.redis_url).ping()
    finally:
        down(settings)


def test_up_adopts_a_running_postgres_whose_stack_file_was_lost(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, kafka_bootstrap="unused:9092", redis_url="redis://x")
    first = up(settings)
    pid = read_stack_file(tmp_path)["services"]["postgres"]["pid"]  # type: ignore[index]
    (tmp_path / "stack.json").unlink()
    try:
        assert up(settings) == first
        assert read_stack_file(tmp_path)["services"]["postgres"]["pid"] == pid  # type: ignore[index]
    finally:
        assert down(settings) == ["postgres"]
    assert gone(pid)


def test_servers_set_by_env_variables_are_not_started(
    tmp_path: Path, stack: Addresses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELFLEARN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SELFLEARN_REDIS_URL", stack.redis_url)
    monkeypatch.setenv("SELFLEARN_DATABASE_URL", stack.database_url)
    monkeypatch.delenv("SELFLEARN_KAFKA_BOOTSTRAP", raising=False)
    settings = Settings()
    assert settings.data_dir == tmp_path
    addresses = up(settings)
    try:
        assert addresses.redis_url == stack.redis_url
        assert addresses.database_url == stack.database_url
        assert set(read_stack_file(tmp_path)["services"]) == {"kafka"}  # type: ignore[index]
        # Only the broker runs from this folder: no second Redis, no PostgreSQL.
        names = {p.name() for p in processes_using(tmp_path)}
        assert not any("redis" in n or "postgres" in n for n in names), names
        assert not (tmp_path / "pg").exists()
        report = status(settings)["servers"]
        assert report["redis"]["source"] == "configured"
        assert report["redis"]["reachable"] is True
    finally:
        assert down(settings) == ["kafka"]
    # The session's Redis, configured here, was left alone.
    assert redis.Redis.from_url(stack.redis_url).ping()


def test_resolve_without_a_stack_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(StackNotRunning) as info:
        resolve(embedded_settings(tmp_path, redis_url="redis://127.0.0.1:1/0"))
    message = str(info.value)
    assert "SELFLEARN_KAFKA_BOOTSTRAP" in message and "SELFLEARN_DATABASE_URL" in message
    assert "SELFLEARN_REDIS_URL" not in message
    assert "selflearn up" in message


def test_status_flags_an_unreachable_configured_server(tmp_path: Path) -> None:
    port = free_port()
    report = status(embedded_settings(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0"))
    redis_info = report["servers"]["redis"]
    assert redis_info["source"] == "configured"
    assert redis_info["reachable"] is False
    assert redis_info["error"]
    assert report["servers"]["kafka"]["source"] == "missing"


def test_split_host_port_reads_bootstrap_entries() -> None:
    assert split_host_port("127.0.0.1:9092", 1) == ("127.0.0.1", 9092)
    assert split_host_port("[::1]:9093", 1) == ("::1", 9093)
    assert split_host_port("tcp://kafka", 9092) == ("kafka", 9092)
