"""The envelope: round trips for every type, strict validation, upcasting of old bytes."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CATALOG, EventValidationError, ReasonCode, decode, encode, new_event
from schemas.catalog import FieldSpec
from schemas.envelope import Envelope

_text = st.text(max_size=40)
_num = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_BY_KIND: dict[str, st.SearchStrategy[Any]] = {
    "str": _text, "int": st.integers(-(2**53), 2**53), "number": _num, "bool": st.booleans(),
    "dict": st.dictionaries(_text, _json, max_size=4), "list": st.lists(_json, max_size=4),
}


def _payloads(fields: dict[str, FieldSpec]) -> st.SearchStrategy[dict[str, Any]]:
    required = {n: _BY_KIND[f.kind] for n, f in fields.items() if f.required}
    optional = {n: _BY_KIND[f.kind] for n, f in fields.items() if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


@pytest.mark.parametrize("event_type", sorted(CATALOG))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_type_round_trips(event_type: str, data: st.DataObject) -> None:
    payload = data.draw(_payloads(dict(CATALOG[event_type].fields)))
    subject = data.draw(st.none() | _text)
    event = new_event(event_type, payload, producer="agent-1", subject_id=subject)
    back = decode(encode(event))
    assert back == event
    assert back.occurred_at.tzinfo is not None
    assert encode(back) == encode(event)


def test_envelope_is_immutable() -> None:
    ev = new_event("model.evaluated", {"kind": "k", "model": "m", "n": 1, "metrics": {"mae": 1}},
                   producer="p")
    with pytest.raises(AttributeError):
        ev.type = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ev.payload["metrics"]["mae"] = 2  # type: ignore[index]


def test_event_ids_are_uuid7_and_increase() -> None:
    ids = [new_event("subject.erased", {"reason": "r"}, producer="p").event_id for _ in range(500)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)


def test_version_1_bytes_are_upcast_on_read() -> None:
    v1 = orjson.dumps({
        "event_id": str(uuid.uuid4()), "type": "task.completed", "schema_version": 1,
        "occurred_at": "2024-01-02T03:04:05.123456Z", "producer": "task-estimator",
        "subject_id": None, "correlation_id": None, "causation_id": None,
        "payload": {"task_id": "T-1", "project": "mule", "points": 5},
    })
    ev = decode(v1)
    assert ev.schema_version == 2
    assert ev.payload["actual_points"] == 5 and "points" not in ev.payload
    assert ev.occurred_at.microsecond == 123456
    frame_v1 = orjson.loads(v1)
    frame_v1.update(type="frame.processed", payload={
        "camera_id": "c", "frame_no": 1, "fps": 30.0, "capture_latency_ms": 1.0,
        "processing_latency_ms": 2.0, "faces": 0, "boxes": []})
    assert decode(orjson.dumps(frame_v1)).payload["dropped"] == 0


def _wire(**over: Any) -> bytes:
    base = new_event("review.completed", {"change_id": "c", "project": "p",
                                          "passed_first_try": True}, producer="p").as_dict()
    base.update(over)
    return orjson.dumps(base)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00\xffnot json", ReasonCode.MALFORMED),
    (b"", ReasonCode.MALFORMED),
    (None, ReasonCode.MALFORMED),
    (b"[1, 2]", ReasonCode.NOT_AN_OBJECT),
    (_wire(type="no.such.event"), ReasonCode.UNKNOWN_TYPE),
    (_wire(schema_version=99), ReasonCode.UNSUPPORTED_VERSION),
    (_wire(payload={"change_id": "c", "project": "p"}), ReasonCode.MISSING_FIELD),
    (_wire(payload={"change_id": "c", "project": "p", "passed_first_try": "yes"}),
     ReasonCode.BAD_FIELD),
    (_wire(payload={"change_id": "c", "project": "p", "passed_first_try": True, "x": 1}),
     ReasonCode.UNKNOWN_FIELD),
    (_wire(event_id="not-a-uuid"), ReasonCode.BAD_FIELD),
    (_wire(occurred_at="2024-01-02T03:04:05"), ReasonCode.BAD_FIELD),
    (_wire(surprise=1), ReasonCode.UNKNOWN_FIELD),
])
def test_bad_input_is_rejected_with_a_reason(data: bytes | None, reason: ReasonCode) -> None:
    with pytest.raises(EventValidationError) as info:
        decode(data)
    assert info.value.reason == reason
    assert info.value.message


def test_numbers_are_not_booleans() -> None:
    with pytest.raises(EventValidationError) as info:
        new_event("task.completed", {"task_id": "t", "project": "p", "actual_points": True},
                  producer="p")
    assert info.value.reason == ReasonCode.BAD_FIELD


def test_personal_fields_are_marked() -> None:
    assert CATALOG["task.estimated"].personal_fields == ("title", "description")
    assert all(isinstance(e, type(CATALOG["task.estimated"])) for e in CATALOG.values())
    assert Envelope.__dataclass_params__.frozen  # type: ignore[attr-defined]
