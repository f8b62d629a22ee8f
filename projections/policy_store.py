"""The live policies in Redis: what every decision engine's read model loads.

``publish`` writes the model snapshots a policy references and the policy
itself in one Lua script, and only when the policy's revision is newer than
the stored one — a late or replayed writer can never move an agent back.
Keys (:func:`schemas.policy.policy_key`, :func:`schemas.policy.model_key`)
carry the agent in a hash tag, so one agent's keys share a Redis Cluster slot.
Snapshots are immutable per ``(name, version)``; they are never overwritten
by an older policy because the script writes nothing unless the revision wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from projections.redis_client import RedisClient
from schemas.policy import LivePolicy, ModelRef, model_key, policy_key

_PUBLISH = """
local current = redis.call('GET', KEYS[1])
if current then
  local rev = cjson.decode(current)['revision']
  if tonumber(rev) >= tonumber(ARGV[1]) then return 0 end
end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def _as_bytes(raw: bytes | str) -> bytes:
    """A Redis reply as bytes (clients made with ``decode_responses`` answer str)."""
    return raw.encode() if isinstance(raw, str) else bytes(raw)


class PolicyStore:
    """Live policies and model snapshots of every agent under one key prefix.

    Parameters
    ----------
    client
        A ``redis.Redis`` or ``RedisCluster`` client (bytes responses).
    prefix
        Key prefix shared with the decision engine (and ``PromotionProjection``).
    """

    def __init__(self, client: RedisClient, prefix: str = "selflearn") -> None:
        self.r = client
        self.prefix = prefix
        self._publish = client.register_script(_PUBLISH)

    def publish(self, policy: LivePolicy, snapshots: Mapping[ModelRef, bytes]) -> bool:
        """Write snapshots and policy atomically if the revision is newer; True if written."""
        keys = [policy_key(self.prefix, policy.agent_id)]
        args: list[bytes | int] = [policy.revision, policy.to_bytes()]
        for ref, data in snapshots.items():
            keys.append(model_key(self.prefix, policy.agent_id, ref))
            args.append(data)
        return bool(self._publish(keys=keys, args=args))

    def record_gaps(self, gaps: Mapping[int, int]) -> None:
        """Missing sequence numbers per partition, for ``selflearn status`` (lost events)."""
        self.r.hset(f"{self.prefix}:gaps", mapping={str(p): n for p, n in gaps.items()})

    def gaps(self) -> dict[int, int]:
        """What :meth:`record_gaps` last stored, per partition."""
        return {int(p): int(n) for p, n in self.r.hgetall(f"{self.prefix}:gaps").items()}

    def get(self, agent_id: str) -> LivePolicy | None:
        """The stored policy of ``agent_id`` or ``None``."""
        raw = self.r.get(policy_key(self.prefix, agent_id))
        return LivePolicy.from_bytes(_as_bytes(raw)) if raw else None

    def load_model(self, agent_id: str, ref: ModelRef) -> bytes | None:
        """Snapshot bytes of one model version, or ``None`` (serve a fresh learner)."""
        raw = self.r.get(model_key(self.prefix, agent_id, ref))
        return _as_bytes(raw) if raw is not None else None

    def all_policies(self) -> dict[str, LivePolicy]:
        """Every stored policy by agent id (SCAN; for read-model start-up and status)."""
        out: dict[str, LivePolicy] = {}
        for key in self.r.scan_iter(match=f"{self.prefix}:policy:*", count=1000):
            raw = self.r.get(key)
            if raw:
                pol = LivePolicy.from_bytes(_as_bytes(raw))
                out[pol.agent_id] = pol
        return dict(sorted(out.items()))
