"""Where the report's inputs come from: archive (or broker), Redis, the dead-letter topic.

:func:`gather` reads every source and turns a failing one into a note on the
page instead of an error.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from ops.report.collect import REPORT_TYPES as COLLECTED
from ops.report.served import SERVED_TYPES
from schemas import Envelope
from schemas.policy import LivePolicy

REPORT_TYPES = tuple(dict.fromkeys((*COLLECTED, *SERVED_TYPES)))  # each type once


def load_from_archive(database_url: str, since: datetime | None = None, *,
                      cold_uri: str | None = None) -> list[Envelope]:
    """Report events from the PostgreSQL archive (and its cold store), in event-time order."""
    from projections.archive import EventArchive
    from projections.archive_cold import ColdStore
    from projections.replay import read_events

    archive = EventArchive(database_url, cold=ColdStore(cold_uri) if cold_uri else None)
    try:
        return list(read_events(archive, since=since, types=REPORT_TYPES))
    finally:
        archive.close()


def load_from_broker(bootstrap: str, topic_prefix: str, since: datetime | None = None, *,
                     timeout: float = 30.0) -> list[Envelope]:
    """Report events still retained on the broker's topics (the fallback without an archive)."""
    from projections.replay import read_broker
    from schemas.catalog import STREAMS, topic_name

    topics = [topic_name(topic_prefix, s) for s in STREAMS]
    return list(read_broker(bootstrap, topics, since=since, types=REPORT_TYPES,
                            timeout=timeout))


def load_dead_letters(bootstrap: str, topic_prefix: str, *, timeout: float = 30.0
                      ) -> dict[str, int]:
    """Dead-letter record counts by ``reason``, read from ``<prefix>.dlq``."""
    import asyncio

    from projections.replay import _consume
    from schemas.catalog import DEAD_LETTER, topic_name
    from schemas.deadletter import parse_dead_letter

    counts: Counter[str] = Counter()
    for value in asyncio.run(_consume(bootstrap, [topic_name(topic_prefix, DEAD_LETTER)],
                                      timeout)):
        try:
            counts[str(parse_dead_letter(value or b"{}").get("reason", "unknown"))] += 1
        except ValueError:
            counts["unparseable dead letter"] += 1
    return dict(counts)


def load_policies(redis_url: str, prefix: str) -> dict[str, LivePolicy]:
    """Every live policy stored in Redis under ``prefix``."""
    import redis

    from projections.policy_store import PolicyStore

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return PolicyStore(client, prefix).all_policies()
    finally:
        client.close()


def gather(kafka_bootstrap: str, database_url: str, redis_url: str, prefix: str,
           since: datetime | None = None, cold_uri: str | None = None
           ) -> tuple[list[Envelope], dict[str, LivePolicy], dict[str, int], list[str]]:
    """Read every source; a source that fails is reported as a note, never raised."""
    notes: list[str] = []
    events: list[Envelope] = []
    try:
        events = load_from_archive(database_url, since, cold_uri=cold_uri)
    except Exception as exc:  # noqa: BLE001 - fall back to the broker and say so
        notes.append(f"archive unreadable ({exc}); events read from the broker instead")
        try:
            events = load_from_broker(kafka_bootstrap, prefix, since)
        except Exception as exc2:  # noqa: BLE001
            notes.append(f"broker unreadable too ({exc2}); no events shown")
    policies: dict[str, LivePolicy] = {}
    try:
        policies = load_policies(redis_url, prefix)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"Redis unreadable ({exc}); live policies not shown")
    dead: dict[str, int] = {}
    try:
        dead = load_dead_letters(kafka_bootstrap, prefix)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"dead-letter topic unreadable ({exc}); counts not shown")
    return events, policies, dead, notes
