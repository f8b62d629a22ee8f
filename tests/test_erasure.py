"""Privacy end to end against the real servers: erasure by key destruction, rotation under load.

Events of several data subjects go through the SDK (sealed on its producer
thread) and a real worker; one subject is erased with the use case behind
``selflearn erase``. Then the raw bytes of every store are scanned for any
subject's personal plaintext: the broker's topics, the archive tables (and
cold files), the learning checkpoints, Redis, the MLflow artifacts folder
(with the snapshots the worker registered when a challenger was promoted
before and after the erasure) and its database, the outbox files, the
worker's log and the SDK's log records. Compressed stores are read through
their format (Redis values by type, cold files un-gzipped): a raw-byte scan
of compressed data would find nothing whatever it held.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import redis

from agents.client import AgentClient
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready
from ops.usecases.audit import audit_sample
from ops.usecases.lineage import registry_run
from ops.usecases.operator_commands import send_command
from ops.usecases.privacy import erase, rotate_keys
from projections import archive_sql as q
from projections.archive import EventArchive
from projections.archive_cold import ColdStore
from projections.feature_store import OnlineFeatureStore
from schemas import Envelope, decode
from schemas.addresses import Addresses
from schemas.catalog import DEAD_LETTER, STREAMS, topic_name
from schemas.cipher import ERASED, FieldCipher
from schemas.keystore_file import FileKeyStore
from schemas.protect import REDACTED, reveal
from schemas.settings import Settings
from tests.kafka_util import read_topic

SUBJECTS = ("r-alpha", "r-bravo", "r-charlie")
ERASED_SUBJECT = "r-bravo"
TASKS = 6


@pytest.fixture
def run(settings: Settings, stack: Addresses, tmp_path: Path) -> Iterator[dict[str, object]]:
    """Own data folder (keys, outboxes, MLflow), topic prefix; the worker is stopped after.

    The agent is ``task-estimator``, a live agent, so a challenger can be promoted
    (and registered in MLflow); its events are told apart from other tests' by
    the topic prefix.
    """
    prefix = f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    own = settings.model_copy(update={
        "topic_prefix": prefix, "data_dir": tmp_path, "kafka_bootstrap": stack.kafka_bootstrap,
        "database_url": stack.database_url, "redis_url": stack.redis_url,
        "mlflow_uri": mlflow_uri, "pii_detector": "pattern"})
    workers: list[Spawned] = []
    log = tmp_path / "worker.log"
    workers.append(start_worker(own, dataclasses.replace(stack, mlflow_uri=mlflow_uri), log))
    wait_ready(log)
    yield {"settings": own, "log": log, "agent": "task-estimator",
           "server_logs": Path(settings.data_dir) / "logs"}
    for w in workers:
        stop(w.pid, w.create_time, timeout=10)


def _markers() -> dict[str, str]:
    """One unique plaintext word per subject (what the scans look for)."""
    return {s: f"zq{uuid.uuid4().hex[:10]}" for s in SUBJECTS}


def _context(subject: str, marker: str, i: int) -> dict[str, object]:
    # Title and description are the subject's personal text; the description also
    # names a person (a Jira mention) whose span gets that person's own key.
    return {"task_id": f"{subject}-t{i}", "project": "mule",
            "title": f"Crash in {marker} login page {i}",
            "description": f"Reported by {marker}; ask [~{marker}dev] about the {marker} cache"}


def _emit(client: AgentClient, subject: str, marker: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ctx = _context(subject, marker, i)
        d = client.decide(ctx, subject_id=subject)
        client.emit("task.estimated", {**ctx, "estimate": d.output,
                                       "model_version": d.model_version}, subject_id=subject)
        client.emit("task.completed", {"task_id": ctx["task_id"], "project": "mule",
                                       "actual_points": float(1 + i % 5), "duration_s": 60.0,
                                       "success": True}, subject_id=subject)


SDK_TYPES = ["decision.requested", "decision.made", "task.estimated", "task.completed"]


def _archived(database_url: str, agent: str, prefix: str) -> list[tuple[str, bytes]]:
    """The SDK's events of ``agent`` on ``prefix``'s topics (not the worker's own events)."""
    with psycopg.connect(database_url) as conn:
        try:
            rows = conn.execute("SELECT type, payload::text FROM events WHERE producer = %s "
                                "AND type = ANY(%s) AND src_topic LIKE %s",
                                (agent, SDK_TYPES, f"{prefix}.%")).fetchall()
        except psycopg.errors.UndefinedTable:  # the worker has not written yet
            return []
    return [(t, p.encode()) for t, p in rows]


def _wait_archived(database_url: str, agent: str, prefix: str, n: int,
                   timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (got := len(_archived(database_url, agent, prefix))) < n:
        assert time.monotonic() < deadline, f"archive holds {got}"
        time.sleep(0.3)


def _archived_rows(database_url: str, agent: str, prefix: str) -> list[tuple[object, ...]]:
    cols = ", ".join(q.READ_COLUMNS)
    with psycopg.connect(database_url) as conn:
        return conn.execute(f"SELECT {cols} FROM events WHERE producer = %s "  # noqa: S608
                            "AND src_topic LIKE %s", (agent, f"{prefix}.%")).fetchall()


def _archived_events(database_url: str, agent: str, prefix: str) -> list[Envelope]:
    return [q.envelope_from_row(r) for r in _archived_rows(database_url, agent, prefix)]


def _to_cold(s: Settings, stack: Addresses, agent: str) -> list[Envelope]:
    """The agent's archived rows written as cold files, as retention writes them; read back."""
    cold = ColdStore((Path(s.data_dir) / "cold").as_uri())
    rows = _archived_rows(stack.database_url, agent, s.topic_prefix)
    day = q.envelope_from_row(rows[0]).occurred_at.date()
    cold.write_day(day, 0, [q.cold_record(r) for r in rows])
    return [decode(orjson.dumps({k: v for k, v in rec.items() if k != "_src"}))
            for rec in cold.read_day(day)]


def _registered(s: Settings, version: str) -> dict[str, float]:
    """Metrics of the MLflow run that registered ``version`` (waits for the worker)."""
    from mlflow import MlflowClient

    deadline, run = time.monotonic() + 180, registry_run(s.mlflow_uri, "task-estimator", version)
    while not run["found"]:
        assert time.monotonic() < deadline, run
        time.sleep(1)
        run = registry_run(s.mlflow_uri, "task-estimator", version)
    client = MlflowClient(tracking_uri=s.mlflow_uri, registry_uri=s.mlflow_uri)
    return dict(client.get_run(run["run_id"]).data.metrics)


def _redis_values(r: redis.Redis) -> list[bytes]:
    """Every key and every value, read by type (``DUMP`` may LZF-compress a value)."""
    out: list[bytes] = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        out.append(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out += [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == b"list":
            out += r.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"zset":
            out += r.zrange(key, 0, -1)
        elif kind == b"stream":
            out += [orjson.dumps({k.decode(): v.decode("latin-1") for k, v in f.items()})
                    for _, f in r.xrange(key)]
        else:
            raise AssertionError(f"Redis key {key!r} of type {kind!r} is not scanned")
    return out


def _scan_everything(s: Settings, stack: Addresses, log: Path, sdk_log: str,
                     server_logs: Path) -> dict[str, bytes]:
    """Raw bytes of every store that could hold personal data, per store."""
    stores: dict[str, bytes] = {}
    chunks: list[bytes] = []
    for stream in (*STREAMS, DEAD_LETTER):
        recs = read_topic(stack.kafka_bootstrap, topic_name(s.topic_prefix, stream),
                          until=lambda got: False, timeout=3.0)
        chunks += [v or b"" for _, _, v in recs]
    stores["broker"], chunks = b"\n".join(chunks), []
    with psycopg.connect(stack.database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        for t in tables:  # every archive, checkpoint and catalog table, every column
            for row in conn.execute(f'SELECT * FROM "{t}"').fetchall():  # noqa: S608
                # bytea (checkpoints) as its raw bytes: as text it would be hex
                chunks += [bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
                           for v in row]
    stores["postgresql"], chunks = b"\n".join(chunks), []
    stores["redis"] = b"\n".join(_redis_values(redis.Redis.from_url(stack.redis_url)))
    folders = [Path(s.data_dir) / "outbox", Path(s.data_dir) / "cold",
               Path(s.mlflow_uri[len("sqlite:///"):]).parent]  # mlflow.db and mlartifacts/
    for folder in folders:
        files = [f for f in folder.rglob("*") if f.is_file()]
        assert files, f"nothing in {folder}: the scan would prove nothing"
        stores[folder.name] = b"\n".join(gzip.decompress(f.read_bytes()) if f.suffix == ".gz"
                                         else f.read_bytes() for f in files)
    stores["worker log"], stores["sdk log"] = log.read_bytes(), sdk_log.encode()
    # The servers' own logs (broker, PostgreSQL, Redis): an error may quote a value.
    stores["server logs"] = b"\n".join(f.read_bytes() for f in server_logs.glob("*.log"))
    return stores


def test_erased_subject_is_unreadable_everywhere_others_decrypt_learning_goes_on(
        run: dict[str, object], stack: Addresses, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("agents", "schemas", "ops.usecases"):
        caplog.set_level(logging.DEBUG, logger=name)
    s: Settings = run["settings"]  # type: ignore[assignment]
    agent = str(run["agent"])
    markers = _markers()
    client = AgentClient.from_settings(agent, s, decision_kind="task_estimate")
    for subject in SUBJECTS:
        _emit(client, subject, markers[subject], TASKS)
    assert client.flush(60)
    # Per task: decision.requested, decision.made, task.estimated, task.completed.
    _wait_archived(stack.database_url, agent, s.topic_prefix, 4 * TASKS * len(SUBJECTS))
    assert client.protector is not None and client.protector.named >= 2 * TASKS * len(SUBJECTS)
    # A challenger that learned from every subject goes to canary: MLflow gets its snapshot.
    canary = send_command(s, agent, "promote", "test", challenger="knn_median", wait_s=60)
    learned_before = _registered(s, canary["after"]["challenger"])["n"]
    assert learned_before >= TASKS * len(SUBJECTS) - 1

    report = erase(s, ERASED_SUBJECT, "test: right to erasure", wait_s=180)
    assert report["key_versions_destroyed"] == 1
    forgot = report["forgot"]
    assert forgot is not None, "no worker recorded the erasure"
    # Memory entries of the subject's events, and kNN examples of the subject's tasks.
    assert forgot["memory"] >= 3 * TASKS and forgot["learning"] >= TASKS, forgot

    # Learning and features continue after the erasure (new subject, and an old one).
    features = OnlineFeatureStore(redis.Redis.from_url(stack.redis_url), prefix=s.topic_prefix)
    before = features.get(f"agent:{agent}")
    extra = {"r-delta": f"zq{uuid.uuid4().hex[:10]}"}
    _emit(client, "r-delta", extra["r-delta"], 3)
    _emit(client, "r-alpha", markers["r-alpha"], 2, start=TASKS)
    assert client.flush(60)
    _wait_archived(stack.database_url, agent, s.topic_prefix, 4 * (TASKS * len(SUBJECTS) + 5))
    client.close()
    after = features.get(f"agent:{agent}")
    assert before is not None and after is not None
    assert after.counters != before.counters
    # ... and the challenger learned from the new outcomes: registered again, it has seen more.
    send_command(s, agent, "rollback", "test", wait_s=60)
    again = send_command(s, agent, "promote", "test", challenger="knn_median", wait_s=60)
    assert again["after"]["challenger"] != canary["after"]["challenger"]
    assert _registered(s, again["after"]["challenger"])["n"] >= learned_before + 5
    cold = _to_cold(s, stack, agent)  # the hot rows as retention writes them to cold files

    # No plaintext of any subject's personal text anywhere (sealed before leaving the SDK).
    stores = _scan_everything(s, stack, Path(str(run["log"])), caplog.text,
                              Path(str(run["server_logs"])))
    assert stores["broker"] and stores["postgresql"] and stores["redis"] and stores["outbox"]
    # The scan reads content, not noise: what these events hold in clear is found.
    for name in ("broker", "postgresql", "cold"):
        assert b"r-alpha-t0" in stores[name], f"a task id is not in the {name} scan"
    assert b"r-alpha" in stores["redis"] and b"knn_median" in stores["mlflow"]
    for subject, marker in {**markers, **extra}.items():
        found = [name for name, raw in stores.items() if marker.encode() in raw]
        assert not found, f"plaintext of {subject} found in {found}"

    # The erased subject reads "[erased]"; the others still decrypt, names included.
    keys = FileKeyStore(s.key_folder())
    cipher = FieldCipher(keys)
    by_subject: dict[str, list[dict[str, object]]] = {}
    hot = _archived_events(stack.database_url, agent, s.topic_prefix)
    # The worker may archive a late decision after the cold files were written.
    assert cold and {ev.event_id for ev in cold} <= {ev.event_id for ev in hot}
    for ev in [*hot, *cold]:
        if ev.type not in ("task.estimated", "decision.requested"):
            continue
        opened = reveal(ev, cipher)
        text = opened.payload.get("title") or opened.payload["context"]["title"]
        by_subject.setdefault(str(ev.subject_id), []).append({"text": text,
                                                              "erased": opened.erased})
    assert all(e["text"] == ERASED and e["erased"] for e in by_subject[ERASED_SUBJECT])
    for subject in ("r-alpha", "r-charlie", "r-delta"):
        marker = {**markers, **extra}[subject]
        assert by_subject[subject] and all(marker in str(e["text"]) and not e["erased"]
                                           for e in by_subject[subject])
    # Learners featurise with named persons redacted.
    one = next(ev for ev in hot if ev.type == "task.estimated" and ev.subject_id == "r-alpha")
    assert REDACTED in reveal(one, cipher, names=False).payload["description"]
    keys.close()

    # Audit still runs: decisions whose inputs were erased are reported as such.
    audit = audit_sample(EventArchive(stack.database_url), redis.Redis.from_url(stack.redis_url),
                         n=10_000, agent=agent, mlflow_uri=s.mlflow_uri, topics_of=s.topic_prefix,
                         prefix=s.topic_prefix, cipher=FieldCipher(FileKeyStore(s.key_folder())))
    assert audit["checked"] == TASKS * len(SUBJECTS) + 5
    assert audit["erased"] == TASKS
    assert all("erased" not in m["reason"] for m in audit["mismatches"])


def test_rotation_during_live_traffic_loses_nothing_and_all_stays_readable(
        run: dict[str, object], stack: Addresses) -> None:
    s: Settings = run["settings"]  # type: ignore[assignment]
    agent = str(run["agent"])
    client = AgentClient.from_settings(agent, s)
    stop_at = threading.Event()
    sent: dict[str, str] = {}  # event id -> title
    errors: list[BaseException] = []

    def traffic() -> None:
        i = 0
        try:
            while not stop_at.is_set():
                title = f"task {i} of zr{uuid.uuid4().hex[:8]}"
                ev = client.emit("task.estimated", {"task_id": f"t{i}", "project": "mule",
                                                    "title": title, "description": "d",
                                                    "estimate": 3.0}, subject_id=f"r-{i % 40}")
                sent[str(ev.event_id)] = title  # type: ignore[union-attr]
                i += 1
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=traffic)
    thread.start()
    rotations = []
    for _ in range(3):
        time.sleep(0.7)
        rotations.append(rotate_keys(s))
    time.sleep(0.5)
    stop_at.set()
    thread.join()
    assert not errors
    assert client.flush(60)
    client.close()
    assert [r["kek_version"] for r in rotations] == [2, 3, 4]
    assert rotations[-1]["rewrapped"] >= 40  # every subject's key (and the pseudonym key)

    _wait_archived(stack.database_url, agent, s.topic_prefix, len(sent))
    cipher = FieldCipher(FileKeyStore(s.key_folder()))
    read = {str(ev.event_id): reveal(ev, cipher).payload["title"]
            for ev in _archived_events(stack.database_url, agent, s.topic_prefix)}
    assert read == sent
    control = read_topic(stack.kafka_bootstrap, topic_name(s.topic_prefix, "control"),
                         expect=3, timeout=30)
    kinds = [decode(v).type for _, _, v in control if v]
    assert kinds.count("key.rotated") == 3
