"""Exactly-once bookkeeping shared by the in-memory projections.

The broker gives at-least-once delivery; a projection that remembers, in its
own state, *which* events it applied turns that into exactly-once effect.
Identity, never position or clock, decides (docs/exactly-once.md):

* An event stamped by our SDK carries its producer's identity — producer id,
  epoch and a dense sequence number per stream, Kafka's idempotent-producer
  idea. Per ``producer_id:epoch:stream`` the projection keeps the highest
  sequence applied and the *holes* below it: a sequence above the next one
  opens a gap (events lost or still on their way), a late arrival fills its
  hole, anything else is a duplicate. Any number of producer instances per
  agent id and clocks that step are irrelevant: only sequences are compared.
* An event without a sequence (another client library, a worker-made event)
  is de-duplicated by its event id in a bounded set of recent ids; a new id is
  never in it, so nothing new is ever skipped — a duplicate older than the
  window would be applied twice, which the window (``RECENT_IDS``) makes
  longer than any redelivery.
* Offsets are positions inside one *incarnation* of a partition: they are
  kept for lineage only, and a fresh event at a lower offset than the last one
  (a broker that restarted empty, a re-created topic) starts a new incarnation.

>>> from schemas import new_event
>>> def review(n: int, seq: int):
...     return new_event("review.completed", {"change_id": f"c{n}", "project": "P",
...                      "passed_first_try": True}, producer="a", producer_id="p1",
...                      producer_epoch=0, sequence=seq)
>>> w = Watermarks()
>>> first = review(1, 0)
>>> w.fresh(first, "t", 0, 10), w.fresh(first, "t", 0, 11)
(True, False)
>>> w.fresh(review(2, 3), "t", 0, 12), w.gaps
(True, 2)
>>> w.fresh(review(3, 1), "t", 0, 13), w.gaps
(True, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import CATALOG, Envelope

RECENT_IDS = 20_000  # event ids remembered for unsequenced events, per projection
MAX_HOLES = 100_000  # a larger jump is counted as lost but not remembered hole by hole


def identity_key(event: Envelope) -> str | None:
    """``producer_id:epoch:stream`` of a sequenced event, None for an unsequenced one."""
    if event.sequence is None:
        return None
    spec = CATALOG.get(event.type)
    return f"{event.producer_id}:{event.producer_epoch}:{spec.stream if spec else event.type}"


class Watermarks:
    """Which events a projection applied: sequences with holes, recent ids, offsets."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}
        self.holes: dict[str, set[int]] = {}
        self.recent: dict[str, None] = {}  # insertion-ordered set of recent event ids
        self.offsets: dict[str, int] = {}
        self.incarnations: dict[str, int] = {}
        self.gaps = 0  # sequences skipped and not (yet) filled: lost events

    def fresh(self, event: Envelope, topic: str, partition: int, offset: int) -> bool:
        """True (and recorded) if the event was not applied yet."""
        key = identity_key(event)
        new = self._fresh_sequence(key, event.sequence) if key is not None and \
            event.sequence is not None else self._fresh_id(event.event_id.hex)
        if new and offset >= 0:
            pos = f"{topic}:{partition}"
            if offset < self.offsets.get(pos, -1):
                self.incarnations[pos] = self.incarnations.get(pos, 0) + 1
            self.offsets[pos] = offset
        return new

    def _fresh_sequence(self, key: str, seq: int) -> bool:
        last = self.seqs.get(key, -1)
        if seq > last:
            missing = seq - last - 1
            if missing:
                self.gaps += missing
                if missing <= MAX_HOLES:
                    self.holes.setdefault(key, set()).update(range(last + 1, seq))
            self.seqs[key] = seq
            return True
        holes = self.holes.get(key)
        if holes and seq in holes:
            holes.discard(seq)
            if not holes:
                del self.holes[key]
            self.gaps -= 1
            return True
        return False

    def _fresh_id(self, eid: str) -> bool:
        if eid in self.recent:
            return False
        self.recent[eid] = None
        if len(self.recent) > RECENT_IDS:
            del self.recent[next(iter(self.recent))]
        return True

    def state(self) -> dict[str, Any]:
        return {"seqs": self.seqs, "holes": {k: sorted(v) for k, v in self.holes.items()},
                "recent": list(self.recent), "offsets": self.offsets,
                "incarnations": self.incarnations, "gaps": self.gaps}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> Watermarks:
        w = cls()
        if "seqs" not in raw:  # a checkpoint from before sequences: offsets only
            w.offsets = dict(raw.get("offsets", {}))
            return w
        w.seqs = dict(raw["seqs"])
        w.holes = {k: set(v) for k, v in raw["holes"].items()}
        w.recent = dict.fromkeys(raw["recent"])
        w.offsets = dict(raw["offsets"])
        w.incarnations = dict(raw["incarnations"])
        w.gaps = int(raw["gaps"])
        return w
