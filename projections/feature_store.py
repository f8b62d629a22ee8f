"""The online feature store in Redis, applied exactly once per event.

The broker cannot do transactions (docs/broker.md), so exactly-once *effect*
comes from the projection itself: each entity's hash holds, next to its
counters, the highest sequence applied per producer identity
(``seq:producer_id:epoch:stream``), a set holds the sequences skipped so far
(holes: lost, or late), and a sorted set the recent ids of unsequenced events
(other client libraries); one Lua script checks and updates all of them
atomically with the counters. A redelivered event (after a crash, a
rebalance, a broker restart, or two workers briefly owning a partition) or
one the SDK re-sent after an outage is recognised by identity and skipped;
offsets and clocks are never compared (docs/exactly-once.md). A producer's
stream can feed several entities (one vision agent, two cameras), so an
entity sees holes that belong to another: holes are only remembered (the
newest ``MAX_ENTITY_HOLES``, so a late arrival is still recognised) and never
counted here. Gaps are counted where a producer's whole stream is seen: the
learning shard of its partition (``projections.learning``).

Keys carry the entity in a hash tag (``sl:f:{agent:x}``) so one entity's
hash and its window hashes live in one Redis Cluster slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from projections.base import Sourced
from projections.features import WINDOW_S, deltas, values, window_start
from projections.redis_client import RedisClient, execute_scripted
from projections.watermarks import RECENT_IDS, identity_key

# KEYS: the entity hash, its sequence holes, its recent unsequenced ids (sorted sets
# in arrival order, trimmed to the newest ARGV[5] / ARGV[4]).
# ARGV: window key prefix, window TTL, JSON rows, recent ids to keep, holes to keep.
# A row: [window start, event time µs, deltas, identity ('' if unsequenced), seq or id].
_APPLY = """
local evs = cjson.decode(ARGV[3])
local applied, asof, ided, holed = 0, nil, false, false
local base, wins, last = {}, {}, {}
for _, e in ipairs(evs) do
  local fresh = false
  if e[4] ~= '' then
    local f = 'seq:' .. e[4]
    if last[f] == nil then last[f] = tonumber(redis.call('HGET', KEYS[1], f) or '-1') end
    local s = e[5]
    if s > last[f] then
      fresh = true
      local first = math.max(last[f] + 1, s - tonumber(ARGV[5]))
      for m = first, s - 1 do
        redis.call('ZADD', KEYS[2], redis.call('HINCRBY', KEYS[1], 'holes', 1), e[4] .. '#' .. m)
        holed = true
      end
      last[f] = s
    elseif redis.call('ZREM', KEYS[2], e[4] .. '#' .. s) == 1 then
      fresh = true
    end
  elseif redis.call('ZSCORE', KEYS[3], e[5]) == false then
    fresh = true
    ided = true
    redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'ids', 1), e[5])
  end
  if fresh then
    applied = applied + 1
    local w = wins[e[1]] or {}
    for k, v in pairs(e[3]) do
      base[k] = (base[k] or 0) + v
      w[k] = (w[k] or 0) + v
    end
    wins[e[1]] = w
    if asof == nil or e[2] > asof then asof = e[2] end
  end
end
for f, s in pairs(last) do redis.call('HSET', KEYS[1], f, string.format('%d', s)) end
if holed then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1) end
if ided then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[4]) - 1) end
if applied == 0 then return 0 end
for k, v in pairs(base) do redis.call('HINCRBYFLOAT', KEYS[1], k, v) end
for ws, w in pairs(wins) do
  local wk = ARGV[1] .. string.format('%d', ws)
  for k, v in pairs(w) do redis.call('HINCRBYFLOAT', wk, k, v) end
  redis.call('EXPIRE', wk, ARGV[2])
end
local cur = tonumber(redis.call('HGET', KEYS[1], 'as_of_us') or '0')
if asof > cur then redis.call('HSET', KEYS[1], 'as_of_us', string.format('%d', asof)) end
redis.call('HINCRBY', KEYS[1], 'version', applied)
return applied
"""

MAX_ENTITY_HOLES = 10_000  # per entity: holes remembered for late arrivals
_META = ("version", "as_of_us", "holes", "ids")
__all__ = ["FeatureRow", "OnlineFeatureStore", "Sourced", "feature_key", "parse_counters"]


@dataclass(frozen=True)
class FeatureRow:
    """What an agent reads: feature values, counters, and the event-time version."""

    entity: str
    values: dict[str, float]
    counters: dict[str, float]
    version: int
    as_of_us: int


def feature_key(prefix: str, entity: str) -> str:
    """Redis key of an entity's feature hash (hash tag = entity, for Redis Cluster)."""
    return f"{prefix}:f:{{{entity}}}"


def parse_counters(raw: dict[Any, Any]) -> dict[str, float]:
    """Counters from a feature hash as read from Redis (bookkeeping fields dropped)."""
    out = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        if name.startswith(("seq:", "off:", "id:")) or name in _META:
            continue
        out[name] = float(v)
    return out


class OnlineFeatureStore:
    """Feature counters per entity in Redis hashes, windowed by event time."""

    def __init__(
        self, client: RedisClient, prefix: str = "sl", window_s: int = WINDOW_S,
        window_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.window_s = window_s
        self.window_ttl_s = window_ttl_s
        self._script = client.register_script(_APPLY)

    def key(self, entity: str) -> str:
        return feature_key(self.prefix, entity)

    def apply(self, batch: Iterable[Sourced]) -> int:
        """Apply a batch of sourced events; returns how many were new (not replays)."""
        groups: dict[str, list[list[Any]]] = defaultdict(list)
        for _topic, _partition, _offset, event in batch:
            hit = deltas(event)
            if hit is None:
                continue
            entity, d = hit
            ts_us = int(event.occurred_at.timestamp() * 1_000_000)
            ident = identity_key(event)
            groups[entity].append(
                [window_start(event, self.window_s), ts_us, d, ident or "",
                 event.sequence if ident is not None else event.event_id.hex]
            )
        if not groups:
            return 0

        def queue(pipe: Any) -> None:
            for entity, rows in groups.items():
                key = self.key(entity)
                self._script(
                    keys=[key, f"{key}:holes", f"{key}:ids"],
                    args=[f"{key}:w:", self.window_ttl_s, orjson.dumps(rows), RECENT_IDS,
                          MAX_ENTITY_HOLES],
                    client=pipe,
                )

        return int(sum(execute_scripted(self.r, queue, [self._script])))

    def get(self, entity: str) -> FeatureRow | None:
        """All-time features of one entity, or None if it has none yet."""
        raw = self.r.hgetall(self.key(entity))
        return self._row(entity, raw) if raw else None

    def window(self, entity: str, start: int) -> dict[str, float]:
        """Feature values of the tumbling window starting at ``start`` (epoch s)."""
        raw = self.r.hgetall(f"{self.key(entity)}:w:{start}")
        return values(parse_counters(raw))

    def entities(self) -> list[str]:
        """Every entity with features (SCAN, for dashboards and tests)."""
        out = []
        for k in self.r.scan_iter(match=f"{self.prefix}:f:{{*}}", count=1000):
            name = k.decode() if isinstance(k, bytes) else k
            if not name.endswith("}"):
                continue
            out.append(name[len(self.prefix) + 4 : -1])
        return sorted(out)


    def _row(self, entity: str, raw: dict[Any, Any]) -> FeatureRow:
        meta = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        counters = parse_counters(raw)
        return FeatureRow(
            entity=entity, values=values(counters), counters=counters,
            version=int(meta.get("version", 0)), as_of_us=int(meta.get("as_of_us", 0)),
        )
