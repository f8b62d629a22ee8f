"""Short-term memory: each agent's recent context in Redis, bounded and expiring.

Every entry is its own key with a TTL (24 h by default), so Redis drops stale
context by itself. A global sorted index, scored by insertion order, bounds
the total (100 000 by default): inserting past the bound evicts the oldest
entries first. Per-agent indexes answer "what happened lately for this agent".
Keys use hash tags per agent (``sl:m:{agent}:…``) so the layout runs on Redis
Cluster; the global index is a single key, and eviction deletes entries one
key at a time (no cross-slot commands).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis

_PUT = """
local n = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], n, KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"""


class ShortTermMemory:
    """Bounded, expiring recent context per agent.

    Parameters
    ----------
    client: a redis-py client.
    prefix: key namespace.
    max_entries: bound over all agents; the oldest are evicted first.
    ttl_s: lifetime of one entry.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "sl", max_entries: int = 100_000,
        ttl_s: int = 24 * 3600,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._index = f"{prefix}:m:index"
        self._ids = itertools.count()
        self._put = client.register_script(_PUT)

    def _agent_index(self, agent_id: str) -> str:
        return f"{self.prefix}:m:{{{agent_id}}}:idx"

    def remember_many(self, entries: list[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Store ``(agent_id, entry_id, entry)`` triples, then enforce the bound."""
        if not entries:
            return
        pipe = self.r.pipeline(transaction=False)
        now_us = time.time_ns() // 1000
        for i, (agent_id, entry_id, entry) in enumerate(entries):
            key = f"{self.prefix}:m:{{{agent_id}}}:{entry_id}"
            self._put(keys=[key, self._agent_index(agent_id), f"{self.prefix}:m:{{{agent_id}}}:n"],
                      args=[orjson.dumps(entry), self.ttl_s], client=pipe)
            # Global order: insertion time, ties broken by position in the batch.
            pipe.zadd(self._index, {key: now_us * 1000 + i % 1000}, nx=True)
        pipe.execute()
        self.evict()

    def remember(self, agent_id: str, entry_id: str, entry: Mapping[str, Any]) -> None:
        """Store one entry of an agent's recent context."""
        self.remember_many([(agent_id, entry_id, entry)])

    def evict(self) -> int:
        """Drop the oldest entries beyond ``max_entries`` and index rows of expired ones."""
        horizon_us = (time.time_ns() // 1000 - self.ttl_s * 1_000_000) * 1000
        self.r.zremrangebyscore(self._index, "-inf", horizon_us)
        over = int(self.r.zcard(self._index)) - self.max_entries
        if over <= 0:
            return 0
        victims = self.r.zpopmin(self._index, over)
        pipe = self.r.pipeline(transaction=False)
        for member, _ in victims:
            key = member.decode() if isinstance(member, bytes) else member
            pipe.delete(key)
            agent = key[key.index("{") + 1 : key.index("}")]
            pipe.zrem(self._agent_index(agent), key)
        pipe.execute()
        return len(victims)

    def recall(self, agent_id: str, n: int = 20) -> list[dict[str, Any]]:
        """The agent's ``n`` most recent entries still alive, newest first."""
        keys = self.r.zrevrange(self._agent_index(agent_id), 0, n - 1)
        if not keys:
            return []
        raw = self.r.mget(keys)
        return [orjson.loads(v) for v in raw if v is not None]

    def size(self) -> int:
        """Entries currently indexed (all agents)."""
        return int(self.r.zcard(self._index))
