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
from dataclasses import dataclass, field

import orjson

from projections.checkpoints import CheckpointStore
from projections.promotion import PromotionProjection, PromotionRefused, Transition
from projections.shadow import Scored, ShadowProjection
from schemas import Envelope, new_event
from schemas.policy import LivePolicy, ModelRef

log = logging.getLogger(__name__)


@dataclass
class Output:
    """What one applied event asks the worker to publish."""

    events: list[tuple[str, Envelope]] = field(default_factory=list)  # (key, event)
    policies: list[Transition] = field(default_factory=list)


class LearningShard:
    """Shadow + promotion projections of the agents on one partition."""

    def __init__(self, prefix: str, state: bytes | None = None) -> None:
        self.prefix = prefix
        self._scored: list[Scored] = []
        if state is None:
            self.shadow = ShadowProjection(on_scored=self._scored.append)
            self.promotion = self._new_promotion(None)
        else:
            raw = orjson.loads(state)
            self.shadow = ShadowProjection.restore(raw["shadow"].encode(),
                                                   on_scored=self._scored.append)
            self.promotion = self._new_promotion(raw["promotion"].encode())
        self.booted: set[str] = set()

    def _new_promotion(self, state: bytes | None) -> PromotionProjection:
        if state is None:
            return PromotionProjection(snapshot_of=self.shadow.model_snapshot,
                                       key_prefix=self.prefix)
        return PromotionProjection.restore(state, snapshot_of=self.shadow.model_snapshot,
                                           key_prefix=self.prefix)

    def apply(self, topic: str, partition: int, offset: int, event: Envelope) -> Output:
        """Apply one event (exactly once, by offset and id) and collect what to publish."""
        out = Output()
        if event.type == "operator.command":
            if self.promotion.marks.fresh(event, topic, partition, offset):
                self._command(event, out)
            return out
        for produced in self.shadow.apply(event, topic=topic, partition=partition,
                                          offset=offset):
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
            self._publish(self.promotion.apply(event, topic=topic, partition=partition,
                                               offset=offset), out)
        return out

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

    def state(self) -> bytes:
        """Checkpoint bytes: both projections with their watermarks."""
        return orjson.dumps({"shadow": self.shadow.snapshot().decode(),
                             "promotion": self.promotion.snapshot().decode()})

    def live_policy(self, agent_id: str) -> tuple[LivePolicy, dict[ModelRef, bytes]]:
        return self.promotion.bootstrap(agent_id)


class LearningRuntime:
    """The shards of the partitions this worker owns, loaded from and saved to checkpoints."""

    NAME = "learning"

    def __init__(self, prefix: str, checkpoints: CheckpointStore) -> None:
        self.prefix = prefix
        self.checkpoints = checkpoints
        self.shards: dict[int, LearningShard] = {}
        self.applied = 0

    def shard(self, partition: int) -> LearningShard:
        shard = self.shards.get(partition)
        if shard is None:
            state = self.checkpoints.load(f"{self.prefix}:{self.NAME}", partition)
            shard = self.shards[partition] = LearningShard(self.prefix, state)
        return shard

    def apply(self, topic: str, partition: int, offset: int, event: Envelope) -> Output:
        self.applied += 1
        return self.shard(partition).apply(topic, partition, offset, event)

    def checkpoint(self) -> None:
        """Save every shard (called before the input it covers is acknowledged)."""
        if self.shards:
            self.checkpoints.save(f"{self.prefix}:{self.NAME}",
                                  {p: s.state() for p, s in self.shards.items()})
