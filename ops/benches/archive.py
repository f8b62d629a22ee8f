"""Benchmark: events per second into the PostgreSQL archive (COPY → staging → INSERT).

``python -m ops.benches.archive`` prints one JSON object::

    events_per_s     median over runs of events stored per second (target >= 50 000)
    runs_events_per_s  each run
    mean_event_bytes mean wire size of the events written (orjson envelope)
    batch            events per write (one COPY + one INSERT ... ON CONFLICT)
    events           events per run
    redelivery_stored  events stored when the last run's batches are delivered again (0)
    backend          "timescaledb" or "partitioned"

The events are realistic decision traffic made with :func:`schemas.new_event`
(:func:`realistic_events`): a decision request with its context, the decision
with its features, and the later outcomes; ~1.5 KB on the wire on average.
PostgreSQL comes from ``SELFLEARN_DATABASE_URL`` or a private embedded stack.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from ops.benches._common import running_stack
from projections.base import Sourced
from schemas import Envelope, encode, new_event

AGENTS = ("code-reviewer", "doc-keeper", "architecture-advisor", "task-estimator",
          "test-writer", "security-auditor", "release-manager", "vision")
PROJECTS = ("Ant", "Camel", "Hadoop", "Jenkins", "Kafka", "Mesos", "Spark", "Tika")
_WORDS = (
    "add refactor fix update remove cache retry timeout parser config handler stream "
    "worker queue metric latency schema migration index query endpoint client server "
    "token session user model feature review estimate deploy rollback canary shadow "
    "partition offset consumer producer broker table window counter gauge histogram "
    "error warning null pointer exception memory leak thread lock race deadlock "
    "test coverage flaky integration unit mock fixture build release version tag "
    "docs readme api contract interface protocol adapter factory service layer"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def realistic_events(n: int, *, start: datetime | None = None, span_s: float = 86_400.0,
                     seed: int = 7) -> list[Envelope]:
    """``n`` decision-traffic events spread over ``span_s`` seconds of event time.

    Per decision: ``decision.requested`` (context with a task text and
    change metrics) and ``decision.made`` (30 features, digest), then one
    outcome or work event (``task.completed``, ``review.requested``,
    ``review.completed``, ``task.estimated``). Deterministic for a seed
    (except the UUIDv7 ids).

    >>> evs = realistic_events(8, start=datetime(2025, 1, 1, tzinfo=UTC))
    >>> len(evs), evs[0].type
    (8, 'decision.requested')
    """
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(seconds=span_s)
    step = span_s / max(n, 1)
    out: list[Envelope] = []
    i = 0
    while len(out) < n:
        agent = AGENTS[i % len(AGENTS)]
        at = start + timedelta(seconds=len(out) * step)
        req = f"r-{seed}-{i}"
        project = rng.choice(PROJECTS)
        metrics = {k: round(rng.random() * 100, 3) for k in (
            "ns", "nm", "nf", "entropy", "la", "ld", "lt", "ndev", "pd", "npt", "exp",
            "rexp", "sexp")}
        features = {f"f{j:02d}_{rng.choice(_WORDS)}": round(rng.gauss(0, 1), 6)
                    for j in range(30)}
        kind = "estimate" if i % 2 else "review"
        batch = [
            new_event("decision.requested", {"request_id": req, "kind": kind, "context": {
                "project": project, "task_id": f"T-{i}", "title": _text(rng, 8),
                "description": _text(rng, 150), "metrics": metrics,
                "labels": rng.sample(_WORDS, 4)}}, producer=agent, occurred_at=at,
                correlation_id=req),
            new_event("decision.made", {
                "request_id": req, "kind": kind, "output": round(rng.random() * 13, 3),
                "model_version": f"{kind}-hoeffding@v{rng.randint(1, 40)}",
                "policy": rng.choice(("champion", "canary")),
                "inputs_digest": hashlib.sha256(req.encode()).hexdigest(),
                "features": features, "latency_us": round(rng.random() * 900, 1)},
                producer=agent, occurred_at=at + timedelta(milliseconds=3),
                correlation_id=req),
        ]
        later = at + timedelta(milliseconds=5 + rng.randint(0, 900))
        r = rng.randrange(4)
        if r == 0:
            batch.append(new_event("task.completed", {
                "task_id": f"T-{i}", "project": project,
                "actual_points": rng.choice((1, 2, 3, 5, 8)),
                "duration_s": round(rng.expovariate(1 / 3600), 1),
                "success": rng.random() < 0.8}, producer=agent, occurred_at=later,
                correlation_id=req))
        elif r == 1:
            batch.append(new_event("review.requested", {
                "change_id": f"C-{i}", "project": project, "metrics": metrics,
                "author": f"dev{rng.randint(1, 50)}"}, producer=agent, occurred_at=later,
                subject_id=f"dev{rng.randint(1, 50)}"))
        elif r == 2:
            batch.append(new_event("review.completed", {
                "change_id": f"C-{i - 1}", "project": project,
                "passed_first_try": rng.random() < 0.6}, producer=agent, occurred_at=later))
        else:
            batch.append(new_event("task.estimated", {
                "task_id": f"T-{i}", "project": project, "title": _text(rng, 8),
                "description": _text(rng, 120), "estimate": rng.choice((1, 2, 3, 5, 8))},
                producer=agent, occurred_at=later, subject_id=f"dev{rng.randint(1, 50)}"))
        out.extend(batch)
        i += 1
    return out[:n]


def sourced(events: list[Envelope], topic: str = "selflearn.agent",
            partitions: int = 8) -> list[Sourced]:
    """Give events broker positions as a worker would see them (per-partition offsets)."""
    offsets = [0] * partitions
    out: list[Sourced] = []
    for ev in events:
        p = zlib.crc32(ev.producer.encode()) % partitions
        out.append((topic, p, offsets[p], ev))
        offsets[p] += 1
    return out


def run(n: int = 100_000, batch: int = 5_000, runs: int = 3) -> dict[str, Any]:
    """Write ``n`` events ``runs`` times (fresh table each run); return the numbers."""
    from projections.archive import EventArchive

    events = sourced(realistic_events(n, start=datetime(2025, 3, 1, tzinfo=UTC)))
    mean_bytes = statistics.fmean(len(encode(ev)) for _, _, _, ev in events[:5_000])
    rates: list[float] = []
    with running_stack(without=("kafka", "redis")) as (_, addresses):
        dsn = addresses.database_url
        for _ in range(runs):
            archive = EventArchive(dsn, table=f"bench_{uuid.uuid4().hex[:8]}")
            backend = archive.ensure_schema()
            archive.ensure_partitions(events[0][3].occurred_at, events[-1][3].occurred_at)
            started = time.perf_counter()
            stored = sum(archive.write(events[i:i + batch]) for i in range(0, n, batch))
            rates.append(stored / (time.perf_counter() - started))
            again = sum(archive.write(events[i:i + batch]) for i in range(0, n, batch))
            with archive.connection() as conn:
                conn.execute(f"DROP TABLE {archive.table}, {archive.table}_cold")
                conn.commit()
            archive.close()
            if stored != n or again != 0:
                raise RuntimeError(f"archive stored {stored} then {again} of {n} events")
    return {
        "events_per_s": round(statistics.median(rates)),
        "runs_events_per_s": json.dumps([round(r) for r in rates]),
        "mean_event_bytes": round(mean_bytes),
        "batch": batch, "events": n, "redelivery_stored": again, "backend": backend,
    }


if __name__ == "__main__":
    print(json.dumps(run()))
