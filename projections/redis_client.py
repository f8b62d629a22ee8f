"""The one place a Redis client is made: a single server, or Redis Cluster by URL scheme.

``redis://`` / ``rediss://`` / ``unix://`` give a ``redis.Redis``;
``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) gives a
``redis.cluster.RedisCluster`` that discovers the other nodes from that one.

Every key layout here keeps the keys of one Lua call in one hash slot (the
entity or agent is the hash tag), and the few single keys (the global memory
index, the gaps hash) are touched by one command at a time, so the same
projections run on both. Two things differ and are handled here:

- a cluster pipeline cannot load scripts before it runs them, so
  :func:`execute_scripted` loads them on every primary and runs the pipeline
  again when a node answers NOSCRIPT (a node restarted, or a replica just
  promoted, has an empty script cache; the scripts are idempotent);
- a failover answers with cluster errors, not only connection errors;
  :data:`TRANSIENT_ERRORS` is what "Redis is away, retry" means for both.

>>> is_cluster_url("redis+cluster://127.0.0.1:7000"), is_cluster_url("redis://r:6379/0")
(True, False)
>>> plain_url("rediss+cluster://r:7000?ssl_cert_reqs=required")
'rediss://r:7000?ssl_cert_reqs=required'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

log = logging.getLogger(__name__)

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
    SlotNotCoveredError, RedisClusterUnreachableError,  # a failover under way
)


def is_cluster_url(url: str) -> bool:
    """True when ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def plain_url(url: str) -> str:
    """``url`` with the ``+cluster`` marker removed (the form redis-py parses)."""
    return url.replace("+cluster://", "://", 1) if is_cluster_url(url) else url


def redis_client(url: str, **kwargs: Any) -> Any:
    """A client for ``url``: ``RedisCluster`` for a cluster scheme, else ``redis.Redis``.

    Keyword arguments (timeouts, TLS files) go to either. A cluster client
    asks its startup node for the slot map when made, so it raises when no
    node answers; a single-server client connects on first use.
    """
    if is_cluster_url(url):
        kwargs.pop("db", None)  # a cluster has database 0 only
        return RedisCluster.from_url(plain_url(url), **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def execute_scripted(client: Any, queue: Callable[[Any], None],
                     scripts: Sequence[Script]) -> list[Any]:
    """Run a non-transactional pipeline that ``queue`` fills, scripts loaded where needed.

    A plain pipeline loads its scripts itself. A cluster pipeline sends
    EVALSHA only: on NOSCRIPT every script is loaded on every primary and
    the whole pipeline runs again (its commands must be safe to repeat).
    """
    for attempt in range(3):
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if not is_cluster(client) or attempt == 2:
                raise
            log.info("a Redis node lacks the scripts (restarted or promoted); loading them")
            for script in scripts:
                script.sha = client.script_load(script.script)
    raise AssertionError("unreachable")


def wait_for_replicas(client: Any, replicas: int, timeout_ms: int,
                      tag: str = "selflearn") -> bool:
    """Block until every write made so far reached ``replicas`` replicas of its primary.

    Redis ``WAIT`` only covers the writes of the connection it runs on, and a
    pool hands out any connection; so on each primary this writes a small
    marker key in its own slots and runs ``WAIT`` on that same connection:
    the replication stream is ordered, so every earlier write is covered.
    True when each primary answered with at least ``replicas`` acks.
    """
    if replicas <= 0:
        return True
    if not is_cluster(client):
        return _marker_and_wait(client, f"{tag}:replicated", replicas, timeout_ms)
    primaries = {n.name: n for n in client.get_primaries()}
    owner = {name: _key_on(client, node, tag) for name, node in primaries.items()}
    return all(_marker_and_wait(client.get_redis_connection(primaries[name]), key,
                                replicas, timeout_ms) for name, key in owner.items())


def _key_on(client: RedisCluster, node: ClusterNode, tag: str) -> str:
    """A key whose slot ``node`` serves (a few tries: the slots split into a few ranges)."""
    for i in range(100_000):
        key = f"{tag}:replicated:{{{i}}}"
        if client.get_node_from_key(key).name == node.name:
            return key
    raise RedisClusterException(f"no slot of {node.name} found")


def _marker_and_wait(node: redis.Redis, key: str, replicas: int, timeout_ms: int) -> bool:
    pipe = node.pipeline(transaction=False)  # one connection for both commands
    pipe.incr(key)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    acked = int(pipe.execute()[1])
    if acked < replicas:
        log.warning("%d of %d Redis replica(s) acknowledged within %d ms", acked, replicas,
                    timeout_ms)
    return acked >= replicas
