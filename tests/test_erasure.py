"""Privacy end to end against the real servers: erasure by key destruction, rotation under load.

Events of several data subjects go through the SDK (sealed on its producer
thread) and a real worker; one subject is erased with the use case behind
``selflearn erase``. Then the raw bytes of every store are scanned for any
subject's personal plaintext: the broker's topics, the archive tables (and
cold files), the learning checkpoints, Redis, the MLflow artifacts folder,
the outbox files, the worker's log and the SDK's log records.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from agents.client import AgentClient
from ops.stack.processes import Spawned, stop
from ops.stack.workers import start_worker, wait_ready
from ops.usecases.audit import audit_sample
from ops.usecases.privacy import erase, rotate_keys
from projections import archive_sql as q
from projections.archive import EventArchive
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
    """Own data folder (keys, outboxes), topic prefix and agent; the worker is stopped after."""
    prefix = f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={
        "topic_prefix": prefix, "data_dir": tmp_path, "kafka_bootstrap": stack.kafka_bootstrap,
        "database_url": stack.database_url, "redis_url": stack.redis_url,
        "mlflow_uri": stack.mlflow_uri, "pii_detector": "pattern"})
    workers: list[Spawned] = []
    log = tmp_path / "worker.log"
    workers.append(start_worker(own, stack, log))
    wait_ready(log)
    yield {"settings": own, "log": log, "agent": f"task-est-{uuid.uuid4().hex[:6]}"}
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


def _archived(database_url: str, agent: str) -> list[tuple[str, bytes]]:
    """The SDK's events of ``agent`` (not the worker's shadow/evaluation events)."""
    with psycopg.connect(database_url) as conn:
        try:
            rows = conn.execute("SELECT type, payload::text FROM events WHERE producer = %s "
                                "AND type = ANY(%s)", (agent, SDK_TYPES)).fetchall()
        except psycopg.errors.UndefinedTable:  # the worker has not written yet
            return []
    return [(t, p.encode()) for t, p in rows]


def _wait_archived(database_url: str, agent: str, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(_archived(database_url, agent)) < n:
        assert time.monotonic() < deadline, f"archive holds {len(_archived(database_url, agent))}"
        time.sleep(0.3)


def _archived_events(database_url: str, agent: str) -> list[Envelope]:
    cols = ", ".join(q.READ_COLUMNS)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT {cols} FROM events WHERE producer = %s",  # noqa: S608
                            (agent,)).fetchall()
    return [q.envelope_from_row(r) for r in rows]


def _scan_everything(s: Settings, stack: Addresses, log: Path, sdk_log: str) -> dict[str, bytes]:
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
    r = redis.Redis.from_url(stack.redis_url)
    for key in r.scan_iter(count=1000):
        chunks += [key, r.dump(key) or b""]
    stores["redis"], chunks = b"\n".join(chunks), []
    folders = [Path(s.data_dir) / "outbox", Path(s.data_dir) / "cold",
               Path(stack.mlflow_uri[len("sqlite:///"):]).parent / "mlartifacts"]
    for folder in folders:
        if folder.exists():
            stores[folder.name] = b"\n".join(f.read_bytes() for f in folder.rglob("*")
                                             if f.is_file())
    stores["worker log"], stores["sdk log"] = log.read_bytes(), sdk_log.encode()
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
    _wait_archived(stack.database_url, agent, 4 * TASKS * len(SUBJECTS))
    assert client.protector is not None and client.protector.named >= 2 * TASKS * len(SUBJECTS)

    report = erase(s, ERASED_SUBJECT, "test: right to erasure", wait_s=60)
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
    _wait_archived(stack.database_url, agent, 4 * (TASKS * len(SUBJECTS) + 5))
    client.close()
    after = features.get(f"agent:{agent}")
    assert before is not None and after is not None
    assert after.counters != before.counters

    # No plaintext of any subject's personal text anywhere (sealed before leaving the SDK).
    stores = _scan_everything(s, stack, Path(str(run["log"])), caplog.text)
    assert stores["broker"] and stores["postgresql"] and stores["redis"] and stores["outbox"]
    for subject, marker in {**markers, **extra}.items():
        found = [name for name, raw in stores.items() if marker.encode() in raw]
        assert not found, f"plaintext of {subject} found in {found}"

    # The erased subject reads "[erased]"; the others still decrypt, names included.
    keys = FileKeyStore(s.key_folder())
    cipher = FieldCipher(keys)
    by_subject: dict[str, list[dict[str, object]]] = {}
    for ev in _archived_events(stack.database_url, agent):
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
    one = next(ev for ev in _archived_events(stack.database_url, agent)
               if ev.type == "task.estimated" and ev.subject_id == "r-alpha")
    assert REDACTED in reveal(one, cipher, names=False).payload["description"]
    keys.close()

    # Audit still runs: decisions whose inputs were erased are reported as such.
    audit = audit_sample(EventArchive(stack.database_url), redis.Redis.from_url(stack.redis_url),
                         n=10_000, agent=agent, mlflow_uri=stack.mlflow_uri,
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

    _wait_archived(stack.database_url, agent, len(sent))
    cipher = FieldCipher(FileKeyStore(s.key_folder()))
    read = {str(ev.event_id): reveal(ev, cipher).payload["title"]
            for ev in _archived_events(stack.database_url, agent)}
    assert read == sent
    control = read_topic(stack.kafka_bootstrap, topic_name(s.topic_prefix, "control"),
                         expect=3, timeout=30)
    kinds = [decode(v).type for _, _, v in control if v]
    assert kinds.count("key.rotated") == 3
