"""Short-term memory: each agent's recent context in Redis, bounded and expiring.

Every entry is its own key with a TTL (24 h by default), so Redis drops stale
context by itself. A global sorted index, scored by insertion order, bounds
the total (100 000 by default): inserting past the bound evicts the oldest
entries first. Per-agent indexes answer "what happened lately for this agent".
Keys use hash tags per agent (``sl:m:{agent}:…``) so the layout runs on Redis
Cluster; the global index is a single key, and eviction deletes entries one
key at a time (no cross-slot commands).

Storing an entry is idempotent: an entry id already stored is left as it is
(value, TTL, rank), so a redelivered event changes nothing. Entries of events
that name a data subject are also indexed per subject (``sl:m:s:{subject}``,
members younger than the TTL), so :meth:`ShortTermMemory.forget` can delete
them when the subject is erased.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson

from projections.redis_client import RedisClient, execute_scripted

_PUT = """
local new = {}
for i = 3, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 0 then new[#new + 1] = i end
end
if #new == 0 then return 0 end
local n = tonumber(redis.call('INCRBY', KEYS[2], #new)) - #new
for _, i in ipairs(new) do
  n = n + 1
  local key = ARGV[2] .. ARGV[i]
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
  redis.call('ZADD', KEYS[1], n, key)
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return #new
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
        self, client: RedisClient, prefix: str = "sl", max_entries: int = 100_000,
        ttl_s: int = 24 * 3600,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._index = f"{prefix}:m:index"
        self._put = client.register_script(_PUT)
        self._last_score = 0

    def _agent_index(self, agent_id: str) -> str:
        return f"{self.prefix}:m:{{{agent_id}}}:idx"

    def _subject_index(self, subject_id: str) -> str:
        return f"{self.prefix}:m:s:{{{subject_id}}}"

    def remember_many(self, entries: Sequence[tuple[str, str, Mapping[str, Any]]],
                      subjects: Mapping[str, str] | None = None) -> int:
        """Store ``(agent_id, entry_id, entry)`` triples, then enforce the bound.

        ``subjects`` maps an entry id to the data subject its event names (for
        :meth:`forget`). Returns how many entries were new (ids already stored
        are left untouched).
        """
        unique = {(agent, entry_id): entry for agent, entry_id, entry in entries}
        entries = [(agent, entry_id, entry) for (agent, entry_id), entry in unique.items()]
        if not entries:
            return 0
        by_agent: dict[str, list[bytes | str]] = defaultdict(list)
        ranked: dict[str, int] = {}
        # Global order: insertion time in µs (exact in a double), strictly increasing
        # within this process so a batch never interleaves with the previous one.
        base = max(time.time_ns() // 1000, self._last_score + 1)
        self._last_score = base + len(entries) - 1
        for i, (agent_id, entry_id, entry) in enumerate(entries):
            by_agent[agent_id] += [entry_id, orjson.dumps(entry)]
            ranked[f"{self._entry_prefix(agent_id)}{entry_id}"] = base + i
        horizon = str(base - self.ttl_s * 1_000_000)

        def queue(pipe: Any) -> None:
            for agent_id, args in by_agent.items():
                self._put(
                    keys=[self._agent_index(agent_id), f"{self.prefix}:m:{{{agent_id}}}:n"],
                    args=[self.ttl_s, self._entry_prefix(agent_id), *args], client=pipe,
                )
            pipe.zadd(self._index, ranked, nx=True)
            for agent_id, entry_id, _ in entries:
                subject = subjects.get(entry_id) if subjects else None
                if subject is None:
                    continue
                key = f"{self._entry_prefix(agent_id)}{entry_id}"
                index = self._subject_index(subject)
                pipe.zadd(index, {key: ranked[key]}, nx=True)
                pipe.zremrangebyscore(index, "-inf", horizon)  # members past the TTL are gone
                pipe.expire(index, self.ttl_s)

        done = execute_scripted(self.r, queue, [self._put])
        new = sum(int(n) for n in done[: len(by_agent)])
        self.evict()
        return new

    def _entry_prefix(self, agent_id: str) -> str:
        return f"{self.prefix}:m:{{{agent_id}}}:e:"

    def remember(self, agent_id: str, entry_id: str, entry: Mapping[str, Any]) -> None:
        """Store one entry of an agent's recent context."""
        self.remember_many([(agent_id, entry_id, entry)])

    def forget(self, subject_id: str) -> int:
        """Delete every entry of events naming ``subject_id``; returns how many existed."""
        index = self._subject_index(subject_id)
        members = cast(list[bytes | str], self.r.zrange(index, 0, -1))
        keys = [k.decode() if isinstance(k, bytes) else k for k in members]
        pipe = self.r.pipeline(transaction=False)
        for key in keys:  # one key at a time: entries live in their agents' slots
            pipe.delete(key)
            pipe.zrem(self._agent_index(key[key.index("{") + 1 : key.index("}")]), key)
            pipe.zrem(self._index, key)
        pipe.delete(index)
        return sum(int(n) for n in pipe.execute()[0:3 * len(keys):3])

    def evict(self) -> int:
        """Drop the oldest entries beyond ``max_entries`` and index rows of expired ones."""
        horizon_us = time.time_ns() // 1000 - self.ttl_s * 1_000_000
        self.r.zremrangebyscore(self._index, "-inf", horizon_us)
        over = int(self.r.zcard(self._index)) - self.max_entries
        if over <= 0:
            return 0
        victims = cast(list[tuple[bytes | str, float]], self.r.zpopmin(self._index, over))
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
        keys = cast(list[bytes], self.r.zrevrange(self._agent_index(agent_id), 0, n - 1))
        if not keys:
            return []
        raw = self.r.mget(keys)
        return [orjson.loads(v) for v in raw if v is not None]

    def size(self) -> int:
        """Entries currently indexed (all agents)."""
        return int(self.r.zcard(self._index))
