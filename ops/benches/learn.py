"""Benchmark: events per second through the shadow projection on real story points.

``python -m ops.benches.learn`` prints one JSON object::

    events_per_s     median over runs of (requests + outcomes) / seconds
    runs             the per-run rates
    events           input events per run (one request and one outcome per issue)
    models           champion + challengers of the agent
    resets           challengers reset on drift (last run)

Every issue of the shipped story-point data becomes a ``decision.requested``
of ``task-estimator`` and, :data:`LAG` requests later, its ``task.completed``:
outcomes arrive late, as in production. Events are built before the clock
starts; the timed part is ``ShadowProjection.apply`` (predict, score, learn,
drift detection, exactly-once bookkeeping, output events). Target: >= 5 000/s.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from ops.data import data_path
from projections.agent_specs import DEFAULT_AGENTS
from projections.datasets import iter_storypoints
from projections.shadow import ShadowProjection
from schemas import Envelope, new_event

AGENT = "task-estimator"
LAG = 50


def build_events(limit: int | None = None) -> list[Envelope]:
    """Requests and late outcomes of the story-point issues, in arrival order."""
    rows = list(iter_storypoints(data_path("storypoints")))[:limit]
    requests = [
        new_event("decision.requested", {"request_id": f"r-{i}", "kind": "task_estimate",
                                         "context": {"task_id": r.issuekey, **r.x}},
                  producer=AGENT)
        for i, r in enumerate(rows)
    ]
    outcomes = [
        new_event("task.completed", {"task_id": r.issuekey, "project": r.project,
                                     "actual_points": r.storypoint}, producer="tracker")
        for r in rows
    ]
    events: list[Envelope] = []
    for i, req in enumerate(requests):
        events.append(req)
        if i >= LAG:
            events.append(outcomes[i - LAG])
    events.extend(outcomes[max(len(rows) - LAG, 0):])
    return events


def run(runs: int = 3, limit: int | None = None) -> dict[str, Any]:
    """Replay the events ``runs`` times into fresh projections; return the median rate."""
    events = build_events(limit)
    agents = {AGENT: DEFAULT_AGENTS[AGENT]}
    rates, resets = [], 0
    for _ in range(runs):
        sp = ShadowProjection(agents)
        start = time.perf_counter()
        for offset, ev in enumerate(events):
            sp.apply([("bench", 0, offset, ev)])
        rates.append(len(events) / (time.perf_counter() - start))
        resets = sp.counters["resets"]
    return {
        "events_per_s": round(statistics.median(rates)),
        "runs": [round(r) for r in rates],
        "events": len(events),
        "models": len(agents[AGENT].learners()),
        "resets": resets,
    }


if __name__ == "__main__":
    print(json.dumps(run()))
