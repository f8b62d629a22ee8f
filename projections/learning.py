"""The learning loop of one partition: shadow learning feeding promotion.

Events of one agent (its decision requests, its outcomes, the promotion
events about it) share a partition, because everything is keyed by agent id.
So each partition gets its own :class:`LearningShard` with its own shadow and
promotion projections, checkpointed separately: workers can split partitions
and a shard moves with its partition.

The shard is pure: it returns what to publish (events with the key they must
carry, new live policies) and the worker does the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from projections.agent_specs import AgentSpec
from projections.base import Sourced
from projections.checkpoints import CheckpointStore
from projections.promotion import PromotionProjection, PromotionRefused, Transition
from projections.shadow import Scored, ShadowProjection
from projections.watermarks import Watermarks
from schemas import Envelope, new_event
from schemas.cipher import FieldCipher
from schemas.policy import LivePolicy, ModelRef

log = logging.getLogger(__name__)


@dataclass
class Output:
    """What applied events ask the worker to publish."""

    events: list[tuple[str, Envelope]] = field(default_factory=list)  # (key, event)
    policies: list[Transition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.policies)

    def extend(self, other: Output) -> None:
        self.events.extend(other.events)
        self.policies.extend(other.policies)


class LearningShard:
    """Shadow + promotion projections of the agents on one partition.

    A :class:`projections.base.SnapshotProjection`: :meth:`snapshot` holds both
    projections with their watermarks.

    >>> from schemas import new_event
    >>> shard = LearningShard("selflearn")
    >>> req = new_event("decision.requested", {"request_id": "r1", "kind": "task_estimate",
    ...     "context": {"task_id": "t1", "project": "p", "title": "Fix login"}},
    ...     producer="task-estimator")
    >>> out = shard.apply([("selflearn.decisions", 0, 0, req)])
    >>> len(out.events), [t.policy.canary_percent for t in out.policies]
    (4, [0])
    >>> bool(shard.apply([("selflearn.decisions", 0, 0, req)]))  # already applied
    False
    """

    def __init__(self, prefix: str, cipher: FieldCipher | None = None,
                 agents: Mapping[str, AgentSpec] | None = None) -> None:
        self.prefix = prefix
        self._scored: list[Scored] = []
        self.shadow = ShadowProjection(agents, on_scored=self._scored.append, cipher=cipher)
        self.promotion = PromotionProjection(agents, snapshot_of=self.shadow.model_snapshot,
                                             key_prefix=prefix)
        self.booted: set[str] = set()
        # Every event of the partition, any stream: the one place that sees a
        # producer's whole sequence, so the one place that counts its gaps.
        self.sequences = Watermarks()

    def audit(self, sourced: Sourced) -> None:
        """Record a sequenced event of any stream (gaps: ``self.sequences.gaps``)."""
        topic, partition, offset, event = sourced
        if event.sequence is not None:
            self.sequences.fresh(event, topic, partition, offset)

    def apply(self, batch: Sequence[Sourced]) -> Output:
        """Apply each event once and collect what to publish, in order."""
        out = Output()
        for sourced in batch:
            self._apply(sourced, out)
        return out

    def _apply(self, sourced: Sourced, out: Output) -> None:
        event = sourced[3]
        if event.type == "operator.command":
            if self.promotion.marks.fresh(event, *sourced[:3]):
                self._command(event, out)
            return
        for produced in self.shadow.apply([sourced]):
            out.events.append((event.producer, produced))
        agent = event.producer
        if event.type == "decision.requested" and agent not in self.booted \
                and agent in self.shadow.specs:
            # First sight of an agent in this process: promotion follows the shadow's
            # spec for it (kind, mode, models), and its current policy goes live.
            self.booted.add(agent)
            self.promotion.specs.setdefault(agent, self.shadow.specs[agent])
            pol, snaps = self.promotion.bootstrap(agent)
            out.policies.append(Transition(event, pol, snaps))
        for scored in self._scored:
            self._publish(self.promotion.observe(scored), out)
        self._scored.clear()
        if event.type == "decision.made":
            self._publish(self.promotion.apply([sourced]), out)

    def forget(self, subject_id: str) -> int:
        """What the shadow and the promotion projections forgot (see theirs)."""
        return self.shadow.forget(subject_id) + self.promotion.forget(subject_id)

    def _publish(self, transitions: list[Transition], out: Output) -> None:
        for t in transitions:
            out.policies.append(t)
            out.events.append((t.policy.agent_id, t.event))

    def _command(self, event: Envelope, out: Output) -> None:
        p = event.payload
        try:
            if p["action"] == "promote":
                t = self.promotion.promote(p["agent_id"], p["operator"], p.get("challenger"),
                                           reason=p["reason"])
            elif p["action"] == "rollback":
                t = self.promotion.rollback(p["agent_id"], p["operator"], p["reason"])
            else:
                raise PromotionRefused(f"unknown action {p['action']!r}")
        except PromotionRefused as exc:
            log.warning("operator command refused: %s", exc)
            out.events.append((p["agent_id"], new_event("model.evaluated", {
                "kind": "operator", "model": p["agent_id"], "n": 0,
                "metrics": {"refused": 1.0}}, producer="promotion", causation_id=str(
                    event.event_id))))
            return
        self._publish([t], out)

    def offsets(self) -> dict[str, int]:
        """Last applied offset per ``topic:partition`` of either projection: a snapshot
        taken now reflects exactly the events up to these (the registry's lineage)."""
        out = dict(self.shadow.marks.offsets)
        for pos, off in self.promotion.marks.offsets.items():
            out[pos] = max(off, out.get(pos, -1))
        return out

    def snapshot(self) -> bytes:
        """Checkpoint bytes: both projections with their watermarks."""
        return orjson.dumps({"shadow": self.shadow.snapshot().decode(),
                             "promotion": self.promotion.snapshot().decode(),
                             "sequences": self.sequences.state()})

    def restore(self, data: bytes) -> None:
        """Put both projections back into a :meth:`snapshot`'s state."""
        raw = orjson.loads(data)
        self.shadow.restore(raw["shadow"].encode())
        self.promotion.restore(raw["promotion"].encode())
        self.sequences = Watermarks.from_state(raw.get("sequences", {"offsets": {}}))
        self._scored.clear()

    def live_policy(self, agent_id: str) -> tuple[LivePolicy, dict[ModelRef, bytes]]:
        return self.promotion.bootstrap(agent_id)


class LearningRuntime:
    """The shards of the partitions this worker owns, loaded from and saved to checkpoints.

    A projection persisted in PostgreSQL: :meth:`checkpoint` stores every
    shard's snapshot, and a shard is restored from its last one when its
    partition is first seen.
    """

    NAME = "learning"

    def __init__(self, prefix: str, checkpoints: CheckpointStore,
                 cipher: FieldCipher | None = None,
                 agents: Mapping[str, AgentSpec] | None = None) -> None:
        self.prefix = prefix
        self.agents = agents  # None: projections.agent_specs.DEFAULT_AGENTS
        self.checkpoints = checkpoints
        self.cipher = cipher
        self.shards: dict[int, LearningShard] = {}
        self.applied = 0

    def shard(self, partition: int) -> LearningShard:
        shard = self.shards.get(partition)
        if shard is None:
            shard = self.shards[partition] = LearningShard(self.prefix, self.cipher, self.agents)
            state = self.checkpoints.load(f"{self.prefix}:{self.NAME}", partition)
            if state is not None:
                shard.restore(state)
        return shard

    def apply(self, batch: Sequence[Sourced]) -> Output:
        """Each event goes to the shard of its partition; outputs in batch order."""
        out = Output()
        for sourced in batch:
            self.applied += 1
            out.extend(self.shard(sourced[1]).apply([sourced]))
        return out

    def audit(self, batch: Sequence[Sourced]) -> None:
        """Every event of every stream through its shard's sequence audit."""
        for sourced in batch:
            self.shard(sourced[1]).audit(sourced)

    def gaps(self) -> dict[int, int]:
        """Sequences missing per partition this worker owns (lost events)."""
        return {p: s.sequences.gaps for p, s in self.shards.items()}

    def forget(self, subject_id: str) -> int:
        """What the shards of this worker forgot (others forget in their workers)."""
        return sum(s.forget(subject_id) for s in self.shards.values())

    def checkpoint(self) -> None:
        """Save every shard (called before the input it covers is acknowledged)."""
        if self.shards:
            self.checkpoints.save(f"{self.prefix}:{self.NAME}",
                                  {p: s.snapshot() for p, s in self.shards.items()})
