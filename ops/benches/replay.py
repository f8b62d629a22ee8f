"""Benchmark: replay from the archive into a fresh feature projection.

``python -m ops.benches.replay`` prints one JSON object::

    events_per_s         median over runs: archived events read back (server-side
                         cursor, every type, decoded to Envelopes) and applied to an
                         in-memory feature projection (projections.features.reference)
    runs_events_per_s    each run
    redis_events_per_s   same, applied to a fresh OnlineFeatureStore in Redis
                         (rebuild_features), one run
    feature_only_events_per_s  archive events covered per second when only the
                         feature-bearing types are read (types= pushed into SQL)
    events               events in the archive

Targets: events_per_s >= 100 000. PostgreSQL and Redis come from
``SELFLEARN_DATABASE_URL`` / ``SELFLEARN_REDIS_URL`` or a private embedded stack.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ops.benches._common import running_stack
from ops.benches.archive import realistic_events, sourced


def run(n: int = 100_000, runs: int = 3) -> dict[str, Any]:
    """Archive ``n`` events once, then time ``runs`` full replays."""
    from projections.archive import EventArchive
    from projections.feature_store import OnlineFeatureStore
    from projections.features import reference
    from projections.redis_client import redis_client
    from projections.replay import AGENT_FEATURE_TYPES, read_events, rebuild_features

    events = sourced(realistic_events(n, start=datetime(2025, 3, 1, tzinfo=UTC)))
    with running_stack(without=("kafka",)) as (_, addresses):
        dsn, redis_url = addresses.database_url, addresses.redis_url
        archive = EventArchive(dsn, table=f"bench_{uuid.uuid4().hex[:8]}")
        archive.ensure_schema()
        for i in range(0, n, 5_000):
            archive.write(events[i:i + 5_000])
        try:
            rates = []
            for _ in range(runs):
                started = time.perf_counter()
                totals = reference(read_events(archive))
                rates.append(n / (time.perf_counter() - started))
            started = time.perf_counter()
            reference(read_events(archive, types=AGENT_FEATURE_TYPES))
            feature_only = n / (time.perf_counter() - started)
            client = redis_client(redis_url)
            store = OnlineFeatureStore(client, prefix=f"bench-{uuid.uuid4().hex[:8]}")
            started = time.perf_counter()
            rebuild_features(read_events(archive), store)
            redis_rate = n / (time.perf_counter() - started)
            rebuilt = {e: store.get(e).counters for e in store.entities()}  # type: ignore[union-attr]
            keys = list(client.scan_iter(match=f"{store.prefix}:*", count=1000))
            pipe = client.pipeline(transaction=False)
            for key in keys:  # one key a command: the keys span slots on a cluster
                pipe.delete(key)
            pipe.execute()
            if sorted(rebuilt) != sorted(totals):
                raise RuntimeError("the Redis rebuild and the in-memory one disagree")
        finally:
            with archive.connection() as conn:
                conn.execute(f"DROP TABLE {archive.table}, {archive.table}_cold")
                conn.commit()
            archive.close()
    return {
        "events_per_s": round(statistics.median(rates)),
        "runs_events_per_s": json.dumps([round(r) for r in rates]),
        "redis_events_per_s": round(redis_rate),
        "feature_only_events_per_s": round(feature_only),
        "events": n,
    }


if __name__ == "__main__":
    print(json.dumps(run()))
