"""One contract, every projection: replay-determinism, exactly-once, restore-and-continue.

A projection here is anything with ``apply(event, *, topic, partition, offset)``,
``snapshot() -> bytes`` and a way to rebuild it from those bytes. To add one,
append a :class:`Case` to :data:`CASES`; it is done when this module passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import orjson
import pytest

from ops.data import data_path
from projections.datasets import iter_storypoints, read_changes
from projections.promotion import PromotionProjection
from projections.shadow import ShadowProjection
from schemas import Envelope, new_event
from tests.test_promotion import spec, stream

Sourced = tuple[str, int, int, Envelope]  # (topic, partition, offset, event)


class Projection(Protocol):
    def apply(self, event: Envelope, *, topic: str, partition: int,
              offset: int) -> list[Any]: ...

    def snapshot(self) -> bytes: ...


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Projection]
    restore: Callable[[bytes], Projection]
    events: list[Sourced]


def _sourced(events: list[Envelope]) -> list[Sourced]:
    """Requests/decisions on partition 0 of "decisions", outcomes on "agent" (own offsets)."""
    offsets: dict[str, int] = {}
    out = []
    for ev in events:
        topic = "decisions" if ev.type.startswith("decision.") else "agent"
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append((topic, 0, offsets[topic], ev))
    return out


def _shadow_events() -> list[Sourced]:
    evs: list[Envelope] = []
    tasks = list(islice(iter_storypoints(data_path("storypoints")), 250))
    changes = read_changes(data_path("changes"), "IVY")[:150]
    for i, row in enumerate(tasks):
        for agent in ("task-estimator", "doc-keeper"):
            evs.append(new_event("decision.requested", {"request_id": f"{agent}{i}",
                       "kind": "task_estimate", "context": {"task_id": row.issuekey, **row.x}},
                       producer=agent))
        if i >= 10:
            old = tasks[i - 10]
            evs.append(new_event("task.completed", {"task_id": old.issuekey, "project":
                       old.project, "actual_points": old.storypoint}, producer="tracker"))
    for i, row in enumerate(changes):
        evs.append(new_event("decision.requested", {"request_id": f"c{i}", "kind": "review_risk",
                   "context": {"change_id": row.transactionid, **row.x}}, producer="code-reviewer"))
        evs.append(new_event("review.completed", {"change_id": row.transactionid, "project":
                   "IVY", "passed_first_try": not row.bug}, producer="reviews"))
    return _sourced(evs)


class ShadowAndPromotion:
    """The promotion projection as the worker runs it: fed by the shadow's paired errors."""

    AGENTS = {"task-estimator": spec("task-estimator")}

    def __init__(self, data: bytes | None = None) -> None:
        raw = orjson.loads(data) if data else None
        self.shadow = (ShadowProjection.restore(raw[0].encode(), self.AGENTS, self._scored)
                       if raw else ShadowProjection(self.AGENTS, on_scored=self._scored))
        self.promotion = (PromotionProjection.restore(raw[1].encode(), self.AGENTS,
                                                      snapshot_of=self.shadow.model_snapshot)
                          if raw else PromotionProjection(self.AGENTS,
                                                          snapshot_of=self.shadow.model_snapshot))
        self.out: list[Any] = []

    def _scored(self, scored: Any) -> None:
        self.out.extend(self.promotion.observe(scored))

    def apply(self, event: Envelope, *, topic: str, partition: int, offset: int) -> list[Any]:
        self.out = []
        if event.type == "decision.made":
            return self.promotion.apply(event, topic=topic, partition=partition, offset=offset)
        self.shadow.apply(event, topic=topic, partition=partition, offset=offset)
        return self.out

    def snapshot(self) -> bytes:
        return orjson.dumps([self.shadow.snapshot().decode(), self.promotion.snapshot().decode()])


def _promotion_events() -> list[Sourced]:
    good = list(stream("task-estimator", 0, 900, offset_by=0.0, decisions=True))
    bad = list(stream("task-estimator", 900, 150, offset_by=9.0, decisions=True))
    return _sourced(good + bad)


CASES = [
    Case("shadow", ShadowProjection, ShadowProjection.restore, _shadow_events()),
    Case("promotion", ShadowAndPromotion, ShadowAndPromotion, _promotion_events()),
]


def _run(p: Projection, events: list[Sourced]) -> list[Any]:
    out = []
    for topic, partition, offset, ev in events:
        out.extend(p.apply(ev, topic=topic, partition=partition, offset=offset))
    return out


def _shape(outputs: list[Any]) -> list[Any]:
    """Outputs without their fresh ids and times (events are new each run)."""
    evs = [getattr(o, "event", o) for o in outputs]
    return [(e.type, dict(e.payload)) for e in evs]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_replay_into_a_fresh_projection_gives_identical_bytes(case: Case) -> None:
    a, b = case.make(), case.make()
    out_a, out_b = _run(a, case.events), _run(b, case.events)
    assert a.snapshot() == b.snapshot()
    assert _shape(out_a) == _shape(out_b) and out_a


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_applying_an_event_twice_changes_nothing(case: Case) -> None:
    once, twice = case.make(), case.make()
    _run(once, case.events)
    for topic, partition, offset, ev in case.events:
        twice.apply(ev, topic=topic, partition=partition, offset=offset)
        assert twice.apply(ev, topic=topic, partition=partition, offset=offset) == []
        assert twice.apply(ev, topic=topic, partition=partition + 1, offset=offset + 10) == []
    assert twice.snapshot() == once.snapshot()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_snapshot_restore_continue_equals_continuing(case: Case) -> None:
    half = len(case.events) // 2
    straight, stopped = case.make(), case.make()
    _run(straight, case.events[:half])
    _run(stopped, case.events[:half])
    resumed = case.restore(stopped.snapshot())
    assert resumed.snapshot() == stopped.snapshot()
    out_resumed = _run(resumed, case.events)  # at-least-once redelivery from the start
    out_straight = _run(straight, case.events[half:])
    assert resumed.snapshot() == straight.snapshot()
    assert _shape(out_resumed) == _shape(out_straight)
