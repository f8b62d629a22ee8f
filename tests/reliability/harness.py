"""What every reliability test shares: a private world, workers, and one checker.

The checker is Jepsen-style: from the events a test *sent* (as the SDK or a
foreign client returned them) it recomputes what each projection must hold,
reads what they do hold, and reports per projection the events lost,
duplicated and unseen (applied but never sent) and the sequence gaps the
projections counted. A test passes when all of them are zero.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from agents.client import AgentClient
from ops.stack.processes import Spawned, free_port, port_open, stop
from ops.stack.servers import kafka_address, start_kafka
from ops.stack.workers import start_worker, wait_ready
from projections.feature_store import OnlineFeatureStore
from projections.features import deltas, reference
from projections.online import MEMORY_TYPES
from projections.policy_store import PolicyStore
from schemas import Envelope
from schemas.addresses import Addresses
from schemas.settings import Settings


class PrivateBroker:
    """A Tansu broker of one test on a fixed port: killable, and restartable empty."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: Spawned | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return kafka_address(self.port)

    def start(self) -> None:
        self.starts += 1
        self.proc = start_kafka(self.data_dir, self.port, self.data_dir / f"tansu{self.starts}.log")
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private broker did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        stop(self.proc.pid, self.proc.create_time, sig=9, timeout=10)
        self.proc = None


@dataclass
class Lab:
    """One test's own topic prefix and data folder on the given servers."""

    settings: Settings
    addresses: Addresses
    workers: list[Spawned] = field(default_factory=list)
    clients: list[AgentClient] = field(default_factory=list)

    @classmethod
    def create(cls, base: Settings, addresses: Addresses, data_dir: Path) -> Lab:
        prefix = f"{base.topic_prefix}-{uuid.uuid4().hex[:6]}"
        own = base.model_copy(update={"topic_prefix": prefix, "data_dir": data_dir})
        return cls(own, addresses)

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    def worker(self, name: str, *, ready: bool = True, **env: str) -> Spawned:
        log = self.settings.data_dir / f"{name}.log"
        w = start_worker(self.settings, self.addresses, log, SELFLEARN_CHECKPOINT_S="0.5", **env)
        self.workers.append(w)
        if ready:
            wait_ready(w.log)
        return w

    def client(self, agent_id: str, outbox: str | None = None, **kw: object) -> AgentClient:
        c = AgentClient(agent_id, bootstrap=self.addresses.kafka_bootstrap,
                        topic_prefix=self.prefix, partitions=self.settings.partitions,
                        outbox_path=self.settings.data_dir / (outbox or f"{agent_id}.db"),
                        **kw)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close(timeout=5)
        for w in self.workers:
            stop(w.pid, w.create_time, timeout=10)


@dataclass
class Verdict:
    """Per projection: events lost, duplicated and unseen; gaps the projections counted."""

    lost: dict[str, int]
    duplicated: dict[str, int]
    unseen: dict[str, int]
    gaps: int
    wrong_values: list[str]

    def clean(self) -> bool:
        return not (any(self.lost.values()) or any(self.duplicated.values())
                    or any(self.unseen.values()) or self.gaps or self.wrong_values)


def expected_versions(sent: Iterable[Envelope]) -> Counter[str]:
    """Events each feature entity must have applied."""
    return Counter(hit[0] for ev in sent if (hit := deltas(ev)) is not None)


def check(lab: Lab, sent: list[Envelope], *, timeout: float = 120.0,
          settle_s: float = 1.5) -> Verdict:
    """Wait until the projections caught up with ``sent`` (or ``timeout``), then judge."""
    r = redis.Redis.from_url(lab.addresses.redis_url)
    store = OnlineFeatureStore(r, prefix=lab.prefix)
    want = expected_versions(sent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {e: store.get(e) for e in want}
        if all((row := now[e]) is not None and row.version >= n for e, n in want.items()):
            break
        time.sleep(0.3)
    time.sleep(settle_s)  # anything applied twice would have landed by now
    lost: dict[str, int] = {}
    dup: dict[str, int] = {}
    unseen: dict[str, int] = {}
    wrong: list[str] = []
    # features: each entity's applied-event count and every counter, exactly
    got = {e: store.get(e) for e in want}
    applied = {e: row.version if row is not None else 0 for e, row in got.items()}
    lost["features"] = sum(max(0, n - applied[e]) for e, n in want.items())
    dup["features"] = sum(max(0, applied[e] - n) for e, n in want.items())
    unseen["features"] = len(set(store.entities()) - set(want))
    for entity, counters in reference(sent).items():
        row = got.get(entity)
        for k, v in counters.items():
            if row is None or abs(row.counters.get(k, 0.0) - v) > 1e-6 * max(1.0, abs(v)):
                wrong.append(f"{entity}.{k}")
    gaps = sum(PolicyStore(r, lab.prefix).gaps().values())
    # archive: every sent event id exactly once
    ids = [ev.event_id for ev in sent]
    with psycopg.connect(lab.addresses.database_url) as conn:
        rows = conn.execute("SELECT event_id, count(*) FROM events WHERE event_id = ANY(%s) "
                            "GROUP BY event_id", (ids,)).fetchall()
    archived = {eid: n for eid, n in rows}
    lost["archive"] = sum(1 for i in set(ids) if i not in archived)
    dup["archive"] = sum(n - 1 for n in archived.values())
    # short-term memory: every memory-type event is an entry (keyed by event id)
    mem = [ev for ev in sent if ev.type in MEMORY_TYPES]
    pipe = r.pipeline(transaction=False)
    for ev in mem:
        pipe.exists(f"{lab.prefix}:m:{{{ev.producer}}}:e:{ev.event_id}")
    lost["memory"] = sum(1 for present in pipe.execute() if not present)
    return Verdict(lost, dup, unseen, gaps, wrong)


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
