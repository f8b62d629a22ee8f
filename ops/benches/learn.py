"""Benchmark: events per second through the shadow projection on real story points.

``python -m ops.benches.learn`` prints one JSON object::

    events_per_s         median over runs of (requests + outcomes) / seconds
    events_per_cpu_s     the same per CPU second of this process (steadier on a shared machine)
    runs                 the per-run rates
    events               input events per run (one request and one outcome per issue)
    models               champion + challengers of the agent
    river_models         how many of them are River models (projections/learners/river_adapter.py)
    resets               challengers reset on drift (last run)
    review_events_per_s  the same for ``code-reviewer`` on the shipped code changes
    review_models        its champion + challengers (``review_river_models`` of them River)
    events_per_s_sealed  the task events with personal text sealed as the SDK seals it
                         (pattern detector, per-subject keys in a file key store as the
                         worker has them); the shadow opens it (``reveal_context``) for
                         every prediction and every update
    events_per_s_without_river  the task events with the first wave's challengers
                         (no River model): what the River challenger costs
    events_per_cpu_s_sealed, events_per_cpu_s_without_river  the same per CPU second

Every issue of the shipped story-point data becomes a ``decision.requested``
of ``task-estimator`` and, :data:`LAG` requests later, its ``task.completed``:
outcomes arrive late, as in production. Events are built before the clock
starts; the timed part is ``ShadowProjection.apply`` (predict, score, learn,
drift detection, exactly-once bookkeeping, output events), with the garbage
collector tuned as the worker tunes it (``SELFLEARN_WORKER_GC_GEN0``).
Target: >= 5 000/s.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ops.data import data_path
from projections.agent_specs import DEFAULT_AGENTS, AgentSpec
from projections.datasets import change_projects, iter_storypoints, read_changes
from projections.learners import RiverLearner
from projections.shadow import ShadowProjection
from schemas import Envelope, new_event
from schemas.cipher import FieldCipher
from schemas.keystore_file import FileKeyStore
from schemas.protect import Protector, detector_for
from schemas.settings import Settings
from streams.worker import throughput_gc

AGENT = "task-estimator"
REVIEWER = "code-reviewer"
LAG = 50
REVIEW_ROWS = 20_000  # changes (the first projects in name order), one request + one outcome
#: the task challengers of the first wave, before a River model was one of them
WITHOUT_RIVER = ("recency_median", "knn_median", "token_quantile")
SUBJECTS = 500  # pseudonymous reporters the sealed requests are spread over


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


def build_review_events(limit: int = REVIEW_ROWS) -> list[Envelope]:
    """Review requests of shipped changes and their outcomes :data:`LAG` requests later."""
    folder = data_path("changes")
    rows = [r for p in change_projects(folder) for r in read_changes(folder, p)][:limit]
    events: list[Envelope] = []
    for i, r in enumerate(rows):
        events.append(new_event("decision.requested", {
            "request_id": f"c-{i}", "kind": "review_risk",
            "context": {"change_id": f"{r.project}-{r.transactionid}", **r.x}},
            producer=REVIEWER))
        if i >= LAG:
            old = rows[i - LAG]
            events.append(new_event("review.completed", {
                "change_id": f"{old.project}-{old.transactionid}", "project": old.project,
                "passed_first_try": not old.bug}, producer="reviews"))
    return events


def seal(events: list[Envelope], protector: Protector) -> list[Envelope]:
    """The events as the SDK sends them with privacy on: requests' free text sealed."""
    return [protector.protect(dataclasses.replace(ev, subject_id=f"r-{i % SUBJECTS}"))
            if ev.type == "decision.requested" else ev for i, ev in enumerate(events)]


def _rates(agent: str, events: list[Envelope], runs: int, spec: AgentSpec | None = None,
           cipher: FieldCipher | None = None) -> tuple[list[float], list[float], int]:
    """Wall-clock and CPU-time rates of ``runs`` replays, and the resets of the last."""
    agents = {agent: spec or DEFAULT_AGENTS[agent]}
    rates, cpu_rates, resets = [], [], 0
    for _ in range(runs):
        sp = ShadowProjection(agents, cipher=cipher)
        start, cpu = time.perf_counter(), time.process_time()
        for offset, ev in enumerate(events):
            sp.apply([("bench", 0, offset, ev)])
        rates.append(len(events) / (time.perf_counter() - start))
        cpu_rates.append(len(events) / max(time.process_time() - cpu, 1e-9))
        resets = sp.counters["resets"]
    return rates, cpu_rates, resets


def _river(agent: str) -> int:
    return sum(isinstance(f, type) and issubclass(f, RiverLearner)
               for f in DEFAULT_AGENTS[agent].learners().values())


Rates = tuple[list[float], list[float], int]


def _variant(variant: str, runs: int, limit: int | None) -> Rates:
    """One variant's rates, measured in the process this runs in (see :func:`run`)."""
    throughput_gc(Settings().worker_gc_gen0)
    if variant == "review":
        return _rates(REVIEWER, build_review_events(limit or REVIEW_ROWS), runs)
    events = build_events(limit)
    if variant == "without_river":
        first_wave = dataclasses.replace(DEFAULT_AGENTS[AGENT], challengers=WITHOUT_RIVER)
        return _rates(AGENT, events, runs, spec=first_wave)
    if variant == "sealed":
        with tempfile.TemporaryDirectory(prefix="selflearn-bench-keys-") as tmp:
            keys = FileKeyStore(Path(tmp) / "keys", kek_path=Path(tmp) / "kek")
            protector = Protector(keys, detector_for("pattern"))
            try:
                return _rates(AGENT, seal(events, protector), runs, cipher=protector.cipher)
            finally:
                keys.close()
    return _rates(AGENT, events, runs)


def _fresh(variant: str, runs: int, limit: int | None) -> Rates:
    """:func:`_variant` in a new interpreter, as a worker process starts.

    Run one after another in one process, a variant inherits the heap the
    previous ones left (fragmented memory, long-lived objects the collector
    walks): the last variant measured 15–25 % slower than the same code alone.
    """
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(_variant, variant, runs, limit).result()


def run(runs: int = 3, limit: int | None = None) -> dict[str, Any]:
    """Each variant replayed ``runs`` times into fresh projections, each in a fresh process."""
    rates, cpu_rates, resets = _fresh("river", runs, limit)
    review_rates, _, _ = _fresh("review", runs, limit)
    sealed_rates, sealed_cpu, _ = _fresh("sealed", runs, limit)
    plain_rates, plain_cpu, _ = _fresh("without_river", runs, limit)
    events = build_events(limit)
    return {
        "events_per_s": round(statistics.median(rates)),
        "events_per_cpu_s": round(statistics.median(cpu_rates)),
        "runs": [round(r) for r in rates],
        "events": len(events),
        "models": len(DEFAULT_AGENTS[AGENT].learners()),
        "river_models": _river(AGENT),
        "resets": resets,
        "review_events_per_s": round(statistics.median(review_rates)),
        "review_models": len(DEFAULT_AGENTS[REVIEWER].learners()),
        "review_river_models": _river(REVIEWER),
        "events_per_s_sealed": round(statistics.median(sealed_rates)),
        "events_per_s_without_river": round(statistics.median(plain_rates)),
        "events_per_cpu_s_sealed": round(statistics.median(sealed_cpu)),
        "events_per_cpu_s_without_river": round(statistics.median(plain_cpu)),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
