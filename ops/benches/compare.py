"""``selflearn bench compare``: our producer and consumer paths beside the libraries they wrap.

One run, one private stack (``running_stack``: embedded broker, Redis,
PostgreSQL in a temporary folder), one event shape: ``N`` ``task.completed``
envelopes from 8 agents (the payloads of ``bench pipeline``), each agent with
its own producer identity and dense sequence, encoded once before any clock
starts. The steps run one after another, never side by side:

- ``librdkafka_produce_per_s``: one ``confluent_kafka.Producer`` with the SDK's
  own settings (``agents.broker_link.producer_config``: ``acks=all``, one
  request in flight, ``linger.ms=5``, murmur2) produces the ``N`` pre-encoded
  envelopes, keyed by agent, to topic A; the clock stops when ``flush``
  returns (every event acknowledged). The same bytes then go, untimed, to
  topic B.
- ``sdk_drained_per_s``: 8 ``AgentClient``\\ s in this process (as ``bench
  emit``'s burst: scrubber off, a flushed warm-up of ``WARMUP`` events first)
  emit ``N`` events round-robin; the clock stops when every client's
  ``flush`` returned. They write to a third prefix nobody reads.
- ``confluent_consume_per_s`` / ``aiokafka_consume_per_s``: a bare
  ``confluent_kafka.Consumer`` (``consume`` of up to ``worker_batch``
  messages) and a bare ``AIOKafkaConsumer`` (``getmany`` with the batch
  intake's fetch settings) read topic A from its beginning, every partition
  assigned, no group join, nothing done with the values; timed from the
  first poll (connected already) to the ``N``-th message. Would a
  confluent-kafka consumer make the batch intake faster? Only by what these
  two differ by: reading is this small share of the intake's time.
- ``quix_fold_per_s``: Quix Streams 3.28.1 (``_quix_fold.py``, librdkafka
  consumer, RocksDB state, at-least-once, no changelog topics) folds the
  agent feature view's six counters per agent over topic A. Quix needs
  ``confluent-kafka<2.13`` and our venv has 2.16, so it runs as a subprocess
  in a venv of its own, made once under the configured data folder
  (``<data_dir>/bench-compare-venv``, ``pip install``, which needs PyPI).
  Without it the key is left out and ``quix_available`` is 0 (1 otherwise);
  the rest of the bench runs either way. Topics A and B are created with
  ``retention.ms`` in their config: Quix refuses a topic whose retention it
  cannot read, and Tansu reports only the settings a topic was created with
  (docs/broker.md).
- ``batch_intake_per_s``: a Faust worker (``ops.stack.workers.start_worker``,
  default ``SELFLEARN_INTAKE=batch``) started on prefix A, where the ``N``
  events already wait, applies them to the agent features in Redis (with
  de-duplication, windows, archive and learning, as always). Progress is the
  sum of the agents' feature versions (as ``bench pipeline`` reads it),
  sampled every 10 ms; as there, the clock stops when the last event's
  features are in Redis (a batch's memory, learning and archive follow its
  features).
- ``faust_stream_per_s``: the same with ``SELFLEARN_INTAKE=stream`` (Faust's
  own agent path) on prefix B.

Quix and both intakes are timed from the first event seen (sampled) to the
``N``-th, counting only the events after that first sample: start-up, group
join and the first fetch are left out.
``ratio_*`` keys divide two of the rates above (``ratio_librdkafka_to_sdk``:
how much faster the bare library produces than our SDK;
``ratio_quix_to_batch_intake``; ``ratio_batch_intake_to_faust_stream``;
``ratio_confluent_to_aiokafka_consume``). ``load_avg_1m_before`` /
``load_avg_1m_after``: the machine's 1-minute load average around the run
(these numbers move with it).

>>> len(_envelopes(16)), sorted({key for key, _ in _envelopes(16)})[:2]
(16, [b'agent-0', b'agent-1'])
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from agents.broker_link import producer_config
from agents.client import AgentClient
from ops.benches._common import running_stack
from ops.benches.pipeline import AGENTS, _applied, _payload
from ops.stack.processes import is_alive, stop
from ops.stack.workers import start_worker
from projections.feature_store import OnlineFeatureStore
from projections.redis_client import redis_client
from schemas import encode, new_event
from schemas.addresses import Addresses
from schemas.catalog import topic_name
from schemas.settings import Settings

log = logging.getLogger(__name__)

N = 80_000
WARMUP = 800  # SDK events before its clock starts: connections, metadata, caches
QUIX_VERSION = "3.28.1"
VENV = "bench-compare-venv"
RETENTION_MS = str(7 * 24 * 3600 * 1000)
APPLY_TIMEOUT_S = 300.0  # a worker that has not applied N by then has failed

Records = list[tuple[bytes, bytes]]  # (key, value)


def _envelopes(n: int) -> Records:
    """``n`` encoded ``task.completed`` envelopes, round-robin over the agents."""
    ids = {a: uuid.uuid4().hex for a in AGENTS}
    out = []
    for i in range(n // len(AGENTS)):
        for a in AGENTS:
            event = new_event("task.completed", _payload(a, i), producer=a, producer_id=ids[a],
                              producer_epoch=0, sequence=i)
            out.append((a.encode(), encode(event)))
    return out


class _Clock:
    """Rate of a read up to ``n`` events seen.

    ``from_first``: the clock starts at the first sample that saw events and
    counts only what came after it (start-up and group join left out);
    otherwise it starts now and counts everything.
    """

    def __init__(self, n: int, *, from_first: bool = True) -> None:
        self.n = n
        self.seen = 0
        self.from_first = from_first
        self.start = 0.0 if from_first else time.perf_counter()
        self.start_seen = 0
        self.end = 0.0

    def saw(self, total: int) -> bool:
        """Record that ``total`` events have been seen so far; True once all ``n`` were."""
        now = time.perf_counter()
        if self.from_first and total and not self.seen:
            self.start, self.start_seen = now, total
        self.seen = total
        if total >= self.n:
            self.end = now
        return total >= self.n

    @property
    def per_s(self) -> float:
        if self.end <= self.start:
            raise RuntimeError("bench compare: everything arrived in one sample; raise N")
        return (self.seen - self.start_seen) / (self.end - self.start)


def _create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures resolve
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                    config={"retention.ms": RETENTION_MS}) for t in topics]
    for future in admin.create_topics(new, request_timeout=15).values():
        future.result(timeout=30)


def _librdkafka_produce(bootstrap: str, topic: str, records: Records) -> float:
    from confluent_kafka import Producer

    producer = Producer(producer_config({"bootstrap.servers": bootstrap}, idempotent=False,
                                        queue_size=len(records) + 1, timeout_ms=30_000))
    producer.list_topics(topic, timeout=10)  # connected, metadata known, before the clock
    start = time.perf_counter()
    for key, value in records:
        producer.produce(topic, value, key)
    if producer.flush(120):
        raise RuntimeError("bench compare: librdkafka did not deliver within 120 s")
    return len(records) / (time.perf_counter() - start)


def _sdk_drained(bootstrap: str, prefix: str, folder: Path, n: int) -> float:
    clients = [AgentClient(a, bootstrap=bootstrap, topic_prefix=prefix, scrub=None,
                           outbox_path=folder / f"{a}-compare.db") for a in AGENTS]
    try:
        burst = [(c, _payload(c.agent_id, i)) for i in range(WARMUP + n) for c in clients]
        for c, payload in burst[:WARMUP]:
            c.emit("task.completed", payload)
        if not all(c.flush(60) for c in clients):
            raise RuntimeError("bench compare: the SDK's warm-up was not acknowledged in 60 s")
        start = time.perf_counter()
        for c, payload in burst[WARMUP:WARMUP + n]:
            c.emit("task.completed", payload)
        if not all(c.flush(120) for c in clients):
            raise RuntimeError("bench compare: the SDK's burst was not acknowledged in 120 s")
        return n / (time.perf_counter() - start)
    finally:
        for c in clients:
            c.close(timeout=1)


def _confluent_read(bootstrap: str, topic: str, partitions: int, n: int, batch: int) -> float:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.list_topics(topic, timeout=10)  # connected before the clock
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        clock, seen = _Clock(n, from_first=False), 0
        while not clock.saw(seen):
            # consume() waits until it has num_messages (or the timeout): never ask
            # for more than is left, or the last call would wait out the timeout.
            for message in consumer.consume(num_messages=min(batch, n - seen), timeout=1.0):
                if message.error() is None:
                    seen += 1
        return clock.per_s
    finally:
        consumer.close()


async def _aiokafka_read(bootstrap: str, topic: str, partitions: int, n: int,
                         batch: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # The fetch settings of streams.intake.BatchIntake, without its group.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=batch,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        clock, seen = _Clock(n, from_first=False), 0
        while not clock.saw(seen):
            fetched = await consumer.getmany(timeout_ms=1_000, max_records=batch)
            seen += sum(len(records) for records in fetched.values())
        return clock.per_s
    finally:
        await consumer.stop()


def _quix_python(data_dir: Path) -> Path | None:
    """Python of the venv with Quix Streams, made on first use; None if it cannot be made."""
    venv = data_dir.resolve() / VENV
    python = venv / "bin" / "python"
    made = venv / f"quixstreams-{QUIX_VERSION}.installed"
    if made.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        f"quixstreams=={QUIX_VERSION}"], check=True, capture_output=True,
                       timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning("bench compare: no Quix Streams venv (%s) %s", exc,
                    detail.decode(errors="replace")[-500:])
        return None
    made.touch()
    return python


def _quix_fold(python: Path, bootstrap: str, topic: str, n: int, folder: Path) -> float | None:
    script = Path(__file__).with_name("_quix_fold.py")
    try:
        done = subprocess.run([str(python), str(script), bootstrap, topic, str(n),
                               str(folder / "quix-state")], check=True, capture_output=True,
                              text=True, timeout=APPLY_TIMEOUT_S)
        rate: float = json.loads(done.stdout.strip().splitlines()[-1])["events_per_s"]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        log.warning("bench compare: the Quix Streams fold failed (%s) %s", exc, detail[-500:])
        return None
    return rate


def _intake_rate(settings: Settings, addresses: Addresses, prefix: str, n: int,
                 **extra: str) -> float:
    """Events/s a worker on ``prefix`` applies to features, the ``n`` events already waiting."""
    own = settings.model_copy(update={"topic_prefix": prefix})
    worker = start_worker(own, addresses, Path(settings.data_dir) / f"worker-{prefix}.log",
                          **extra)
    try:
        store = OnlineFeatureStore(redis_client(addresses.redis_url), prefix=prefix)
        clock = _Clock(n)
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while not clock.saw(_applied(store)[0]):
            if time.monotonic() > deadline or not is_alive(worker.pid):
                raise RuntimeError(f"bench compare: the worker on {prefix} applied "
                                   f"{clock.seen} of {n}; see worker-{prefix}.log")
            time.sleep(0.01)
        return clock.per_s
    finally:
        stop(worker.pid, worker.create_time, timeout=10)


def _ratio(num: float, den: float) -> float:
    return round(num / den, 2)


def run() -> dict[str, float]:
    before = os.getloadavg()[0]
    quix_python = _quix_python(Path(Settings().data_dir))  # before any clock: may pip install
    records = _envelopes(N)
    with running_stack() as (settings, addresses):
        bootstrap, folder = addresses.kafka_bootstrap, Path(settings.data_dir)
        batch, partitions = settings.worker_batch, settings.partitions
        prefix_a, prefix_b = f"{settings.topic_prefix}-a", f"{settings.topic_prefix}-b"
        topic_a, topic_b = topic_name(prefix_a, "agent"), topic_name(prefix_b, "agent")
        _create_topics(bootstrap, [topic_a, topic_b], partitions)
        produce = _librdkafka_produce(bootstrap, topic_a, records)
        _librdkafka_produce(bootstrap, topic_b, records)
        sdk = _sdk_drained(bootstrap, f"{settings.topic_prefix}-sdk", folder, N)
        confluent = _confluent_read(bootstrap, topic_a, partitions, N, batch)
        aiokafka = asyncio.run(_aiokafka_read(bootstrap, topic_a, partitions, N, batch))
        quix = (None if quix_python is None
                else _quix_fold(quix_python, bootstrap, topic_a, N, folder))
        intake = _intake_rate(settings, addresses, prefix_a, N)
        stream = _intake_rate(settings, addresses, prefix_b, N, SELFLEARN_INTAKE="stream")
    out: dict[str, float] = {
        "librdkafka_produce_per_s": round(produce),
        "sdk_drained_per_s": round(sdk),
        "confluent_consume_per_s": round(confluent),
        "aiokafka_consume_per_s": round(aiokafka),
        "batch_intake_per_s": round(intake),
        "faust_stream_per_s": round(stream),
        "quix_available": float(quix is not None),
        "ratio_librdkafka_to_sdk": _ratio(produce, sdk),
        "ratio_batch_intake_to_faust_stream": _ratio(intake, stream),
        "ratio_confluent_to_aiokafka_consume": _ratio(confluent, aiokafka),
    }
    if quix is not None:
        out["quix_fold_per_s"] = round(quix)
        out["ratio_quix_to_batch_intake"] = _ratio(quix, intake)
        out["ratio_quix_to_faust_stream"] = _ratio(quix, stream)
    out |= {"events": float(N), "agents": float(len(AGENTS)),
            "load_avg_1m_before": round(before, 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}
    return out


if __name__ == "__main__":
    print(json.dumps(run()))
