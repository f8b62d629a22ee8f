"""Operator overrides: promote or roll back an agent now, with an audit record.

The command travels as an ``operator.command`` event on the control topic,
keyed by the agent id like the SDK keys its events (so it lands in the
agent's partition and is applied in order by the worker's promotion
projection); the live policy in Redis is then polled until its revision
moves. A refused command shows up as a ``model.evaluated`` event caused by
the command.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ops.usecases.common import open_archive, policy_summary, redis_client

WAIT_S = 30.0


async def send_keyed(settings: Any, bootstrap: str, topic: str, key: bytes,
                     value: bytes) -> None:
    """Produce one record keyed like the SDK does (so it lands in the agent's partition)."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics

    tls = settings.kafka_ssl_context()
    extra = {"security_protocol": "SSL", "ssl_context": tls} if tls else {}
    await ensure_topics(bootstrap, [topic], settings.partitions, tls)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=10_000, **extra)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def send_command(settings: Any, agent_id: str, action: str, reason: str,
                 challenger: str | None = None, wait_s: float = WAIT_S) -> dict[str, Any]:
    """Emit ``operator.command`` keyed by ``agent_id``; wait for the live policy to change.

    The caller is authorized for ``action`` on ``agent_id`` first (a check the
    CLI already made is not audited twice) and their name goes into the event's
    ``operator`` field: the worker applies any command on the control topic and
    trusts that field (docs/access.md), so the check happens here, where the
    event is created.

    Returns ``{"command", "operator", "before", "after", "seconds"}``; raises
    :class:`ops.access.Denied`, TimeoutError (or RuntimeError when the worker
    refused the command). Raises
    :class:`schemas.addresses.StackNotRunning` when a server is not known and
    :class:`projections.archive.ArchiveUnavailable` when PostgreSQL does not answer.
    """
    from ops.access import authorize
    from projections.policy_store import PolicyStore
    from schemas import encode, new_event
    from schemas.addresses import resolve
    from schemas.catalog import topic_name

    operator = authorize(settings, action, agent_id, {"reason": reason, "challenger": challenger},
                         once=True).name
    addresses = resolve(settings)
    store = PolicyStore(redis_client(addresses.redis_url), settings.topic_prefix)
    before = store.get(agent_id)
    payload = {"agent_id": agent_id, "action": action, "operator": operator, "reason": reason}
    if challenger:
        payload["challenger"] = challenger
    event = new_event("operator.command", payload, producer=f"operator:{operator}",
                      subject_id=None)
    began = time.monotonic()
    asyncio.run(send_keyed(settings, addresses.kafka_bootstrap,
                           topic_name(settings.topic_prefix, "control"),
                           agent_id.encode(), encode(event)))
    start_rev = before.revision if before else -1
    archive = None
    deadline = began + wait_s
    while time.monotonic() < deadline:
        after = store.get(agent_id)
        if after is not None and after.revision > start_rev:
            return {"command": str(event.event_id), "operator": operator,
                    "before": policy_summary(before),
                    "after": policy_summary(after), "seconds": round(time.monotonic() - began, 3)}
        archive = archive or open_archive(addresses)
        if refused(archive, str(event.event_id)):
            raise RuntimeError(f"the worker refused {action} of {agent_id} (command "
                               f"{event.event_id}); its log says why (e.g. log-only agent, "
                               "unknown challenger, nothing to roll back)")
        time.sleep(0.25)
    raise TimeoutError(f"no new live policy for {agent_id} within {wait_s:.0f} s after command "
                       f"{event.event_id}: is a worker running (`selflearn worker`), and is "
                       f"it caught up (`selflearn fleet`)?")


def refused(archive: Any, command_id: str) -> bool:
    """Whether the worker answered command ``command_id`` with a refusal."""
    from projections import archive_sql as q

    stmt = q.sql.SQL("SELECT 1 FROM {t} WHERE type = 'model.evaluated' AND causation_id = %s "
                     "LIMIT 1").format(t=q.ident(archive.table))
    with archive.connection() as conn:
        hit = conn.execute(stmt, (command_id,)).fetchone()
        conn.commit()
    return hit is not None
