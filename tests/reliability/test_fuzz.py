"""Ten thousand Hypothesis-made bad records through one real worker, valid events among them.

Records are written raw to the stream topics with librdkafka (``confluent-kafka``),
as any producer could: malformed bytes and JSON, truncated events, wrongly
typed fields, future versions and oversized events. Every one must reach the
dead-letter topic exactly once, whole or (when oversized) by size and digest,
with a reason code; the worker must stay alive; and the valid events sent in
between must be counted exactly (the checker).
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ops.stack.processes import is_alive
from ops.stack.workers import wait_ready
from schemas import CATALOG, Envelope, EventValidationError, decode
from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
from schemas.deadletter import original_bytes, parse_dead_letter
from schemas.envelope import MAX_EVENT_BYTES
from schemas.errors import ReasonCode
from tests.kafka_util import read_topic
from tests.reliability.harness import Lab, check, explain

SEED = int(os.environ.get("FAULT_SEED", "1515"))
PER_KIND = {"malformed": 2600, "truncated": 2000, "wrong_type": 3300, "future_version": 2000,
            "oversized": 100}
Record = tuple[str, bytes | None, bytes | None]  # (stream, key, value)

# -- a valid event to start from ---------------------------------------------------
_PAYLOADS: dict[str, dict[str, Any]] = {
    "task.completed": {"task_id": "t1", "project": "mule", "actual_points": 3.0,
                       "duration_s": 60.0, "success": True},
    "review.completed": {"change_id": "c1", "project": "Ant", "passed_first_try": False},
    "review.requested": {"change_id": "c1", "project": "Ant", "metrics": {"la": 0.1}},
    "task.estimated": {"task_id": "t1", "project": "mule", "title": "a", "description": "b",
                       "estimate": 2.0},
    "frame.processed": {"camera_id": "cam", "frame_no": 1, "fps": 30.0,
                        "capture_latency_ms": 1.0, "processing_latency_ms": 2.0, "faces": 0,
                        "boxes": [], "dropped": 0},
    "decision.made": {"request_id": "r", "kind": "review_risk", "output": 0.5,
                      "model_version": "m:1", "policy": "champion", "inputs_digest": "d",
                      "features": {}},
}


def _valid(event_type: str, n: int = 0) -> dict[str, Any]:
    spec = CATALOG[event_type]
    return {"envelope_version": 2, "event_id": str(uuid.UUID(int=n + 1, version=4)),
            "type": event_type, "schema_version": spec.version,
            "occurred_at": "2026-12-04T10:00:00.000000Z", "producer": "fuzzer",
            "subject_id": None, "correlation_id": None, "causation_id": None,
            "producer_id": "fuzz", "producer_epoch": 0, "sequence": n,
            "payload": dict(_PAYLOADS[event_type])}


types_ = st.sampled_from(sorted(_PAYLOADS))
json_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=10)


def _stream(event_type: str) -> str:
    return CATALOG[event_type].stream


# -- the five kinds of bad record -------------------------------------------------------
@st.composite
def malformed(draw: st.DrawFn) -> Record:
    """Not an envelope at all: random bytes, text, other JSON, a null record."""
    value = draw(st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        json_values.filter(lambda v: not isinstance(v, dict)).map(orjson.dumps),
        st.dictionaries(st.text(max_size=12), json_values, max_size=6).map(orjson.dumps),
        st.just(None),
    ))
    return draw(st.sampled_from(STREAMS)), draw(st.none() | st.binary(max_size=16)), value


@st.composite
def truncated(draw: st.DrawFn) -> Record:
    """A valid event cut short anywhere."""
    t = draw(types_)
    data = orjson.dumps(_valid(t, draw(st.integers(0, 10**6))))
    return _stream(t), b"fuzzer", data[: draw(st.integers(0, len(data) - 1))]


def _is_kind(kind: str, v: Any) -> bool:
    if kind in ("int", "number") and isinstance(v, bool):
        return False
    return {"str": isinstance(v, str), "int": isinstance(v, int),
            "number": isinstance(v, int | float), "bool": isinstance(v, bool),
            "dict": isinstance(v, dict), "list": isinstance(v, list)}[kind]


_ENVELOPE_KINDS = {"event_id": "str", "type": "str", "schema_version": "int",
                   "occurred_at": "str", "producer": "str", "payload": "dict",
                   "subject_id": "str", "correlation_id": "str", "causation_id": "str",
                   "producer_id": "str", "producer_epoch": "int", "sequence": "int"}


@st.composite
def wrong_type(draw: st.DrawFn) -> Record:
    """One envelope or payload field of the wrong JSON type, or unknown or missing."""
    t = draw(types_)
    raw = _valid(t, draw(st.integers(0, 10**6)))
    spec = CATALOG[t]
    how = draw(st.sampled_from(["envelope", "payload", "unknown", "missing"]))
    if how == "envelope":
        name = draw(st.sampled_from(sorted(_ENVELOPE_KINDS)))
        kind = _ENVELOPE_KINDS[name]
        # None is a fine value for the optional strings, so it is never drawn for them.
        raw[name] = draw(json_values.filter(lambda v: v is not None and not _is_kind(kind, v)))
    elif how == "payload":
        name = draw(st.sampled_from(sorted(spec.fields)))
        kind = spec.fields[name].kind
        raw["payload"][name] = draw(json_values.filter(
            lambda v: v is not None and not _is_kind(kind, v)))
    elif how == "unknown":
        where = draw(st.sampled_from(["envelope", "payload"]))
        target = raw if where == "envelope" else raw["payload"]
        name = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in target))
        target[name] = draw(json_values)
    else:
        required = [f"payload.{n}" for n, f in spec.fields.items() if f.required]
        name = draw(st.sampled_from(["event_id", "type", "schema_version", "occurred_at",
                                     "producer", "payload", *required]))
        target = raw["payload"] if name.startswith("payload.") else raw
        del target[name.removeprefix("payload.")]
    return _stream(t), b"fuzzer", orjson.dumps(raw)


@st.composite
def future_version(draw: st.DrawFn) -> Record:
    """An envelope or payload version newer than this worker knows."""
    t = draw(types_)
    raw = _valid(t, draw(st.integers(0, 10**6)))
    if draw(st.booleans()):
        raw["envelope_version"] = draw(st.integers(3, 2**53))
    else:
        raw["schema_version"] = draw(st.integers(CATALOG[t].version + 1, 2**53))
    return _stream(t), b"fuzzer", orjson.dumps(raw)


_LETTERS = bytes(b"abcdefgh "[i % 9] for i in range(256))


@st.composite
def oversized(draw: st.DrawFn) -> Record:
    """A well-formed event, or garbage, larger than MAX_EVENT_BYTES (up to 1 MB)."""
    size = draw(st.integers(MAX_EVENT_BYTES + 1, 1_000_000))
    noise = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    if draw(st.booleans()):
        return "agent", b"fuzzer", noise
    raw = _valid("task.estimated", draw(st.integers(0, 10**6)))
    raw["payload"]["description"] = noise.translate(_LETTERS).decode()
    return "agent", b"fuzzer", orjson.dumps(raw)


KINDS: dict[str, Callable[[], st.SearchStrategy[Record]]] = {
    "malformed": malformed, "truncated": truncated, "wrong_type": wrong_type,
    "future_version": future_version, "oversized": oversized}


def generate(kind: str, n: int, per_example: int = 5) -> list[Record]:
    """About ``n`` records of one kind drawn by Hypothesis (generation only, seeded).

    Each example draws ``per_example`` records: Hypothesis's cost is mostly per
    example, and ten thousand single-record examples took most of a minute.
    """
    out: list[Record] = []
    many = st.lists(KINDS[kind](), min_size=per_example, max_size=per_example,
                    unique_by=lambda r: r[2])

    @seed(SEED)
    @settings(max_examples=-(-n // per_example), phases=[Phase.generate], database=None,
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(many)
    def collect(records: list[Record]) -> None:
        out.extend(records)

    collect()
    return out


def _digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


def test_ten_thousand_bad_records_are_dead_lettered_and_valid_ones_counted(lab: Lab) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    worker = lab.worker("w1", ready=False)  # starts while Hypothesis draws
    bad: list[Record] = []
    for kind, n in PER_KIND.items():
        made = generate(kind, n)
        assert len(made) >= n * 0.9, f"Hypothesis made only {len(made)} {kind} records"
        bad += made
    for _, _, value in bad:  # each is rejected by construction; the worker must agree
        with pytest.raises(EventValidationError):
            decode(value)
    assert len(bad) >= 10_000

    wait_ready(worker.log)
    producer = confluent_kafka.Producer({
        "bootstrap.servers": lab.addresses.kafka_bootstrap, "linger.ms": 20,
        "message.max.bytes": 4_000_000, "acks": "all"})
    rng = random.Random(SEED)
    rng.shuffle(bad)
    valid: list[Envelope] = []
    seqs = Counter[str]()
    for n, (stream, key, value) in enumerate(bad):
        producer.produce(topic_name(lab.prefix, stream), key=key, value=value)
        if n % 5 == 0:  # a valid event among the bad ones, same topics and partitions
            t = rng.choice(["task.completed", "review.completed", "review.requested"])
            raw = _valid(t)
            raw.update(event_id=str(uuid.uuid4()), sequence=seqs[_stream(t)],
                       occurred_at=datetime.now(UTC).isoformat(), producer="fuzzer")
            seqs[_stream(t)] += 1
            data = orjson.dumps(raw)
            producer.produce(topic_name(lab.prefix, _stream(t)), key=b"fuzzer", value=data)
            valid.append(decode(data))
        if n % 500 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0

    verdict = check(lab, valid, timeout=180)
    assert verdict.clean(), (verdict, explain(lab, valid))
    dead = read_topic(lab.addresses.kafka_bootstrap, topic_name(lab.prefix, DEAD_LETTER),
                      expect=len(bad), timeout=120)
    records = [parse_dead_letter(v or b"") for _, _, v in dead]
    reasons = Counter(r["reason"] for r in records)
    assert set(reasons) <= {c.value for c in ReasonCode}, reasons
    assert all(r["source"] == "worker" and r["error"] for r in records)
    got = Counter(r.get("raw_sha256") or _digest(original_bytes(r)) for r in records)
    assert got == Counter(_digest(v) for _, _, v in bad), reasons
    assert is_alive(worker.pid, worker.create_time)
    assert b"Crashed" not in worker.log.read_bytes()
