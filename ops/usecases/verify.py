"""One checker for every fault scenario, and the world it checks.

Jepsen-style: from the events a run *sent* (as the SDK or a foreign client
returned them) it recomputes what each projection must hold, reads what they
do hold, and reports per projection the events lost, duplicated and unseen
(applied but never sent) and the sequence gaps the projections counted. A
run is clean when all of them are zero. The reliability suite
(tests/reliability) and ``selflearn bench soak`` both judge with it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from agents.client import AgentClient
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready
from projections.feature_store import OnlineFeatureStore
from projections.features import deltas, reference
from projections.online import MEMORY_TYPES
from projections.policy_store import PolicyStore
from projections.redis_client import redis_client
from schemas import Envelope
from schemas.addresses import Addresses
from schemas.settings import Settings


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
          settle_s: float = 1.5, stall_s: float | None = None) -> Verdict:
    """Wait until the projections caught up with ``sent`` (or ``timeout``), then judge.

    Caught up: every feature entity applied its events and the archive holds
    every sent id (events that change no feature travel on partitions the
    features do not wait for). With ``stall_s``, also stop waiting once
    nothing moved for that long (what is missing then will not come).
    """
    r = redis_client(lab.addresses.redis_url)
    store = OnlineFeatureStore(r, prefix=lab.prefix)
    want = expected_versions(sent)
    ids = [ev.event_id for ev in sent]
    deadline = time.monotonic() + timeout
    progress, moved = None, time.monotonic()
    while time.monotonic() < deadline:
        now = {e: store.get(e) for e in want}
        stored = _archived(lab, ids)
        if all((row := now[e]) is not None and row.version >= n for e, n in want.items()) \
                and stored >= len(set(ids)):
            break
        seen = (stored, tuple(row.version if row else 0 for row in now.values()))
        if seen != progress:
            progress, moved = seen, time.monotonic()
        elif stall_s is not None and time.monotonic() - moved > stall_s:
            break
        time.sleep(0.5)
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


def _archived(lab: Lab, ids: list[uuid.UUID]) -> int:
    """Distinct ``ids`` in the archive now (0 while PostgreSQL does not answer)."""
    try:
        with psycopg.connect(lab.addresses.database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(DISTINCT event_id) FROM events "
                               "WHERE event_id = ANY(%s)", (ids,)).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0
