"""Online feature views: which entity an event concerns and what it adds.

Pure functions, so the live projection (Redis), the reference computation in
tests and the point-in-time reconstruction from the archive share one
definition.

Agent view (entity ``agent:<producer>``):

- ``avg_completion_time`` — mean ``duration_s`` of the agent's completed tasks.
- ``success_rate`` — share of successful outcomes: ``task.completed`` with
  ``success`` and ``review.completed`` with ``passed_first_try``.
- ``complexity_score`` — mean complexity of the work the agent handled:
  story points for a completed task, ``log2(1 + lines added)`` for a review
  request (lines added = ``la * lt``; ``la`` is normalised by ``lt``).

Camera view (entity ``camera:<camera_id>``): ``fps`` and
``faces_per_frame`` (means over frames).

Each value exists all-time and per tumbling window of ``WINDOW_S`` seconds
of event time (the hopping view over the last hour is the sum of the
windows it covers).

>>> from schemas import new_event
>>> ev = new_event("task.completed", {"task_id": "t", "project": "p", "actual_points": 3,
...                "duration_s": 60.0, "success": True}, producer="task-estimator")
>>> deltas(ev)
('agent:task-estimator', {'n_completed': 1.0, 'sum_duration': 60.0, 'n_outcomes': 1.0, \
'n_success': 1.0, 'n_complexity': 1.0, 'sum_complexity': 3.0})
>>> values({'n_completed': 1.0, 'sum_duration': 60.0, 'n_outcomes': 1.0, 'n_success': 1.0})
{'avg_completion_time': 60.0, 'success_rate': 1.0, 'complexity_score': 0.0}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from schemas import Envelope

WINDOW_S = 3600
Deltas = dict[str, float]


def deltas(event: Envelope) -> tuple[str, Deltas] | None:
    """The entity an event updates and the counter increments it brings (None: no feature)."""
    p = event.payload
    t = event.type
    if t == "task.completed":
        d: Deltas = {}
        if p.get("duration_s") is not None:
            d["n_completed"] = 1.0
            d["sum_duration"] = float(p["duration_s"])
        if p.get("success") is not None:
            d["n_outcomes"] = 1.0
            d["n_success"] = 1.0 if p["success"] else 0.0
        d["n_complexity"] = 1.0
        d["sum_complexity"] = float(p["actual_points"])
        return f"agent:{event.producer}", d
    if t == "review.completed":
        return f"agent:{event.producer}", {
            "n_outcomes": 1.0, "n_success": 1.0 if p["passed_first_try"] else 0.0,
        }
    if t == "review.requested":
        m = p["metrics"]
        lines_added = float(m.get("la", 0.0)) * float(m.get("lt", 0.0))
        return f"agent:{event.producer}", {
            "n_complexity": 1.0, "sum_complexity": math.log2(1.0 + max(lines_added, 0.0)),
        }
    if t == "frame.processed":
        return f"camera:{p['camera_id']}", {
            "n_frames": 1.0, "sum_fps": float(p["fps"]), "sum_faces": float(p["faces"]),
        }
    return None


def _ratio(counters: Mapping[str, float], num: str, den: str) -> float:
    n = counters.get(den, 0.0)
    return counters.get(num, 0.0) / n if n else 0.0


def values(counters: Mapping[str, float]) -> dict[str, float]:
    """Feature values from an entity's counters."""
    if "n_frames" in counters:
        return {
            "fps": _ratio(counters, "sum_fps", "n_frames"),
            "faces_per_frame": _ratio(counters, "sum_faces", "n_frames"),
        }
    return {
        "avg_completion_time": _ratio(counters, "sum_duration", "n_completed"),
        "success_rate": _ratio(counters, "n_success", "n_outcomes"),
        "complexity_score": _ratio(counters, "sum_complexity", "n_complexity"),
    }


def window_start(event: Envelope, window_s: int = WINDOW_S) -> int:
    """Start (epoch seconds) of the tumbling event-time window the event falls in."""
    ts = int(event.occurred_at.timestamp())
    return ts - ts % window_s


def reference(events: Iterable[Envelope]) -> dict[str, dict[str, float]]:
    """All-time counters per entity computed directly (what the projection must equal)."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for ev in events:
        hit = deltas(ev)
        if hit is None:
            continue
        entity, d = hit
        for k, v in d.items():
            totals[entity][k] += v
    return {e: dict(c) for e, c in totals.items()}
