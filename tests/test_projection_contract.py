"""One contract, every projection (the eventsourcing habit: one test case, one subclass each).

:class:`ProjectionContract` holds the checks; a subclass per implementation
gives only ``create_projection()`` and ``events()``. A new projection is done
when its subclass passes. The checks:

- replaying the same events into a fresh projection gives the same state;
- a re-delivered event (the same event object, at its position or another
  partition and offset, right away or much later) changes nothing;
- a crash between apply and checkpoint recovers exactly: the process dies
  after applying events it never checkpointed, a new one starts from the last
  checkpoint (snapshot bytes, or the store itself), the broker redelivers from
  there, and the result equals a straight run;
- events of another partition are untouched: offsets of two partitions
  overlap without one hiding the other, and a partition's redelivery (a
  rebalance) leaves the other's progress alone;
- forgetting a data subject the events never named changes nothing.

Events are placed as the broker would: the topic of their stream, a partition
by key (the producer; keys alternate between two partitions in order of first
appearance) and consecutive offsets per partition. "State" is the snapshot
bytes of an in-memory projection, and the store's content (without its
namespace and its clocks) for a store-backed one, which runs against the
session's real Redis or PostgreSQL in a namespace of its own.
"""

from __future__ import annotations

import dataclasses
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice
from typing import Any, ClassVar

import pytest
import redis
from psycopg_pool import ConnectionPool

from ops.data import data_path
from projections.agent_specs import AgentSpec
from projections.archive import EventArchive
from projections.archive_projection import ArchiveProjection
from projections.base import Projection, SnapshotProjection, Sourced
from projections.datasets import iter_storypoints, read_changes
from projections.feature_store import OnlineFeatureStore
from projections.learning import LearningShard, Output
from projections.memory import ShortTermMemory
from projections.online import FeatureProjection, MemoryProjection
from projections.promotion import PromotionProjection
from projections.shadow import ShadowProjection
from schemas import CATALOG, Envelope, new_event
from schemas.addresses import Addresses
from schemas.envelope import thaw

BATCH = 8  # events per apply in straight runs


def placed(events: list[Envelope], partitions: int = 2) -> list[Sourced]:
    """Broker positions: the stream's topic, a partition by key, offsets per partition."""
    parts: dict[str, int] = {}
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for ev in events:
        topic = f"contract.{CATALOG[ev.type].stream}"
        part = parts.setdefault(ev.producer, len(parts) % partitions)
        offsets[topic, part] = offset = offsets.get((topic, part), -1) + 1
        out.append((topic, part, offset, ev))
    return out


def run(p: Projection[Any], sourced: list[Sourced]) -> list[Any]:
    """Apply in batches of :data:`BATCH`; the outputs of each batch."""
    return [p.apply(sourced[i:i + BATCH]) for i in range(0, len(sourced), BATCH)]


def published(outputs: list[Any]) -> Any:
    """What outputs amount to: a count, or the events to publish without ids and times.

    A learning shard's policies are compared through the events that announce
    them: a shard re-announces an agent's live policy on first sight after a
    restart on purpose (the policy store ignores it as not newer).
    """
    if all(isinstance(o, int) for o in outputs):
        return sum(outputs)
    events: list[Envelope] = []
    for out in outputs:
        items = [ev for _, ev in out.events] if isinstance(out, Output) else out
        events.extend(getattr(item, "event", item) for item in items)
    return [(e.type, e.producer, thaw(e.payload)) for e in events]


class ProjectionContract(ABC):
    """The checks every projection passes; in-memory persistence by default."""

    #: What apply did survives a crash (store-backed), rather than being lost with the process.
    durable: ClassVar[bool] = False

    @abstractmethod
    def create_projection(self) -> Projection[Any]:
        """A new projection as the worker configures it (store-backed: on ``self.namespace``)."""

    @abstractmethod
    def events(self) -> list[Envelope]:
        """The events to feed, in order; some of them must produce output."""

    # --- persistence hooks (in memory: snapshot bytes) ----------------------------

    def fresh(self) -> Projection[Any]:
        """A projection with empty state."""
        return self.create_projection()

    def checkpoint(self, p: Projection[Any]) -> Any:
        """What survives a crash of the process."""
        assert isinstance(p, SnapshotProjection)
        return p.snapshot()

    def restart(self, checkpoint: Any) -> Projection[Any]:
        """The projection of a new process that starts from ``checkpoint``."""
        p = self.create_projection()
        assert isinstance(p, SnapshotProjection)
        p.restore(checkpoint)
        return p

    def state(self, p: Projection[Any]) -> Any:
        """Everything the projection holds, comparable across projections."""
        assert isinstance(p, SnapshotProjection)
        return p.snapshot()

    # --- the contract ---------------------------------------------------------------

    def test_replaying_the_same_events_into_a_fresh_projection_gives_the_same_state(
            self) -> None:
        sourced = placed(self.events())
        a, b = self.fresh(), self.fresh()
        out_a, out_b = run(a, sourced), run(b, sourced)
        assert self.state(a) == self.state(b)
        assert published(out_a) == published(out_b) and published(out_a)

    def test_a_redelivered_event_changes_nothing(self) -> None:
        sourced = placed(self.events())
        once, twice = self.fresh(), self.fresh()
        run(once, sourced)
        for topic, partition, offset, ev in sourced:
            twice.apply([(topic, partition, offset, ev)])
            assert not twice.apply([(topic, partition, offset, ev)])  # same position
            assert not twice.apply([(topic, partition + 1, offset + 10, ev)])  # re-sent
        assert not published(run(twice, sourced))  # the whole log again, much later
        assert self.state(twice) == self.state(once)

    def test_a_crash_between_apply_and_checkpoint_recovers_exactly(self) -> None:
        sourced = placed(self.events())
        third = len(sourced) // (3 * BATCH) * BATCH
        k, m = third, 2 * third
        straight = self.fresh()
        run(straight, sourced[:k])
        after_k = run(straight, sourced[k:])
        crashed = self.fresh()
        run(crashed, sourced[:k])
        saved, at_checkpoint = self.checkpoint(crashed), self.state(crashed)
        unsaved = run(crashed, sourced[k:m])  # applied; the checkpoint never came
        at_crash = self.state(crashed)
        resumed = self.restart(saved)
        assert self.state(resumed) == (at_crash if self.durable else at_checkpoint)
        again = run(resumed, sourced[k:])  # the broker redelivers from the checkpoint
        assert self.state(resumed) == self.state(straight)
        done = (unsaved if self.durable else []) + again
        assert published(done) == published(after_k)

    def test_events_of_another_partition_are_untouched(self) -> None:
        events = self.events()
        single, split = self.fresh(), self.fresh()
        # Offsets of the two partitions overlap; neither may hide the other's events.
        assert published(run(single, placed(events, 1))) == published(
            run(split, placed(events, 2)))
        sourced = placed(events)
        half = len(sourced) // (2 * BATCH) * BATCH
        moved = self.fresh()
        run(moved, sourced[:half])
        # A rebalance hands partition 1 back from its start; partition 0 must not notice.
        assert not published(run(moved, [s for s in sourced[:half] if s[1] == 1]))
        run(moved, sourced[half:])
        assert self.state(moved) == self.state(split)

    def test_forgetting_a_subject_it_never_saw_changes_nothing(self) -> None:
        sourced = placed(self.events())
        p, q = self.fresh(), self.fresh()
        run(p, sourced)
        run(q, sourced)
        assert p.forget(f"nobody-{uuid.uuid4().hex}") == 0
        assert self.state(p) == self.state(q)


class StoreContract(ProjectionContract):
    """A projection persisted in a store: each fresh projection gets a namespace of its own."""

    durable = True
    namespace: str  # where create_projection() opens the store
    namespaces: list[str]  # every namespace this test used (dropped afterwards)
    opened: list[tuple[Projection[Any], str]]

    def new_namespace(self) -> str:
        return f"pc_{uuid.uuid4().hex[:12]}"

    def fresh(self) -> Projection[Any]:
        self.namespace = self.new_namespace()
        self.namespaces.append(self.namespace)
        return self._open()

    def _open(self) -> Projection[Any]:
        p = self.create_projection()
        self.opened.append((p, self.namespace))
        return p

    def space_of(self, p: Projection[Any]) -> str:
        return next(ns for q, ns in self.opened if q is p)

    def checkpoint(self, p: Projection[Any]) -> Any:
        return self.space_of(p)  # the store is the checkpoint

    def restart(self, checkpoint: Any) -> Projection[Any]:
        self.namespace = checkpoint  # a new process reopens the same store
        return self._open()

    def state(self, p: Projection[Any]) -> Any:
        return self.dump(self.space_of(p))

    @abstractmethod
    def dump(self, namespace: str) -> Any:
        """The store's content under ``namespace``, with the namespace taken out."""


class RedisContract(StoreContract):
    """Store-backed in the session's Redis; keys under ``<namespace>:``."""

    @pytest.fixture(autouse=True)
    def _redis(self, stack: Addresses) -> Iterator[None]:
        self.redis = redis.Redis.from_url(stack.redis_url)
        self.namespaces, self.opened = [], []
        yield
        for ns in self.namespaces:
            keys = list(self.redis.scan_iter(match=f"{ns}:*", count=1000))
            if keys:
                self.redis.delete(*keys)
        self.redis.close()

    def dump(self, namespace: str) -> Any:
        def plain(v: Any) -> bytes:
            return bytes(v).replace(namespace.encode(), b"")

        r, out = self.redis, {}
        for key in sorted(r.scan_iter(match=f"{namespace}:*", count=1000)):
            kind = bytes(r.type(key)).decode()  # type: ignore[arg-type]
            if kind == "hash":
                value: Any = sorted(r.hgetall(key).items())
            elif kind == "zset":  # order only: some scores are insertion times
                value = [plain(m) for m in r.zrange(key, 0, -1)]
            elif kind == "set":
                value = sorted(plain(m) for m in r.smembers(key))  # type: ignore[union-attr]
            else:
                assert kind == "string", kind
                value = plain(r.get(key))
            out[plain(key)] = value
        return out


class PostgresContract(StoreContract):
    """Store-backed in the session's PostgreSQL; one table named by the namespace."""

    clock_columns = ("archived_at",)  # set by the server's clock on insert

    @pytest.fixture(autouse=True)
    def _postgres(self, stack: Addresses) -> Iterator[None]:
        self.pool = ConnectionPool(stack.database_url, min_size=1, max_size=2, open=True)
        self.namespaces, self.opened = [], []
        yield
        with self.pool.connection() as conn:
            for ns in self.namespaces:
                conn.execute(f"DROP TABLE IF EXISTS {ns}, {ns}_cold CASCADE")
        self.pool.close()

    def dump(self, namespace: str) -> Any:
        with self.pool.connection() as conn:
            cur = conn.execute(f"SELECT * FROM {namespace} ORDER BY event_id")
            names = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
        return [{n: v for n, v in zip(names, row, strict=True) if n not in self.clock_columns}
                for row in rows]


# --- the events -------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


@cache
def learning_events() -> list[Envelope]:
    """Real story points and code changes: requests, outcomes ten tasks later, controls.

    Unsequenced (as a replay of a data set sends them): event ids de-duplicate them.
    """
    evs: list[Envelope] = []
    tasks = list(islice(iter_storypoints(data_path("storypoints")), 120))
    for i, task in enumerate(tasks):
        for agent in ("task-estimator", "doc-keeper"):
            evs.append(new_event("decision.requested", {
                "request_id": f"{agent}{i}", "kind": "task_estimate",
                "context": {"task_id": task.issuekey, **task.x}}, producer=agent))
        if i >= 10:
            old = tasks[i - 10]
            evs.append(new_event("task.completed", {
                "task_id": old.issuekey, "project": old.project,
                "actual_points": old.storypoint}, producer="tracker"))
        if i == 60:
            evs.append(new_event("promotion.step_changed", {
                "agent_id": "task-estimator", "kind": "task_estimate", "from_step": 0,
                "to_step": 5, "champion": "running_median:v1", "challenger": "knn_median:v2",
                "reason": "test"}, producer="promotion"))
    for i, change in enumerate(read_changes(data_path("changes"), "IVY")[:80]):
        evs.append(new_event("decision.requested", {
            "request_id": f"c{i}", "kind": "review_risk",
            "context": {"change_id": change.transactionid, **change.x}},
            producer="code-reviewer"))
        evs.append(new_event("review.completed", {
            "change_id": change.transactionid, "project": "IVY",
            "passed_first_try": not change.bug}, producer="reviews"))
    return evs


def sequenced(events: list[Envelope]) -> list[Envelope]:
    """The events as our SDK stamps them: one producer instance per agent, a dense
    sequence per stream (the others stay unsequenced, as events of other clients)."""
    seqs: dict[tuple[str, str], int] = {}
    out = []
    for ev in events:
        key = (ev.producer, CATALOG[ev.type].stream)
        seqs[key] = seq = seqs.get(key, -1) + 1
        out.append(dataclasses.replace(ev, producer_id=f"{ev.producer}-i1", producer_epoch=0,
                                       sequence=seq))
    return out


def _made(agent: str, i: int, policy: str, latency_us: float) -> Envelope:
    return new_event("decision.made", {
        "request_id": f"{agent}-{i}", "kind": "task_estimate", "output": 3.0,
        "model_version": "running_median:v1", "policy": policy, "inputs_digest": "d",
        "features": {}, "latency_us": latency_us}, producer=agent)


@cache
def decision_events() -> list[Envelope]:
    """Decisions of two agents in canary: one slows down (rolled back), one stays fine."""
    evs = []
    for i in range(160):
        slow = 300.0 + (9000.0 if i > 60 else 0.0)
        evs.append(_made("agent-a", i, "canary" if i % 2 else "champion",
                         slow if i % 2 else 300.0))
        evs.append(_made("agent-b", i, ("canary", "champion", "fallback")[i % 3],
                         250.0 + i % 7))
    return sequenced(evs)


@cache
def shard_events() -> list[Envelope]:
    """Learning traffic plus decisions and operator commands (promote, rollback, refused)."""
    evs = list(learning_events()[:300])

    def command(action: str, challenger: str | None = None) -> Envelope:
        payload = {"agent_id": "task-estimator", "action": action, "operator": "alice",
                   "reason": "contract"}
        if challenger:
            payload["challenger"] = challenger
        return new_event("operator.command", payload, producer="ops")

    evs.append(command("promote", "knn_median"))
    evs.extend(_made("task-estimator", i, "canary" if i % 2 else "champion", 300.0 + i)
               for i in range(80))
    evs.append(command("rollback"))
    evs.append(command("rollback"))  # nothing left to roll back: refused
    evs.extend(learning_events()[300:])
    return evs


@cache
def agent_events() -> list[Envelope]:
    """Outcomes, reviews, decisions and frames of four agents and two cameras over two days.

    Values are exact in binary (integer seconds, ``lines = 2**k - 1``), so sums do
    not depend on how batches group them.
    """
    evs: list[Envelope] = []
    for i in range(240):
        agent, at = f"agent-{i % 4}", T0 + timedelta(minutes=13 * i)
        subject = ("alice", "bob", None)[i % 3]
        kind = i % 5
        if kind == 0:
            evs.append(new_event("task.completed", {
                "task_id": f"t{i}", "project": "p", "actual_points": float(1 + i % 8),
                "duration_s": float(60 * (1 + i % 9)), "success": i % 4 != 0},
                producer=agent, subject_id=subject, occurred_at=at))
        elif kind == 1:
            evs.append(new_event("review.requested", {
                "change_id": f"c{i}", "project": "p", "author": "someone",
                "metrics": {"la": 1.0, "lt": float(2 ** (1 + i % 6) - 1), "nf": 2}},
                producer=agent, subject_id=subject, occurred_at=at))
        elif kind == 2:
            evs.append(new_event("review.completed", {
                "change_id": f"c{i - 1}", "project": "p", "passed_first_try": i % 3 == 0},
                producer=agent, subject_id=subject, occurred_at=at))
        elif kind == 3:
            evs.append(_made(agent, i, "champion", 200.0 + i))
        else:
            evs.append(new_event("frame.processed", {
                "camera_id": f"cam-{i % 2}", "frame_no": i, "fps": 29.5 + i % 3,
                "capture_latency_ms": 4.0, "processing_latency_ms": 11.0,
                "faces": i % 3, "boxes": [], "dropped": 0}, producer="vision", occurred_at=at))
    return sequenced(evs)


# --- one subclass per projection: the factory and the events, nothing else ------------

AGENTS = {a: AgentSpec(a, "task_estimate", "live", "running_median", ("recency_median",))
          for a in ("agent-a", "agent-b")}


class TestShadowProjection(ProjectionContract):
    def create_projection(self) -> ShadowProjection:
        return ShadowProjection()

    def events(self) -> list[Envelope]:
        return learning_events()


class TestPromotionProjection(ProjectionContract):
    def create_projection(self) -> PromotionProjection:
        p = PromotionProjection(AGENTS)
        for agent in AGENTS:  # both in canary, as an operator would put them
            p.promote(agent, operator="alice", challenger="recency_median")
        return p

    def events(self) -> list[Envelope]:
        return decision_events()


class TestLearningShard(ProjectionContract):
    def create_projection(self) -> LearningShard:
        return LearningShard("contract")

    def events(self) -> list[Envelope]:
        return shard_events()


class TestFeatureProjection(RedisContract):
    def create_projection(self) -> FeatureProjection:
        return FeatureProjection(OnlineFeatureStore(self.redis, prefix=self.namespace))

    def events(self) -> list[Envelope]:
        return agent_events()


class TestMemoryProjection(RedisContract):
    def create_projection(self) -> MemoryProjection:
        return MemoryProjection(ShortTermMemory(self.redis, prefix=self.namespace))

    def events(self) -> list[Envelope]:
        return agent_events()


class TestArchiveProjection(PostgresContract):
    def create_projection(self) -> ArchiveProjection:
        return ArchiveProjection(EventArchive(self.pool, table=self.namespace))

    def events(self) -> list[Envelope]:
        return agent_events()

