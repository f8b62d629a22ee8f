"""The online feature store in Redis, applied exactly once per event.

The broker cannot do transactions (BROKER.md), so exactly-once *effect* comes
from the projection itself: each entity's hash holds, next to its counters,
the last source offset applied per topic partition and the highest event id
applied per producer, and one Lua script checks and updates all of them
atomically. A redelivered event (after a crash, a rebalance, or two workers
briefly owning a partition) finds its offset already applied; an event the
SDK re-sent after an outage (same id, new offset) finds its id already
applied — a producer's UUIDv7 ids increase in the order it emits them. Both
are skipped.

Keys carry the entity in a hash tag (``sl:f:{agent:x}``) so one entity's
hash and its window hashes live in one Redis Cluster slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from projections.features import WINDOW_S, deltas, values, window_start
from schemas import Envelope

_APPLY = """
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local evs = cjson.decode(ARGV[4])
local last, applied, asof = stored, 0, nil
local base, wins, maxid = {}, {}, {}
for _, e in ipairs(evs) do
  local idf = 'id:' .. e[5]
  if maxid[idf] == nil then maxid[idf] = redis.call('HGET', KEYS[1], idf) or '' end
  if e[1] > last and e[6] > maxid[idf] then
    last = e[1]
    maxid[idf] = e[6]
    applied = applied + 1
    local w = wins[e[2]] or {}
    for k, v in pairs(e[4]) do
      base[k] = (base[k] or 0) + v
      w[k] = (w[k] or 0) + v
    end
    wins[e[2]] = w
    if asof == nil or e[3] > asof then asof = e[3] end
  end
end
if applied == 0 then return 0 end
for k, v in pairs(base) do redis.call('HINCRBYFLOAT', KEYS[1], k, v) end
for ws, w in pairs(wins) do
  local wk = ARGV[2] .. string.format('%d', ws)
  for k, v in pairs(w) do redis.call('HINCRBYFLOAT', wk, k, v) end
  redis.call('EXPIRE', wk, ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', last))
for idf, id in pairs(maxid) do if id ~= '' then redis.call('HSET', KEYS[1], idf, id) end end
local cur = tonumber(redis.call('HGET', KEYS[1], 'as_of_us') or '0')
if asof > cur then redis.call('HSET', KEYS[1], 'as_of_us', string.format('%d', asof)) end
redis.call('HINCRBY', KEYS[1], 'version', applied)
return applied
"""

Sourced = tuple[str, int, int, Envelope]  # (topic, partition, offset, event)
_META = ("version", "as_of_us")


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
        if name.startswith(("off:", "id:")) or name in _META:
            continue
        out[name] = float(v)
    return out


class OnlineFeatureStore:
    """Feature counters per entity in Redis hashes, windowed by event time."""

    def __init__(
        self, client: redis.Redis, prefix: str = "sl", window_s: int = WINDOW_S,
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
        groups: dict[tuple[str, str, int], list[list[Any]]] = defaultdict(list)
        for topic, partition, offset, event in batch:
            hit = deltas(event)
            if hit is None:
                continue
            entity, d = hit
            ts_us = int(event.occurred_at.timestamp() * 1_000_000)
            groups[(entity, topic, partition)].append(
                [offset, window_start(event, self.window_s), ts_us, d, event.producer,
                 str(event.event_id)]
            )
        if not groups:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for (entity, topic, partition), rows in groups.items():
            key = self.key(entity)
            self._script(
                keys=[key],
                args=[f"off:{topic}:{partition}", f"{key}:w:", self.window_ttl_s,
                      orjson.dumps(rows)],
                client=pipe,
            )
        return int(sum(pipe.execute()))

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
