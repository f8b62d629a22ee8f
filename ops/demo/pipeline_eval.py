"""``selflearn evaluate ... --through-pipeline``: the offline evaluation, replayed live.

Every row of a data folder travels the production path — ``AgentClient.emit``
→ broker → Faust worker (``streams.app``, the ``learning`` agent) →
:class:`projections.shadow.ShadowProjection` → ``shadow.predicted`` events on
the ``<prefix>.learning`` topic — and the predictions read back from that
topic are scored with the offline harness's own aggregation
(:func:`projections.evaluate.storypoint_summary`, ``recall_at`` / ``auc``).
The result is the JSON of :mod:`projections.evaluate`, number for number.

Why the numbers are the same
----------------------------
* One agent per project, :func:`projections.shadow.eval_agent_id`
  (``eval-<kind>-<project>``): its models are fresh, like the offline
  harness's per-project models, and its events share one key, hence one
  partition and one order. For those ids the shadow projection runs *every*
  registered learner of the kind (so ``constant`` and ``expert_mix`` too),
  log-only, and never resets a model on drift (the offline replay has no
  resets) — see :func:`projections.shadow.eval_spec`.
* Story points: per row, ``decision.requested`` (context = ``task_id`` +
  the offline ``x``: project, title, description) then ``task.completed``
  (the actual points). The agent's stream orders them request, outcome, next
  request: predict-then-learn in creation order, as offline.
* Changes: the offline replay's sequence, merged by date — label events due
  before a change, then the change's request. An outcome learns from the
  context stored with its pending request; a late correcting label (the
  second outcome of the same change) is preceded by a re-request of that
  change so it has a pending entry to learn from. Re-request predictions are
  not scored. Label events after a project's last change are not sent (they
  cannot change any score).
* Free text is sent unscrubbed (``AgentClient(scrub=None)``): the PII scrubber
  would change the tokens the text learners see. The data are public research
  sets; production agents keep the scrubber on.
* Predictions travel as JSON floats (orjson writes the shortest repr, which
  reads back bit for bit); the shadow projection only replaces non-finite
  predictions, which these learners never make.

Servers: with ``addresses`` given (tests) those servers are used; otherwise a
private embedded stack in a temporary folder (servers configured by
``SELFLEARN_*`` variables are used as they are), so an evaluation never writes
into a running system's archive. Topics get a fresh prefix either way.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.addresses import Addresses
from schemas.settings import Settings

log = logging.getLogger(__name__)

#: seconds without a new prediction (after everything was sent) before giving up
IDLE_TIMEOUT_S = 120.0


class PipelineEvalError(RuntimeError):
    """The pipeline did not deliver every prediction (worker died or stalled)."""


@dataclass
class Replay:
    """What one agent sends, and which of its requests are scored."""

    agent_id: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)  # request ids, in row order
    requests: int = 0  # every request sent (scored or not)

    def request(self, kind: str, rid: str, context: dict[str, Any], *, score: bool) -> None:
        """Queue a ``decision.requested``; ``score``: its predictions count."""
        self.events.append(("decision.requested",
                            {"request_id": rid, "kind": kind, "context": context}))
        self.requests += 1
        if score:
            self.scored.append(rid)


# ------------------------------------------------------------------- scripts


def storypoint_replays(folder: Path) -> tuple[dict[str, Replay], dict[str, list[float]]]:
    """Per project: the replay and the actual points of its rows (in order)."""
    from projections.agent_specs import eval_agent_id
    from projections.datasets import read_storypoints, storypoint_projects

    replays: dict[str, Replay] = {}
    actual: dict[str, list[float]] = {}
    for project in storypoint_projects(folder):
        rows = read_storypoints(folder, project)
        rp = replays[project] = Replay(eval_agent_id("task_estimate", project))
        for i, row in enumerate(rows):
            task_id = f"{project}/{i}/{row.issuekey}"
            rp.request("task_estimate", task_id, {"task_id": task_id, **row.x}, score=True)
            rp.events.append(("task.completed", {"task_id": task_id, "project": project,
                                                 "actual_points": row.storypoint}))
        actual[project] = [row.storypoint for row in rows]
    return replays, actual


def change_replays(folder: Path) -> tuple[dict[str, Replay], dict[str, list[int]]]:
    """Per project: the replay (offline order, see the module doc) and the labels."""
    from projections.agent_specs import eval_agent_id
    from projections.datasets import change_projects, label_events, read_changes

    replays: dict[str, Replay] = {}
    labels: dict[str, list[int]] = {}
    for project in change_projects(folder):
        rows = read_changes(folder, project)
        events = label_events(rows)
        rp = replays[project] = Replay(eval_agent_id("review_risk", project))
        outcomes = [0] * len(rows)
        ids = [f"{project}/{i}/{r.transactionid}" for i, r in enumerate(rows)]
        j = 0
        for idx, row in enumerate(rows):
            while j < len(events) and events[j][0] <= row.date:
                _, i, y = events[j]
                j += 1
                outcomes[i] += 1
                if outcomes[i] > 1:  # a correcting label: give it a pending request
                    rp.request("review_risk", f"{ids[i]}#{outcomes[i]}",
                               {"change_id": ids[i], **rows[i].x}, score=False)
                rp.events.append(("review.completed", {
                    "change_id": ids[i], "project": project,
                    "passed_first_try": not y}))
            rp.request("review_risk", ids[idx], {"change_id": ids[idx], **row.x},
                       score=True)
        labels[project] = [r.bug for r in rows]
    return replays, labels


# ------------------------------------------------------------------ pipeline


@contextmanager
def _servers(settings: Settings, addresses: Addresses | None, tmp: Path) -> Iterator[Addresses]:
    if addresses is not None:
        yield addresses
        return
    from ops.stack.lifecycle import down, up

    own = settings.model_copy(update={"data_dir": tmp / "stack"})
    try:
        yield up(own)
    finally:
        down(own)


def _send(replays: dict[str, Replay], addresses: Addresses, settings: Settings,
          outboxes: Path) -> None:
    """Emit every replay's events (one client per agent) and wait until the broker has them."""
    from agents.client import AgentClient
    from schemas import Envelope

    clients = [AgentClient(rp.agent_id, bootstrap=addresses.kafka_bootstrap,
                           topic_prefix=settings.topic_prefix, partitions=settings.partitions,
                           outbox_path=outboxes / f"{rp.agent_id}.db", scrub=None)
               for rp in replays.values()]
    try:
        for client, rp in zip(clients, replays.values(), strict=True):
            for etype, payload in rp.events:
                sent = client.emit(etype, payload)
                if not isinstance(sent, Envelope):
                    raise PipelineEvalError(f"{rp.agent_id}: {etype} rejected: {sent.message}")
        for client in clients:
            if not client.flush(300):
                raise PipelineEvalError(f"{client.agent_id}: events not on the broker in 300 s")
    finally:
        for client in clients:
            client.close()


async def _collect(bootstrap: str, topic: str, wanted: set[str], models: int,
                   alive: Any, idle_timeout: float) -> dict[tuple[str, str], float]:
    """``(request_id, model) -> prediction`` of every wanted request, read from ``topic``."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from projections.contiguous import ContiguousReads
    from schemas import EventValidationError, decode

    got: dict[tuple[str, str], float] = {}
    need = len(wanted) * models
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, request_timeout_ms=10_000)
    reads = ContiguousReads()  # a prediction the broker answered past is read again
    await consumer.start()
    try:
        last_new = time.monotonic()
        while len(got) < need:
            if time.monotonic() - last_new > idle_timeout:
                raise PipelineEvalError(
                    f"no new prediction for {idle_timeout:.0f} s: {len(got)} of {need}")
            if not alive():
                raise PipelineEvalError(f"the worker died: {len(got)} of {need} predictions")
            try:
                batch = await reads.keep(
                    consumer, await consumer.getmany(timeout_ms=500, max_records=20_000))
            except KafkaError:
                await asyncio.sleep(0.2)
                continue
            before = len(got)
            for messages in batch.values():
                for m in messages:
                    try:
                        ev = decode(m.value)
                    except EventValidationError:
                        continue
                    p = ev.payload
                    if ev.type == "shadow.predicted" and p["request_id"] in wanted:
                        # a redelivery re-emits the same (deterministic) prediction
                        got.setdefault((p["request_id"], p["model"]), float(p["prediction"]))
            if len(got) > before:
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    return got


def _through_worker(replays: dict[str, Replay], settings: Settings, addresses: Addresses,
                    work: Path, models: int, idle_timeout: float) -> dict[tuple[str, str], float]:
    """Start a worker on a fresh topic prefix, send the replays, read the predictions back."""
    from ops.stack.processes import is_alive, stop, tail
    from ops.stack.workers import start_worker, wait_ready
    from schemas.catalog import topic_name

    prefix = f"{settings.topic_prefix}-eval-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(update={"topic_prefix": prefix, "data_dir": work})
    worker_log = work / "worker.log"
    worker = start_worker(own, addresses, worker_log)
    try:
        wait_ready(worker_log)
        t0 = time.monotonic()
        _send(replays, addresses, own, work / "outbox")
        log.info("sent %d events in %.1f s", sum(len(r.events) for r in replays.values()),
                 time.monotonic() - t0)
        wanted = {rid for rp in replays.values() for rid in rp.scored}
        try:
            return asyncio.run(_collect(
                addresses.kafka_bootstrap, topic_name(prefix, "learning"), wanted, models,
                lambda: is_alive(worker.pid, worker.create_time), idle_timeout))
        except PipelineEvalError as exc:
            raise PipelineEvalError(f"{exc}\nworker log {worker_log}:\n{tail(worker_log, 30)}") \
                from exc
    finally:
        stop(worker.pid, worker.create_time, timeout=15)


def evaluate_through_pipeline(
    what: str, folder: str | Path, settings: Settings, addresses: Addresses | None = None,
    *, idle_timeout: float = IDLE_TIMEOUT_S,
) -> dict[str, Any]:
    """The offline evaluation's JSON, measured through broker, worker and shadow projection.

    Parameters
    ----------
    what
        ``storypoints`` (:func:`projections.evaluate.evaluate_storypoints`) or
        ``changes`` (:func:`projections.evaluate.evaluate_changes`).
    folder
        Data folder of that format.
    settings
        Topic prefix (a fresh suffix is added), partitions, configured servers.
    addresses
        Servers to use; ``None``: a private embedded stack, stopped afterwards.
    idle_timeout
        Give up when no new prediction arrives for this long.

    Raises
    ------
    PipelineEvalError
        When the worker dies or stalls before every prediction is back.
    """
    from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS

    folder = Path(folder)
    if what == "storypoints":
        replays, actual = storypoint_replays(folder)
        names = list(TASK_LEARNERS)
    elif what == "changes":
        replays, labels = change_replays(folder)
        names = list(REVIEW_LEARNERS)
    else:
        raise ValueError(f"unknown evaluation {what!r}; use storypoints or changes")
    if not replays:
        raise ValueError(f"{folder} holds no {what} files")
    with tempfile.TemporaryDirectory(prefix="selflearn-eval-") as tmp:
        work = Path(tmp)
        with _servers(settings, addresses, work) as servers:
            preds = _through_worker(replays, settings, servers, work / "worker", len(names),
                                    idle_timeout)
    if what == "storypoints":
        return _storypoint_result(replays, actual, preds, names)
    return _change_result(replays, labels, preds, names)


# ------------------------------------------------------------------- scoring


def _storypoint_result(replays: dict[str, Replay], actual: dict[str, list[float]],
                       preds: dict[tuple[str, str], float], names: list[str]) -> dict[str, Any]:
    from projections.evaluate import storypoint_summary

    errors = {
        project: {name: [abs(preds[(rid, name)] - y)
                         for rid, y in zip(rp.scored, actual[project], strict=True)]
                  for name in names}
        for project, rp in replays.items()
    }
    return storypoint_summary(errors)


def _change_result(replays: dict[str, Replay], labels: dict[str, list[int]],
                   preds: dict[tuple[str, str], float], names: list[str]) -> dict[str, Any]:
    from projections.evaluate import change_summary

    scores = {project: {name: [preds[(rid, name)] for rid in rp.scored] for name in names}
              for project, rp in replays.items()}
    return change_summary({p: (labels[p], s) for p, s in scores.items()})
