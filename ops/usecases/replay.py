"""Replay: read events back in event-time order; rebuild the features and compare.

Events come from the archive (PostgreSQL) or from the broker's retained
topics. Rebuilding writes the features into a fresh Redis prefix and
compares every replayed entity with the live projection.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ops.usecases.common import open_archive, redis_client

SOURCES = ("archive", "broker")


class RebuildRefused(ValueError):
    """The rebuild would write into live or already used features; nothing was written."""


def replay(settings: Any, addresses: Any, *, source: str = "archive",
           since: datetime | None = None, until: datetime | None = None,
           agent: str | None = None, types: list[str] | None = None,
           into: str | None = None, prefix: str | None = None) -> dict[str, Any]:
    """Read the selected events; with ``into="features"`` rebuild them under ``prefix``.

    Returns ``{"source", "events", "by_type", "seconds"}`` and, when rebuilding,
    the comparison of :func:`rebuild_and_compare`. Raises
    :class:`projections.archive.ArchiveUnavailable` (archive source) and
    :class:`RebuildRefused`.
    """
    from projections.replay import read_broker, read_events
    from schemas.catalog import STREAMS, topic_name

    began = time.monotonic()
    if source == "archive":
        events = read_events(open_archive(addresses), since=since, until=until,
                             producer=agent, types=types)
    else:
        topics = [topic_name(settings.topic_prefix, s) for s in STREAMS]
        events = read_broker(addresses.kafka_bootstrap, topics, since=since, until=until,
                             producer=agent, types=types)
    by_type: Counter[str] = Counter()

    def counted() -> Iterator[Any]:
        for ev in events:
            by_type[ev.type] += 1
            yield ev

    report: dict[str, Any] = {"source": source}
    if into == "features":
        report.update(rebuild_and_compare(settings, addresses, counted(), prefix))
    else:
        for _ in counted():
            pass
    report.update(events=sum(by_type.values()), by_type=dict(sorted(by_type.items())),
                  seconds=round(time.monotonic() - began, 3))
    return report


def rebuild_and_compare(settings: Any, addresses: Any, events: Iterable[Any],
                        prefix: str | None) -> dict[str, Any]:
    """Rebuild features into a fresh prefix and compare every entity with the live store."""
    from projections.feature_store import OnlineFeatureStore
    from projections.replay import rebuild_features

    r = redis_client(addresses.redis_url)
    prefix = prefix or f"{settings.topic_prefix}-replay-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if prefix == settings.topic_prefix:
        raise RebuildRefused(
            "--prefix must differ from the live topic prefix (it would double-count)")
    fresh = OnlineFeatureStore(r, prefix=prefix)
    if fresh.entities():
        raise RebuildRefused(
            f"Redis prefix {prefix!r} already holds features; choose a fresh --prefix")
    applied = rebuild_features(events, fresh)
    live = OnlineFeatureStore(r, prefix=settings.topic_prefix)
    mine, theirs = set(fresh.entities()), set(live.entities())
    equal, different = 0, []
    for entity in sorted(mine):
        a, b = fresh.get(entity), live.get(entity)
        va, vb = (a.values if a else {}), (b.values if b else {})
        if va.keys() == vb.keys() and all(
                math.isclose(va[k], vb[k], rel_tol=1e-9, abs_tol=1e-12) for k in va):
            equal += 1
        else:
            different.append({"entity": entity, "replay": va, "live": vb})
    return {"prefix": prefix, "applied": applied, "entities": len(mine),
            "equal": equal, "different": different,
            "only_replay": sorted(mine - theirs), "only_live": sorted(theirs - mine)}
