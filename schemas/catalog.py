"""Every event type selflearn knows: its payload fields, current version and upcasters.

A field marked ``personal`` may hold personal data of the event's data subject
(``subject_id``); the privacy layer encrypts exactly those fields under the
subject's key, so erasing the key erases them everywhere, archive included.

Old versions are upcast on read: a reader only ever sees the current shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

# Python types accepted for each declared kind (bool is not a number here).
KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "dict": (dict, Mapping),
    "list": (list, tuple),
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field: its kind, whether it must be present, whether it is personal."""

    kind: str
    required: bool = True
    personal: bool = False
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class EventSpec:
    """The current shape of one event type plus upcasters from older versions."""

    type: str
    version: int
    fields: Mapping[str, FieldSpec]
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)
    doc: str = ""
    stream: str = "agent"

    @property
    def personal_fields(self) -> tuple[str, ...]:
        return tuple(name for name, spec in self.fields.items() if spec.personal)


def _f(kind: str, **kw: bool) -> FieldSpec:
    return FieldSpec(kind, **kw)


def _task_completed_v1_to_v2(p: Payload) -> Payload:
    # v1 called the actual effort "points"; v2 names it for what it is.
    p = dict(p)
    p["actual_points"] = p.pop("points")
    return p


def _frame_v1_to_v2(p: Payload) -> Payload:
    # v1 predates frame dropping: nothing was ever dropped.
    return {**p, "dropped": 0}


_SPECS = [
    EventSpec("task.estimated", 1, {
        "task_id": _f("str"), "project": _f("str"),
        "title": _f("str", personal=True), "description": _f("str", personal=True),
        "estimate": _f("number"), "model_version": _f("str", required=False),
    }, doc="An agent estimated a task (story points)."),
    EventSpec("task.completed", 2, {
        "task_id": _f("str"), "project": _f("str"), "actual_points": _f("number"),
        "duration_s": _f("number", required=False), "success": _f("bool", required=False),
    }, upcasters={1: _task_completed_v1_to_v2}, doc="A task finished; carries the actual effort."),
    EventSpec("review.requested", 1, {
        "change_id": _f("str"), "project": _f("str"), "metrics": _f("dict"),
        "author": _f("str", required=False, personal=True),
    }, doc="A code change asks for review; metrics are the change's size/history numbers."),
    EventSpec("review.completed", 1, {
        "change_id": _f("str"), "project": _f("str"), "passed_first_try": _f("bool"),
    }, doc="The review outcome, known late (when a fix traces a defect back)."),
    EventSpec("decision.requested", 1, {
        "request_id": _f("str"), "kind": _f("str"), "context": _f("dict"),
    }, stream="agent",
        doc="An agent asked the decision engine."),
    EventSpec("decision.made", 1, {
        "request_id": _f("str"), "kind": _f("str"), "output": _f("number"),
        "model_version": _f("str"), "policy": _f("str"), "inputs_digest": _f("str"),
        "features": _f("dict"), "latency_us": _f("number", required=False),
    }, stream="decisions",
        doc="What the engine answered, with the model version and a digest of its inputs."),
    EventSpec("shadow.predicted", 1, {
        "request_id": _f("str"), "kind": _f("str"), "model": _f("str"),
        "prediction": _f("number"),
    }, stream="learning",
        doc="What a challenger would have decided (no effect on live decisions)."),
    EventSpec("frame.processed", 2, {
        "camera_id": _f("str"), "frame_no": _f("int"), "fps": _f("number"),
        "capture_latency_ms": _f("number"), "processing_latency_ms": _f("number"),
        "faces": _f("int"), "boxes": _f("list"), "dropped": _f("int"),
    }, upcasters={1: _frame_v1_to_v2}, stream="frames",
        doc="One video frame's result: numbers only, never pixels."),
    EventSpec("model.evaluated", 1, {
        "kind": _f("str"), "model": _f("str"), "n": _f("int"), "metrics": _f("dict"),
    }, stream="learning",
        doc="Prequential metrics of one model."),
    EventSpec("promotion.step_changed", 1, {
        "agent_id": _f("str"), "kind": _f("str"), "from_step": _f("int"), "to_step": _f("int"),
        "champion": _f("str"), "challenger": _f("str"), "reason": _f("str"),
        "manual": _f("bool", required=False), "operator": _f("str", required=False),
        "promoted": _f("str", required=False),
    }, stream="control",
        doc="The canary moved (percent of traffic on the challenger); at 100 % "
            "``promoted`` names the new champion version (for lineage)."),
    EventSpec("promotion.rolled_back", 1, {
        "agent_id": _f("str"), "kind": _f("str"), "from_step": _f("int"),
        "champion": _f("str"), "challenger": _f("str"), "reason": _f("str"),
        "manual": _f("bool", required=False), "operator": _f("str", required=False),
    }, stream="control",
        doc="The canary was rolled back; the champion serves 100 %."),
    EventSpec("promotion.refreshed", 1, {
        "agent_id": _f("str"), "kind": _f("str"), "champion": _f("str"),
        "challenger": _f("str"), "canary_percent": _f("int"), "replaces": _f("str"),
        "reason": _f("str"),
    }, stream="control",
        doc="The live models were snapshotted again from their shadow copies, as new "
            "versions of the same models (``replaces``: the versions before); the step "
            "is unchanged."),
    EventSpec("operator.command", 1, {
        "agent_id": _f("str"), "action": _f("str"), "operator": _f("str"),
        "reason": _f("str"), "challenger": _f("str", required=False),
    }, stream="control",
        doc="An operator asked for a manual promote or rollback (the audit record)."),
    EventSpec("subject.erased", 1, {"reason": _f("str")},
              stream="control",
              doc="A data subject's key was destroyed; their personal fields are unreadable."),
    EventSpec("key.rotated", 1, {"key_id": _f("str"), "scope": _f("str")},
              stream="control",
              doc="An encryption key was rotated."),
]

CATALOG: dict[str, EventSpec] = {spec.type: spec for spec in _SPECS}

# Streams (one topic each) and the dead-letter topic; a topic is "<prefix>.<stream>".
# Order is only kept within one topic partition, so events whose relative order
# matters share a stream: a decision request and its outcome both travel on
# "agent" (keyed by agent id), so the shadow projection sees the request first.
STREAMS = ("agent", "frames", "decisions", "learning", "control")
DEAD_LETTER = "dlq"


def topic_name(prefix: str, stream: str) -> str:
    """``topic_name("selflearn", "agent") == "selflearn.agent"``."""
    return f"{prefix}.{stream}"


def all_topics(prefix: str) -> list[str]:
    """Every topic of a deployment: each stream's, then the dead letters'.

    >>> all_topics("s")[-1]
    's.dlq'
    """
    return [topic_name(prefix, s) for s in (*STREAMS, DEAD_LETTER)]


def intake_group(prefix: str) -> str:
    """Consumer group of the workers' intake: its commits say what every projection applied.

    >>> intake_group("selflearn")
    'selflearn-projections'
    """
    return f"{prefix}-projections"
