"""What every reliability test shares: a private world, workers, and one checker.

The world (:class:`Lab`) and the checker (:func:`check`) live in
:mod:`ops.usecases.verify`, shared with ``selflearn bench soak``; the
private servers in :mod:`ops.stack.private`. Here: what only tests need.
"""

from __future__ import annotations

import psycopg

from ops.stack.private import PrivateBroker
from ops.usecases.verify import Lab, Verdict, check, expected_versions
from schemas import Envelope

__all__ = ["Lab", "PrivateBroker", "Verdict", "check", "expected_versions", "explain"]


def explain(lab: Lab, sent: list[Envelope], limit: int = 5) -> str:
    """For a failed verdict: where the events missing from the archive sit in the broker.

    Lists up to ``limit`` of them with every (topic, partition, offset) holding
    their id, and the group's committed offsets of those partitions.
    """
    import asyncio

    import orjson

    from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
    from tests.kafka_util import read_topic

    ids = {str(ev.event_id): ev for ev in sent}
    with psycopg.connect(lab.addresses.database_url) as conn:
        found = {str(r[0]) for r in conn.execute(
            "SELECT event_id FROM events WHERE event_id = ANY(%s)", (list(ids),))}
    missing = [i for i in ids if i not in found][:limit]
    if not missing:
        return "archive complete"
    where: dict[str, list[tuple[str, int, int]]] = {i: [] for i in missing}
    logs: dict[tuple[str, int], list[int]] = {}  # offsets as read back, per partition
    for stream in STREAMS:
        topic = topic_name(lab.prefix, stream)
        for part, off, value in read_topic(lab.addresses.kafka_bootstrap, topic,
                                           until=lambda got: False, timeout=5):
            logs.setdefault((stream, part), []).append(off)
            try:
                record = orjson.loads(value or b"{}")
            except orjson.JSONDecodeError:
                continue
            eid = record.get("event_id") if isinstance(record, dict) else None
            if isinstance(eid, str) and eid in where:
                where[eid].append((stream, part, off))
    # A broker that gave two records one offset, or skipped offsets, shows here.
    odd = {f"{s}:{p}": {"records": len(offs), "distinct_offsets": len(set(offs)),
                        "max_offset": max(offs)}
           for (s, p), offs in logs.items()
           if len(set(offs)) != len(offs) or max(offs) + 1 != len(offs)}

    dead = []
    for _, _, value in read_topic(lab.addresses.kafka_bootstrap,
                                  topic_name(lab.prefix, DEAD_LETTER),
                                  until=lambda got: False, timeout=3):
        record = orjson.loads(value or b"{}")
        if any(eid in str(record.get("raw")) for eid in missing):
            dead.append({k: record.get(k) for k in ("reason", "error", "topic", "offset")})

    async def committed() -> dict[str, int | None]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=lab.addresses.kafka_bootstrap,
                                    group_id=f"{lab.prefix}-projections",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out: dict[str, int | None] = {}
            for topic, part in sorted({(t, p) for places in where.values()
                                       for t, p, _ in places}):
                tp = TopicPartition(topic_name(lab.prefix, topic), part)
                out[f"{topic}:{part}"] = await consumer.committed(tp)
            return out
        finally:
            await consumer.stop()

    try:
        offsets: object = asyncio.run(committed())
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the verdict
        offsets = repr(exc)
    lines = []
    for eid in missing:
        ev = ids[eid]
        lines.append(f"{eid} {ev.type} {ev.producer} seq={ev.sequence} at {where[eid]}")
    lines.append(f"committed now: {offsets}")
    lines.append(f"partitions with repeated or missing offsets: {odd}")
    lines.append(f"dead-lettered: {dead}")
    return "\n".join(lines)
