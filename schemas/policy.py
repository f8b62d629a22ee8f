"""The live policy: what the decision engine serves for one agent.

Written by the promotion projection (to Redis and the control topic), read by
every in-process read model. Plain immutable values, orjson on the wire.

>>> p = LivePolicy(agent_id="code-reviewer", kind="review_risk", mode="live",
...                champion=ModelRef("size_heuristic", 1), canary_percent=0)
>>> LivePolicy.from_bytes(p.to_bytes()) == p
True
>>> p.routes_to_canary("req-1")
False
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import orjson

STEPS = (0, 5, 25, 50, 100)  # shadow → canary 5 % → 25 % → 50 % → 100 %
KINDS = ("task_estimate", "review_risk")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model by learner name and version; its snapshot lives under ``snapshot_key``."""

    name: str
    version: int
    snapshot_key: str | None = None  # Redis key of the learner snapshot (None: fresh learner)


@dataclass(frozen=True, slots=True)
class LivePolicy:
    """Champion, optional canary challenger and the share of traffic it gets.

    ``mode`` is ``"live"`` or ``"log_only"`` (decisions are computed and logged
    but the agent is told to act on its own rule — the first rollout stage).
    """

    agent_id: str
    kind: str
    mode: str
    champion: ModelRef
    challenger: ModelRef | None = None
    canary_percent: int = 0
    revision: int = 0  # increases with every change; read models keep the newest

    def routes_to_canary(self, request_id: str) -> bool:
        """Deterministic canary routing: the same request id always goes the same way."""
        if self.challenger is None or self.canary_percent <= 0:
            return False
        return bucket(request_id) < self.canary_percent

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> LivePolicy:
        raw: dict[str, Any] = orjson.loads(data)
        champion = ModelRef(**raw.pop("champion"))
        challenger = raw.pop("challenger")
        return cls(champion=champion,
                   challenger=ModelRef(**challenger) if challenger else None, **raw)


def bucket(request_id: str) -> int:
    """Stable bucket 0..99 of a request id (BLAKE2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def policy_key(prefix: str, agent_id: str) -> str:
    """Redis key of an agent's live policy (hash-tagged by agent for Redis Cluster)."""
    return f"{prefix}:policy:{{{agent_id}}}"


def model_key(prefix: str, agent_id: str, ref: ModelRef) -> str:
    """Redis key where a model snapshot (learner bytes) is stored."""
    return f"{prefix}:model:{{{agent_id}}}:{ref.name}:{ref.version}"
