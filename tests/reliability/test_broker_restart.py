"""A broker that restarts empty (the embedded Tansu keeps nothing; a topic can be re-created).

Offsets start again at 0 in a new incarnation of each partition; projections
must recognise the events by identity, not skip them by offset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from agents.client import AgentClient
from schemas import Envelope
from schemas.addresses import Addresses
from schemas.catalog import all_topics
from schemas.settings import Settings
from tests.reliability.harness import Lab, PrivateBroker, check

AGENTS = [f"agent-{i}" for i in range(4)]


def _private_lab(settings: Settings, stack: Addresses, tmp_path: Path) -> tuple[Lab, PrivateBroker]:
    broker = PrivateBroker(tmp_path)
    broker.start()
    lab = Lab.create(settings, dataclasses.replace(stack, kafka_bootstrap=broker.address),
                     tmp_path)
    return lab, broker


def _emit(clients: list[AgentClient], n: int, start: int) -> list[Envelope]:
    sent = []
    for i in range(start, start + n):
        c = clients[i % len(clients)]
        ev = c.emit("task.completed", {"task_id": f"t{i}", "project": "mule",
                                       "actual_points": float(i % 5 + 1), "success": True})
        assert isinstance(ev, Envelope)
        sent.append(ev)
    return sent


@pytest.mark.parametrize("intake", ["batch", pytest.param("stream", marks=pytest.mark.slow)])
def test_broker_restarted_empty_after_a_quiet_period_loses_nothing(
    settings: Settings, stack: Addresses, tmp_path: Path, intake: str
) -> None:
    lab, broker = _private_lab(settings, stack, tmp_path)
    try:
        lab.worker("w1", SELFLEARN_INTAKE=intake)
        clients = [lab.client(a, resend_window_s=3.0) for a in AGENTS]
        sent = _emit(clients, 2000, 0)
        assert all(c.flush(60) for c in clients)
        assert check(lab, sent).clean()
        time.sleep(5)  # quieter than the SDK's re-send window: nothing will be re-sent
        broker.kill()
        broker.start()  # empty: offsets start at 0 again
        sent += _emit(clients, 2000, 2000)
        assert all(c.flush(90) for c in clients)
        verdict = check(lab, sent, timeout=180)
        assert verdict.clean(), verdict
    finally:
        lab.close()
        if broker.proc is not None:
            broker.kill()


def test_broker_restarted_during_traffic_loses_nothing(
    settings: Settings, stack: Addresses, tmp_path: Path
) -> None:
    lab, broker = _private_lab(settings, stack, tmp_path)
    try:
        lab.worker("w1")
        clients = [lab.client(a) for a in AGENTS]
        sent = _emit(clients, 3000, 0)
        broker.kill()  # some of those are still in flight, some only in the broker
        sent += _emit(clients, 1000, 3000)  # to the outbox while the broker is away
        time.sleep(2)
        broker.start()
        sent += _emit(clients, 1000, 4000)
        assert all(c.flush(120) for c in clients)
        verdict = check(lab, sent, timeout=180)
        assert verdict.clean(), verdict
    finally:
        lab.close()
        if broker.proc is not None:
            broker.kill()


def test_broker_restarted_while_no_worker_had_read_loses_nothing(
    settings: Settings, stack: Addresses, tmp_path: Path
) -> None:
    """The re-send memory outlasts its window until a worker committed the events.

    No worker runs while the first events are acknowledged and the window passes;
    a broker restart then would lose them had the SDK forgotten them by time.
    """
    lab, broker = _private_lab(settings, stack, tmp_path)
    try:
        clients = [lab.client(a, resend_window_s=3.0) for a in AGENTS]
        sent = _emit(clients, 1000, 0)
        assert all(c.flush(60) for c in clients)
        time.sleep(5)  # past the window, and no worker has committed anything
        broker.kill()
        broker.start()
        lab.worker("w1")
        sent += _emit(clients, 1000, 1000)
        assert all(c.flush(90) for c in clients)
        verdict = check(lab, sent, timeout=180)
        assert verdict.clean(), verdict
    finally:
        lab.close()
        if broker.proc is not None:
            broker.kill()


def _partition_counts(address: str, topics: list[str]) -> dict[str, int]:
    """Partitions of each of ``topics`` once the broker lists them all (up to 60 s)."""
    admin = AdminClient({"bootstrap.servers": address})
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(counts) < len(topics):
        time.sleep(0.5)
        with contextlib.suppress(KafkaException):
            listed = admin.list_topics(timeout=5).topics
            counts = {t: len(listed[t].partitions) for t in topics if t in listed}
    return counts


@pytest.mark.parametrize("intake", ["batch", "stream"])
def test_topics_have_our_partition_count_at_start_and_after_an_empty_restart(
    settings: Settings, stack: Addresses, tmp_path: Path, intake: str
) -> None:
    """Only ``ensure_topics`` makes topics: no metadata request creates them.

    The broker (Tansu, like Kafka) creates a topic a metadata request names,
    with its own default partition count (4 here, ours is 8). A worker's
    aiokafka consumer names our topics when it starts on a fresh broker (Faust's
    did, before the worker made them) and when it refreshes its metadata as
    soon as a restarted broker is back; had it been allowed to, our topics would
    have 4 partitions and agents' events would move partition (murmur2 of the
    key modulo the count): the stream intake lost an agent's 500 events so.
    """
    assert settings.partitions != 4, "the broker's default must differ from ours to tell"
    lab, broker = _private_lab(settings, stack, tmp_path)
    try:
        lab.worker("w1", SELFLEARN_INTAKE=intake)
        ours = all_topics(lab.prefix)
        assert _partition_counts(broker.address, ours) == dict.fromkeys(ours, settings.partitions)
        broker.kill()
        broker.start()  # empty: every topic is gone
        assert _partition_counts(broker.address, ours) == dict.fromkeys(ours, settings.partitions)
    finally:
        lab.close()
        if broker.proc is not None:
            broker.kill()
