"""The fleet at a glance: live policy per agent, dead letters, worker lag per partition.

Shown by ``selflearn fleet`` and at the end of ``selflearn status``.

>>> intake_group("selflearn")
'selflearn-projections'
"""

from __future__ import annotations

import asyncio
from typing import Any

from ops.usecases.common import policy_summary, redis_client
from schemas.catalog import intake_group


async def broker_view(settings: Any, bootstrap: str) -> dict[str, Any]:
    """Dead letters on ``<prefix>.dlq`` and worker lag per partition (committed vs end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.catalog import DEAD_LETTER, STREAMS, topic_name

    tls = settings.kafka_ssl_context()
    extra = {"security_protocol": "SSL", "ssl_context": tls} if tls else {}
    group = intake_group(settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, request_timeout_ms=10_000, **extra)
    await consumer.start()
    try:
        topics = await consumer.topics()
        dlq = topic_name(settings.topic_prefix, DEAD_LETTER)
        parts = {t: sorted(consumer.partitions_for_topic(t) or ())
                 for t in [topic_name(settings.topic_prefix, s) for s in STREAMS] + [dlq]
                 if t in topics}
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        committed: dict[Any, int | None] = {}
        lag_error = None
        for tp in tps:  # committed first, ends after: so lag is never negative
            if tp.topic == dlq:
                continue
            try:
                committed[tp] = await consumer.committed(tp)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                lag_error = f"committed offsets unavailable: {type(exc).__name__}: {exc}"
                break
        ends = await consumer.end_offsets(tps) if tps else {}
        starts = await consumer.beginning_offsets(tps) if tps else {}
        ends = await _true_ends(bootstrap, extra, ends, starts)
        dead = sum(ends[tp] - starts[tp] for tp in tps if tp.topic == dlq)
        lag = [{"topic": tp.topic, "partition": tp.partition, "end": ends[tp], "committed": c,
                "lag": ends[tp] - (c if c is not None else starts[tp])}
               for tp, c in committed.items()]
        return {"group": group, "dead_letters": dead if dlq in parts else 0,
                "lag": None if lag_error else lag, "lag_error": lag_error,
                "total_lag": None if lag_error else sum(x["lag"] for x in lag)}
    finally:
        await consumer.stop()


async def _true_ends(bootstrap: str, extra: dict[str, Any], ends: dict[Any, int],
                     starts: dict[Any, int]) -> dict[Any, int]:
    """End offsets checked by reading: Tansu's ListOffsets(latest) says base offset + 1
    of the partition's last record batch, short of the real end by the rest of that batch."""
    from aiokafka import AIOKafkaConsumer

    todo = [tp for tp, end in ends.items() if end > starts[tp]]
    out = dict(ends)
    if not todo:
        return out
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False, request_timeout_ms=10_000, **extra)
    await reader.start()
    try:
        reader.assign(todo)
        for tp in todo:
            reader.seek(tp, ends[tp] - 1)
        for _ in range(50):  # a busy partition keeps growing: a bounded look is enough
            batch = await reader.getmany(*todo, timeout_ms=300, max_records=100_000)
            if not any(batch.values()):
                break
            for tp, messages in batch.items():
                if messages:
                    out[tp] = max(out[tp], messages[-1].offset + 1)
        return out
    finally:
        await reader.stop()


def fleet_report(settings: Any, addresses: Any) -> dict[str, Any]:
    """Per agent: live policy from Redis; dead letters; worker lag per partition."""
    from projections.policy_store import PolicyStore

    store = PolicyStore(redis_client(addresses.redis_url), settings.topic_prefix)
    policies = {a: policy_summary(p) for a, p in store.all_policies().items()}
    gaps = store.gaps()
    try:
        broker = asyncio.run(asyncio.wait_for(
            broker_view(settings, addresses.kafka_bootstrap), timeout=30))
    except Exception as exc:  # noqa: BLE001 - show what we have
        broker = {"error": f"{type(exc).__name__}: {exc}", "dead_letters": None, "lag": None,
                  "lag_error": "broker unreachable", "total_lag": None}
    # A gap is a producer sequence number that never arrived: a lost event.
    return {"prefix": settings.topic_prefix, "agents": policies, "lost_events": sum(gaps.values()),
            "gaps_by_partition": gaps, **broker}
