"""The report's data: events folded into per-agent and per-camera series.

:func:`collect` is a pure function of the events (any order); the page
(:mod:`ops.report.page`) and its charts (:mod:`ops.report.plots`) read the
result.

>>> from datetime import UTC, datetime
>>> from schemas import new_event
>>> ev = new_event("decision.made", {"request_id": "r", "kind": "task_estimate",
...     "output": 3.0, "model_version": "m:v1", "policy": "champion",
...     "inputs_digest": "d", "features": {}, "latency_us": 42.0},
...     producer="task-estimator", occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
>>> c = collect([ev])
>>> c.events, c.agents["task-estimator"].decisions
(1, 1)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import Envelope
from schemas.policy import LivePolicy

REPORT_TYPES = ("decision.made", "model.evaluated", "promotion.step_changed",
                "promotion.rolled_back", "frame.processed")
POLICY_LABELS = ("champion", "canary", "fallback", "baseline")
LATENCY_TARGET_US = 100_000.0  # decision P95 under 100 ms : the seed's target (README, Benchmarks)
FPS_TARGET = 30.0
HISTORY_ROWS = 50
_MAIN_METRIC = {"task_estimate": "mae", "review_risk": "log_loss"}

Point = tuple[datetime, float]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100) of ``values``; NaN when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99)
    (2.5, 5.0)
    """
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class AgentData:
    """Everything the report shows about one agent, gathered in one pass over the events."""

    agent_id: str
    kind: str = ""
    metrics: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))
    metric_name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))

    @property
    def decisions(self) -> int:
        return sum(len(v) for v in self.latency.values())


@dataclass
class Collected:
    """The events of a report, folded into per-agent and per-camera series."""

    agents: dict[str, AgentData] = field(default_factory=dict)
    cameras: dict[str, list[tuple[datetime, float, float, int]]] = field(
        default_factory=lambda: defaultdict(list))
    events: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def agent(self, agent_id: str) -> AgentData:
        if agent_id not in self.agents:
            self.agents[agent_id] = AgentData(agent_id)
        return self.agents[agent_id]


def _metric_value(kind: str, metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    names = [_MAIN_METRIC[kind]] if kind in _MAIN_METRIC else list(_MAIN_METRIC.values())
    for base in names:
        for name in (f"rolling_{base}", base):
            if isinstance(metrics.get(name), int | float):
                return name, float(metrics[name])
    return None


def collect(events: Iterable[Envelope]) -> Collected:
    """Fold report-relevant events (any order) into series; other types are counted only."""
    c = Collected()
    for ev in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        c.events += 1
        c.first = c.first or ev.occurred_at
        c.last = ev.occurred_at
        p, t = ev.payload, ev.occurred_at
        if ev.type == "decision.made":
            a = c.agent(ev.producer)
            a.kind = a.kind or str(p["kind"])
            if isinstance(p.get("latency_us"), int | float):
                a.latency[str(p["policy"])].append((t, float(p["latency_us"])))
        elif ev.type == "model.evaluated" and p["kind"] != "operator":
            a = c.agent(ev.producer)
            a.kind = a.kind or str(p["kind"])
            hit = _metric_value(a.kind, p["metrics"])
            if hit is not None:
                a.metric_name = a.metric_name or hit[0]
                a.metrics[str(p["model"])].append((t, hit[1]))
        elif ev.type in ("promotion.step_changed", "promotion.rolled_back"):
            a = c.agent(str(p["agent_id"]))
            a.kind = a.kind or str(p["kind"])
            rolled = ev.type == "promotion.rolled_back"
            a.history.append({
                "at": t, "event": "rollback" if rolled else "step",
                "from": int(p["from_step"]), "to": 0 if rolled else int(p["to_step"]),
                "champion": p["champion"], "challenger": p["challenger"],
                "reason": p["reason"], "by": p.get("operator") or "auto"})
        elif ev.type == "frame.processed":
            c.cameras[str(p["camera_id"])].append(
                (t, float(p["fps"]), float(p["processing_latency_ms"]), int(p["dropped"])))
    return c


def canary_step(policy: LivePolicy | None, a: AgentData) -> int:
    if policy is not None:
        return policy.canary_percent
    last = a.history[-1]["to"] if a.history else 0
    return 0 if last == 100 else last
