"""The demo's agents: each replays real data through the SDK, as a real agent would.

Task agents replay story-point issues in creation order: ask the decision
engine for an estimate, log it, and report the actual effort a few tasks
later. Review agents replay code changes in date order: ask for a risk,
request the review, and learn the outcome late — when the fixing change
lands (compressed time), or as a clean pass after a horizon.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agents.client import AgentClient
from ops.data import data_path
from projections.datasets import ChangeRow, read_changes, read_storypoints

COMPLETION_LAG = 10  # a task's actual effort is known ten tasks later
CLEAN_AFTER_DAYS = 365  # a change with no fix by then passed on the first try
DAYS_PER_CHANGE = 0.25  # demo time: one change stands for six hours of project time


@dataclass
class AgentPlan:
    """Who the agent is and what it replays."""

    agent_id: str
    kind: str  # task_estimate | review_risk
    projects: tuple[str, ...]
    rate_per_s: float


@dataclass
class Progress:
    """Counters the progress bars and the summary read."""

    decisions: int = 0
    outcomes: int = 0
    total: int = 0
    policies: dict[str, int] = field(default_factory=dict)
    abs_error: float = 0.0
    subjects: list[str] = field(default_factory=list)  # data subjects seen, in order


def reporter(kind: str, project: str, item: str) -> str:
    """The pseudonymous data subject of an issue or change: who filed or wrote it.

    The shipped data has no reporter or author column, so each issue (change)
    stands for its own reporter (author): a stable pseudonym derived from the
    project and the issue key (commit id). It is never a name; the free text of
    the issue is that subject's personal data, and persons named in it get
    their own subjects (``schemas.protect``).

    >>> reporter("task", "mule", "MULE-1") == reporter("task", "mule", "MULE-1")
    True
    >>> reporter("task", "mule", "MULE-1")[:2]
    'r-'
    """
    digest = hashlib.sha256(f"{kind}:{project}:{item}".encode()).hexdigest()[:16]
    return ("r-" if kind == "task" else "a-") + digest


def _task_rows(projects: tuple[str, ...]) -> Iterator[tuple[dict[str, object], float]]:
    for project in projects:
        for r in read_storypoints(data_path("storypoints"), project):
            ctx: dict[str, object] = {"task_id": r.issuekey, "project": r.project, "title": r.title,
                   "description": r.description[:600]}
            yield ctx, r.storypoint


def run_task_agent(client: AgentClient, plan: AgentPlan, progress: Progress,
                   stop: threading.Event) -> None:
    """Estimate, log the estimate, report completion ``COMPLETION_LAG`` tasks later."""
    rows = list(_task_rows(plan.projects))
    progress.total = len(rows)
    backlog: list[tuple[dict[str, object], float, float]] = []
    pace = _Pace(plan.rate_per_s)
    for ctx, actual in rows:
        if stop.is_set():
            break
        pace.wait()
        subject = reporter("task", str(ctx["project"]), str(ctx["task_id"]))
        decision = client.decide(ctx, subject_id=subject)
        progress.decisions += 1
        progress.subjects.append(subject)
        progress.policies[decision.policy] = progress.policies.get(decision.policy, 0) + 1
        client.emit("task.estimated", {**ctx, "estimate": decision.output,
                                       "model_version": decision.model_version},
                    subject_id=subject)
        backlog.append((ctx, actual, decision.output))
        if len(backlog) > COMPLETION_LAG:
            _complete(client, *backlog.pop(0), progress)
    for item in backlog:
        _complete(client, *item, progress)


def _complete(client: AgentClient, ctx: dict[str, object], actual: float, estimate: float,
              progress: Progress) -> None:
    client.emit("task.completed", {
        "task_id": ctx["task_id"], "project": ctx["project"], "actual_points": actual,
        "duration_s": actual * 3600.0, "success": abs(estimate - actual) <= max(1.0, actual / 2),
    }, subject_id=reporter("task", str(ctx["project"]), str(ctx["task_id"])))
    progress.outcomes += 1
    progress.abs_error += abs(estimate - actual)


Outcome = tuple[str, str, bool]  # (change id, project, passed on the first try)


def review_schedule(changes: list[ChangeRow]) -> Iterator[ChangeRow | Outcome]:
    """The review agent's events in order: each change, then the outcomes due by then.

    A change's outcome is due ``min(days to its fix, CLEAN_AFTER_DAYS) /
    DAYS_PER_CHANGE`` changes later: defect-introducing changes whose fix
    lands early are reported first, clean passes a year (1 460 changes) later.
    Pure, so a test can replay the demo's schedule in-process.

    >>> from datetime import datetime as dt
    >>> rows = [ChangeRow("p", f"c{i}", dt(2020, 1, 1), {}, 0, None) for i in range(1461)]
    >>> events = list(review_schedule(rows))
    >>> len(events), events[-1]
    (1462, ('c0', 'p', True))
    """
    due: list[tuple[float, int, str, str, bool]] = []  # (known at step, seq, id, project, ok)
    for step, change in enumerate(changes):
        yield change
        days = float(CLEAN_AFTER_DAYS)
        if change.bug and change.fixed_at is not None:
            days = min(days, max(0.0, (change.fixed_at - change.date).days))
        heapq.heappush(due, (step + days / DAYS_PER_CHANGE, step, change.transactionid,
                             change.project, not change.bug))
        while due and due[0][0] <= step:
            _, _, cid, project, ok = heapq.heappop(due)
            yield cid, project, ok


def run_review_agent(client: AgentClient, plan: AgentPlan, progress: Progress,
                     stop: threading.Event) -> None:
    """Score each change's risk, request the review, deliver the outcome late."""
    changes = [c for p in plan.projects for c in read_changes(data_path("changes"), p)]
    progress.total = len(changes)
    pace = _Pace(plan.rate_per_s)
    for event in review_schedule(changes):
        if isinstance(event, tuple):
            cid, project, ok = event
            client.emit("review.completed", {"change_id": cid, "project": project,
                                             "passed_first_try": ok})
            progress.outcomes += 1
            continue
        if stop.is_set():
            break
        pace.wait()
        ctx = {"change_id": event.transactionid, **event.x}
        subject = reporter("change", event.project, event.transactionid)
        decision = client.decide(ctx, subject_id=subject)
        progress.decisions += 1
        progress.policies[decision.policy] = progress.policies.get(decision.policy, 0) + 1
        client.emit("review.requested", {"change_id": event.transactionid,
                                         "project": event.project, "metrics": event.metrics},
                    subject_id=subject)


class _Pace:
    """Open-loop pacing at a fixed rate (agents do not wait for the learners)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self.next = time.monotonic()

    def wait(self) -> None:
        self.next += self.interval
        pause = self.next - time.monotonic()
        if pause > 0:
            time.sleep(pause)


RUNNERS: dict[str, Callable[[AgentClient, AgentPlan, Progress, threading.Event], None]] = {
    "task_estimate": run_task_agent,
    "review_risk": run_review_agent,
}


def plans(speed: float) -> list[AgentPlan]:
    """Seven data agents (the eighth is the vision agent); the first rollouts as in the brief."""
    r = 25.0 * speed
    return [
        AgentPlan("task-estimator", "task_estimate", ("appceleratorstudio", "titanium"), 2 * r),
        AgentPlan("doc-keeper", "task_estimate", ("datamanagement", "springxd"), r),
        AgentPlan("release-planner", "task_estimate", ("mule", "mulestudio"), r / 2),
        AgentPlan("test-writer", "task_estimate", ("talenddataquality", "bamboo"), r / 2),
        AgentPlan("code-reviewer", "review_risk", ("LUCENE", "HBase"), 2 * r),
        AgentPlan("architecture-advisor", "review_risk", ("Derby", "JMeter"), r / 2),
        AgentPlan("security-auditor", "review_risk", ("Ant", "POI"), r / 2),
    ]


def outbox(data_dir: Path, agent_id: str) -> Path:
    return data_dir / "outbox" / f"{agent_id}.db"
