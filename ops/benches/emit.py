"""``selflearn bench emit``: the SDK's ``emit`` call, broker up and down, and its drain rate.

A private embedded broker is started on a free port (and killed for the
outbox phase), so nothing shared is touched. Eight ``AgentClient``\\ s live in
this process, as eight agents of one service would; ``emit`` is called on
this (the caller's) thread, round-robin over them.

- ``p50_us`` / ``p99_us``: one ``emit("task.completed")`` call with the broker
  up, issued at ``RATE_PER_S`` (open loop, as agents emit: a closed loop
  would measure a full local queue, not the call an agent makes).
- ``events_per_s``: ``BURST`` events emitted back to back from the 8 agents,
  divided by the time until the broker acknowledged the last of them
  (``flush``). ``burst_p99_us`` is the emit call's p99 during that burst.
- ``outbox_p99_us`` / ``outbox_p50_us``: the same open-loop emit after the
  broker was killed (``SIGKILL``), once every client has noticed; every
  event then goes to the durable outbox. ``outbox_rows`` checks they did.
- ``floor_p50_us`` / ``floor_p99_us``: the same open loop doing only what
  ``emit`` does before it hands the event over (build, validate, encode), no
  producer involved: on a shared machine the p99 of any 20 µs Python step is
  set by CPU contention, and this is that step's tail in the same run.
- ``burst_emit_per_s``: how fast the burst was emitted (the caller's side);
  when it is close to ``events_per_s`` the caller, not delivery, is the limit.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agents.client import AgentClient
from ops.benches._common import percentile
from ops.stack.processes import free_port, port_open, stop
from ops.stack.servers import kafka_address, start_kafka
from schemas import encode, new_event
from schemas.envelope import check_size

AGENTS = 8
RATE_PER_S = 10_000
N = 40_000
BURST = 80_000


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench emit: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def _payload(agent: str, n: int) -> dict[str, object]:
    return {"task_id": f"{agent}-{n}", "project": "mule", "actual_points": n % 13}


def _open_loop(clients: list[AgentClient], n: int, start_at: int) -> list[float]:
    """Latency (µs) of ``n`` emits at RATE_PER_S, round-robin over the clients."""
    lat = []
    start = time.perf_counter()
    for i in range(n):
        pause = start + i / RATE_PER_S - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        client = clients[i % len(clients)]
        payload = _payload(client.agent_id, start_at + i)
        t = time.perf_counter_ns()
        client.emit("task.completed", payload)
        lat.append((time.perf_counter_ns() - t) / 1000)
    return lat


def _burst(clients: list[AgentClient], n: int,
           start_at: int) -> tuple[float, float, list[float]]:
    """Events per second drained to the broker and emitted, and the burst's emit latencies."""
    lat = []
    payloads = [_payload(clients[i % len(clients)].agent_id, start_at + i) for i in range(n)]
    start = time.perf_counter()
    for i, payload in enumerate(payloads):
        t = time.perf_counter_ns()
        clients[i % len(clients)].emit("task.completed", payload)
        lat.append((time.perf_counter_ns() - t) / 1000)
    emitted = time.perf_counter()
    if not all(c.flush(120) for c in clients):
        raise RuntimeError("the burst was not acknowledged within 120 s")
    return n / (time.perf_counter() - start), n / (emitted - start), lat


def _floor(n: int) -> list[float]:
    """Latency (µs) of what ``emit`` does before handing over: build and encode, same rate."""
    lat = []
    start = time.perf_counter()
    for i in range(n):
        pause = start + i / RATE_PER_S - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        payload = _payload("agent-0", i)
        t = time.perf_counter_ns()
        check_size(len(encode(new_event("task.completed", payload, producer="agent-0",
                                         producer_id="floor", producer_epoch=0,
                                         sequence=i))))
        lat.append((time.perf_counter_ns() - t) / 1000)
    return lat


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="selflearn-bench-emit-") as tmp:
        folder = Path(tmp)
        port = free_port()
        broker = start_kafka(folder, port, folder / "kafka.log")
        try:
            _wait(lambda: port_open("127.0.0.1", port), 30, "the broker's start")
            clients = [AgentClient(f"agent-{i}", bootstrap=kafka_address(port),
                                   topic_prefix="bench-emit", scrub=None,
                                   outbox_path=folder / f"outbox-{i}.db")
                       for i in range(AGENTS)]
            try:
                _wait(lambda: all(c.stats.connected for c in clients), 30, "connecting")
                _open_loop(clients, 4_000, 0)  # warm-up: connections, metadata, caches
                up = _open_loop(clients, N, 4_000)
                if not all(c.flush(60) for c in clients):
                    raise RuntimeError("the open-loop events were not acknowledged in 60 s")
                rate, emit_rate, burst = _burst(clients, BURST, 4_000 + N)
                floor = _floor(N)
                stop(broker.pid, broker.create_time, timeout=5, sig=signal.SIGKILL)
                _wait(lambda: not any(c.stats.connected for c in clients), 30,
                      "noticing the outage")
                down = _open_loop(clients, N, 4_000 + N + BURST)
                _wait(lambda: sum(len(c._outbox) for c in clients) >= N,  # noqa: SLF001
                      60, "spilling to the outbox")
                rows = sum(len(c._outbox) for c in clients)  # noqa: SLF001
            finally:
                for c in clients:
                    c.close(timeout=0.1)
        finally:
            stop(broker.pid, broker.create_time, timeout=5)
    return {
        "p50_us": round(percentile(up, 50), 1),
        "p99_us": round(percentile(up, 99), 1),
        "events_per_s": round(rate),
        "burst_emit_per_s": round(emit_rate),
        "burst_p99_us": round(percentile(burst, 99), 1),
        "floor_p50_us": round(percentile(floor, 50), 1),
        "floor_p99_us": round(percentile(floor, 99), 1),
        "outbox_p50_us": round(percentile(down, 50), 1),
        "outbox_p99_us": round(percentile(down, 99), 1),
        "outbox_rows": float(rows),
        "agents": float(AGENTS),
        "rate_per_s": float(RATE_PER_S),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
