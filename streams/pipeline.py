"""One worker batch through every projection: features, memory, learning, archive.

Each message is decoded once and handed to each projection in turn (the
broker delivers it once to the worker; three Faust agents would triple the
per-message cost). Projections are idempotent by their own watermarks, so a
re-delivered batch changes nothing. Kept free of Faust: tests and replay
drive it directly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from projections.archive_projection import ArchiveProjection
from projections.base import Sourced
from projections.checkpoints import CheckpointUnavailable
from projections.erasures import erased_key
from projections.learners.base import clear_text_caches
from projections.learning import LearningRuntime
from projections.online import FeatureProjection, MemoryProjection, until_redis_answers
from projections.policy_store import PolicyStore
from projections.promotion import Transition
from projections.registry import ModelRegistry
from schemas import CATALOG, encode
from schemas.deadletter import dead_letter
from schemas.errors import ReasonCode
from schemas.keys import KeyStore
from streams.processing import Raw, split
from streams.sensor import Sensor

log = logging.getLogger(__name__)

LEARNING_STREAMS = ("agent", "decisions", "control")


@dataclass
class Publish:
    """Records the worker must hand to the broker before acknowledging the batch."""

    dead: list[bytes] = field(default_factory=list)
    sends: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (stream, key, value)


class WorkerPipeline:
    """Applies a batch to every projection and says what to publish."""

    def __init__(self, prefix: str, features: FeatureProjection, archive: ArchiveProjection,
                 learning: LearningRuntime, policies: PolicyStore,
                 registry: ModelRegistry | None = None, sensor: Sensor | None = None,
                 memory: MemoryProjection | None = None, keys: KeyStore | None = None) -> None:
        self.sensor = sensor or Sensor()
        self.keys = keys
        self.prefix = prefix
        # subject -> what each projection forgot (also kept in Redis for `erase` and the demo)
        self.erasures: dict[str, dict[str, int]] = {}
        self.features = features
        self.memory = memory
        self.archive = archive
        self.learning = learning
        self.policies = policies
        self.registry = registry
        self._learning_topics = {f"{prefix}.{s}" for s in LEARNING_STREAMS}

    def handle(self, batch: Sequence[Raw]) -> Publish:
        """Decode once, then features → memory → learning → archive; bad input is dead-lettered."""
        for topic, n in Counter(r[0] for r in batch).items():
            self.sensor.on_batch(topic, n)
        result = split(batch, self.sensor)
        out = Publish(dead=result.dead)
        self.features.apply(result.events)
        if self.memory is not None:
            self.memory.apply(result.events)
        self.learning.audit(result.events)
        for sourced in result.events:
            if sourced[0] in self._learning_topics:
                self._learn(sourced, out)
        self.archive.apply(result.events)
        for sourced in result.events:
            event = sourced[3]
            if event.type == "subject.erased" and event.subject_id:
                self.forget(event.subject_id)
        return out

    def forget(self, subject_id: str) -> dict[str, int]:
        """A subject was erased: drop cached keys, then every projection's derived state.

        Runs after the batch is applied, so nothing of the subject that came in
        the same batch survives; the first copy a worker sees is also appended
        to the erased list that agent processes follow (projections.erasures).
        Idempotent: a redelivered ``subject.erased``
        (or its copy in another partition) forgets nothing more. The counts are
        added up in Redis (``<prefix>:erasure:<subject>``, with ``copies`` seen)
        over every copy and every worker, for ``erase`` and the demo to report.
        """
        if self.keys is not None:
            self.keys.forget(subject_id)
        clear_text_caches()  # keyed by plaintext text: the subject's may be among them
        first = subject_id not in self.erasures
        report = {"features": self.features.forget(subject_id),
                  "memory": self.memory.forget(subject_id) if self.memory is not None else 0,
                  "learning": self.learning.forget(subject_id),
                  "archive": self.archive.forget(subject_id)}
        total = self.erasures.setdefault(subject_id, dict.fromkeys(report, 0))
        for k, v in report.items():
            total[k] += v
        log.info("subject %s erased: forgot %s", subject_id, report)
        try:
            pipe = self.policies.r.pipeline()
            key = f"{self.prefix}:erasure:{subject_id}"
            for k, v in report.items():
                pipe.hincrby(key, k, v)
            pipe.hincrby(key, "copies", 1)
            if first:  # agent processes follow this list (agents.erasure)
                pipe.rpush(erased_key(self.prefix), subject_id)
            pipe.execute()
        except Exception as exc:  # the report is informative; the forgetting is done
            log.warning("could not record the erasure report: %s", type(exc).__name__)
        return report

    def _learn(self, sourced: Sourced, out: Publish) -> None:
        topic, partition, offset, event = sourced
        try:
            # One event at a time, so a model bug dead-letters only the event it hit.
            produced = self.learning.apply([sourced])
        except Exception as exc:  # a model bug must not stop the worker; keep the event
            log.exception("learning failed on %s@%s:%d", topic, partition, offset)
            self.sensor.on_dead_letter(ReasonCode.PROCESSING_FAILED.value)
            out.dead.append(dead_letter(
                encode(event), reason=ReasonCode.PROCESSING_FAILED.value, error=repr(exc),
                source="worker", topic=topic, partition=partition, offset=offset,
            ))
            return
        for key, ev in produced.events:
            out.sends.append((CATALOG[ev.type].stream, key.encode(), encode(ev)))
        for t in produced.policies:
            self._publish(t, partition)

    def _publish(self, t: Transition, partition: int) -> None:
        """New live policy to Redis (read models poll it); models entering canary to MLflow."""
        # Retried through a Redis outage like the features: the batch is not
        # acknowledged until it is applied, and only a newer revision wins.
        if not until_redis_answers(lambda: self.policies.publish(t.policy, t.snapshots)):
            return  # not newer: a replay of a transition already published
        self.sensor.on_transition(t.policy.agent_id, t.event.type, t.policy.canary_percent)
        # Refreshed versions stay in Redis (audit reads them there); registering each in
        # MLflow cost the worker more CPU than its learning (docs/served.md).
        if self.registry is not None and t.event.type in ("promotion.step_changed",
                                                          "promotion.rolled_back"):
            shard = self.learning.shards[partition]
            agent = t.policy.agent_id
            metrics = shard.shadow.metrics(agent) if agent in shard.shadow.models else {}
            # The partition's applied offsets bound what the snapshot learned from (lineage).
            self.registry.on_transition_async(t, metrics, shard.offsets())

    def release(self, partitions: set[int]) -> None:
        """Drop learning shards of partitions this worker no longer owns.

        Another worker advances them now; a stale copy here must not be used if
        the partition comes back (it is reloaded from the checkpoint then).
        """
        owned = {p for p in self.learning.shards if p not in partitions}
        self.learning.shards = {p: s for p, s in self.learning.shards.items() if p in owned}

    def checkpoint(self) -> bool:
        """Save learning state; True when saved: only then may the batches it covers be acked.

        False during a PostgreSQL outage: nothing is acknowledged, the next
        checkpoint tries again, and a crash meanwhile only re-delivers.
        """
        try:
            self.learning.checkpoint()
        except CheckpointUnavailable as exc:
            log.warning("%s; acknowledging nothing until a checkpoint is saved", exc)
            return False
        gaps = self.learning.gaps()
        self.sensor.on_gaps(gaps)
        if gaps:
            try:  # for `selflearn status` only: the checkpoint holds the real count
                self.policies.record_gaps(gaps)
            except redis.RedisError as exc:
                log.warning("gaps not recorded in Redis (%s); next checkpoint will", exc)
        for shard in self.learning.shards.values():
            for agent in shard.shadow.models:
                for model, metrics in shard.shadow.metrics(agent).items():
                    self.sensor.on_learner(agent, model, metrics)
        return True
