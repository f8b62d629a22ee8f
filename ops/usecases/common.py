"""Small helpers shared by the use cases (Redis client, archive, policy summary)."""

from __future__ import annotations

from typing import Any


def redis_client(url: str) -> Any:
    """A Redis client with bounded timeouts (an operator command never hangs on Redis)."""
    from projections import redis_client as factory

    return factory.redis_client(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def open_archive(addresses: Any) -> Any:
    """The event archive at ``addresses.database_url``, schema ensured.

    Raises :class:`projections.archive.ArchiveUnavailable` when PostgreSQL does not answer.
    """
    from projections.archive import EventArchive

    archive = EventArchive(addresses.database_url)
    archive.ensure_schema()
    return archive


def policy_summary(pol: Any) -> dict[str, Any] | None:
    """A live policy as a flat dict for tables and JSON (``None`` stays ``None``).

    >>> from schemas.policy import LivePolicy, ModelRef
    >>> policy_summary(LivePolicy("a", "task_estimate", "live", ModelRef("knn", 2),
    ...     ModelRef("ridge", 1), canary_percent=5, revision=3))  # doctest: +NORMALIZE_WHITESPACE
    {'mode': 'live', 'canary_percent': 5, 'champion': 'knn:2', 'challenger': 'ridge:1',
     'revision': 3}
    >>> policy_summary(None) is None
    True
    """
    if pol is None:
        return None
    return {"mode": pol.mode, "canary_percent": pol.canary_percent,
            "champion": f"{pol.champion.name}:{pol.champion.version}",
            "challenger": (f"{pol.challenger.name}:{pol.challenger.version}"
                           if pol.challenger else None), "revision": pol.revision}
