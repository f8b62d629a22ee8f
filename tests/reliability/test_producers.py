"""Producers the de-duplication must not trust: replicas, stepped clocks, crashes, other clients.

Each scenario once silently dropped events from features and learning
(issue 15); the checker recomputes every projection from what was sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from agents.outbox import Outbox
from schemas import Envelope, decode
from schemas.catalog import topic_name
from tests.reliability.harness import Lab, check

ROOT = Path(__file__).resolve().parents[2]


def _emitter(lab: Lab, agent: str, n: int, outbox: Path, sent: Path, *,
             broker: bool = True, clock_offset_s: float | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.reliability.emitter", agent, str(n),
            lab.addresses.kafka_bootstrap if broker else "-", lab.prefix, str(outbox), str(sent)]
    if clock_offset_s is not None:
        argv.append(str(clock_offset_s))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, env=env, cwd=ROOT)


def _sent(*paths: Path) -> list[Envelope]:
    return [decode(line) for p in paths for line in p.read_bytes().splitlines() if line]


def _assert_clean(lab: Lab, sent: list[Envelope]) -> None:
    verdict = check(lab, sent)
    assert verdict.clean(), verdict


def test_two_processes_emitting_as_one_agent_lose_nothing(lab: Lab, tmp_path: Path) -> None:
    lab.worker("w1")
    procs = [_emitter(lab, "estimator", 3000, tmp_path / f"o{i}.db", tmp_path / f"s{i}.jsonl")
             for i in range(2)]
    assert [p.wait(180) for p in procs] == [0, 0]
    sent = _sent(tmp_path / "s0.jsonl", tmp_path / "s1.jsonl")
    assert len(sent) == 6000 and len({e.producer_id for e in sent}) == 2
    _assert_clean(lab, sent)


def test_a_restart_with_the_clock_stepped_back_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    lab.worker("w1")
    outbox = tmp_path / "o.db"
    assert _emitter(lab, "estimator", 1000, outbox, tmp_path / "s.jsonl").wait(120) == 0
    assert _emitter(lab, "estimator", 1000, outbox, tmp_path / "s.jsonl",
                    clock_offset_s=-60).wait(120) == 0
    sent = _sent(tmp_path / "s.jsonl")
    before, after = sent[:1000], sent[1000:]
    assert max(e.event_id for e in after) < min(e.event_id for e in before)  # ids went back
    assert {e.producer_epoch for e in after} == {before[0].producer_epoch + 1}
    _assert_clean(lab, sent)


def test_sdk_kill_9_with_events_in_its_outbox_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    outbox, first = tmp_path / "o.db", tmp_path / "s.jsonl"
    proc = _emitter(lab, "estimator", 200_000, outbox, first, broker=False)
    deadline = time.monotonic() + 60
    while not first.exists() or first.stat().st_size < 300_000:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    box = Outbox(outbox)
    stored = [decode(value) for _, _, _, value in box.peek(10**7)]
    box.close()
    acknowledged = _sent(first)
    assert {e.event_id for e in acknowledged} <= {e.event_id for e in stored}  # durable at return
    lab.worker("w1")
    # The restarted agent drains what the killed one left, then goes on.
    assert _emitter(lab, "estimator", 500, outbox, tmp_path / "s2.jsonl").wait(120) == 0
    _assert_clean(lab, stored + _sent(tmp_path / "s2.jsonl"))


def _rfc_uuid7() -> uuid.UUID:
    """RFC 9562 UUIDv7 as most generators make it: random bits below the millisecond."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (
        rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def test_a_second_kafka_client_library_is_counted_exactly(lab: Lab) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    lab.worker("w1")
    producer = confluent_kafka.Producer({"bootstrap.servers": lab.addresses.kafka_bootstrap,
                                         "linger.ms": 5, "acks": "all"})
    topic = topic_name(lab.prefix, "agent")
    records: list[dict[str, object]] = []
    for i in range(3000):
        agent = f"java-agent-{i % 3}"
        record: dict[str, object] = {
            "event_id": str(_rfc_uuid7() if i % 3 == 0 else uuid.uuid4()),
            "type": "review.completed", "schema_version": 1,
            "occurred_at": datetime.now(UTC).isoformat(), "producer": agent,
            "payload": {"change_id": f"c{i}", "project": "Ant", "passed_first_try": i % 2 == 0}}
        if i % 3 == 2:  # a client that implements the v2 identity contract
            record.update(envelope_version=2, producer_id="jvm-1", producer_epoch=0,
                          sequence=i // 3)
        records.append(record)
    for n, record in enumerate(records + records[::7]):  # every 7th re-sent: a duplicate
        producer.produce(topic, key=str(record["producer"]).encode(), value=orjson.dumps(record))
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    sent = [decode(orjson.dumps(r)) for r in records]
    _assert_clean(lab, sent)


def test_a_sequence_gap_is_counted_not_hidden(lab: Lab) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    lab.worker("w1")
    producer = confluent_kafka.Producer({"bootstrap.servers": lab.addresses.kafka_bootstrap})
    topic = topic_name(lab.prefix, "agent")
    sent = []
    for seq in range(100):
        record = {"envelope_version": 2, "event_id": str(uuid.uuid4()),
                  "type": "review.completed", "schema_version": 1,
                  "occurred_at": datetime.now(UTC).isoformat(), "producer": "lossy",
                  "producer_id": "p", "producer_epoch": 0, "sequence": seq,
                  "payload": {"change_id": f"c{seq}", "project": "Ant",
                              "passed_first_try": True}}
        if seq in (10, 11, 50):
            continue  # lost on the way
        producer.produce(topic, key=b"lossy", value=orjson.dumps(record))
        sent.append(decode(orjson.dumps(record)))
    assert producer.flush(60) == 0
    verdict = check(lab, sent)
    assert verdict.gaps == 3
    assert not any(verdict.lost.values()) and not any(verdict.duplicated.values())
