"""The demo's identity and audit trail against real servers: operator, erasure, report.

The demo runs as an operator identity granted by the admin who starts it; its
half-way erasure is asked for by that operator (denied, audited) and done by
the admin (audited); the report's audit-trail section lists those records,
where the log and its signed checkpoint are, the verification result, and
for the erasure how many archived events became unreadable and what each
projection forgot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from agents.client import AgentClient
from ops.access.rbac import RoleStore, os_user
from ops.access.trail import Trail
from ops.demo.identity import DEMO_OPERATOR, as_operator, erase_as_officer
from ops.report.generate import write_current
from ops.report.trail import forgot_counts
from ops.stack.processes import stop
from ops.stack.workers import start_worker, wait_ready
from schemas.addresses import Addresses
from schemas.settings import Settings

SUBJECT = "r-demo-erased"


@pytest.fixture
def own(settings: Settings, stack: Addresses, tmp_path: Path) -> Iterator[Settings]:
    s = settings.model_copy(update={
        "topic_prefix": f"{settings.topic_prefix}-{uuid.uuid4().hex[:6]}", "data_dir": tmp_path,
        "kafka_bootstrap": stack.kafka_bootstrap, "database_url": stack.database_url,
        "redis_url": stack.redis_url, "mlflow_uri": stack.mlflow_uri, "identity": None})
    yield s


def _archived(database_url: str, producer: str) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM events WHERE producer = %s",
                                    (producer,)).fetchone()[0])  # type: ignore[index]
        except psycopg.errors.UndefinedTable:
            return 0


def test_demo_runs_as_operator_and_the_report_shows_its_erasure(
        own: Settings, stack: Addresses, tmp_path: Path) -> None:
    since = datetime.now(UTC)
    who = as_operator(own)  # the OS user owns the data folder: admin
    assert who.actor.name == DEMO_OPERATOR and who.actor.roles == ("operator",)
    assert who.officer is not None and (DEMO_OPERATOR, "operator") in \
        RoleStore(own.data_dir).load()
    assert as_operator(own).actor.name == DEMO_OPERATOR  # the grant is made once

    worker = start_worker(who.operator, stack, tmp_path / "worker.log")
    try:
        wait_ready(tmp_path / "worker.log")
        agent = f"est-{uuid.uuid4().hex[:6]}"
        with AgentClient.from_settings(agent, own) as client:
            for i, subject in enumerate([SUBJECT] * 3 + ["r-demo-kept"] * 2):
                client.emit("task.estimated", {"task_id": f"t{i}", "project": "mule",
                                               "title": f"title {i}", "description": "d",
                                               "estimate": 2.0}, subject_id=subject)
            assert client.flush(30)
        deadline = time.monotonic() + 60
        while _archived(stack.database_url, agent) < 5:
            assert time.monotonic() < deadline, "the worker archived too little"
            time.sleep(0.3)
        out: dict[str, object] = {}
        erase_as_officer(who, SUBJECT, "test: demo erasure", out, wait_s=5)
        assert out["denied"] == [DEMO_OPERATOR] and out["by"] == os_user(), out
        assert out["key_versions_destroyed"] == 1
        deadline = time.monotonic() + 180  # every partition's copy handled (a loaded machine)
        while (forgot_counts(stack.redis_url, own.topic_prefix, SUBJECT) or {}).get(
                "copies", 0) < int(str(out["partitions"])):
            assert time.monotonic() < deadline, "the worker never handled the erasure"
            time.sleep(0.5)
    finally:
        stop(worker.pid, worker.create_time, timeout=10)

    trail = Trail.of(own)
    records = trail.log.records(since=since)
    mine = [(r.actor, r.operation, r.target, r.outcome) for r in records
            if r.actor in (DEMO_OPERATOR, os_user())]
    assert (os_user(), "role.grant", DEMO_OPERATOR, "allowed") in mine
    assert (DEMO_OPERATOR, "demo", "*", "allowed") in mine
    assert (DEMO_OPERATOR, "erase", SUBJECT, "denied") in mine
    assert (os_user(), "erase", SUBJECT, "applied") in mine
    assert trail.checkpoints.latest.exists()

    page, _ = write_current(own, stack, tmp_path / "report.html", title="t", audit_since=since)
    section = page[page.index('id="audit-trail"'):]
    assert str(trail.checkpoints.latest) in section and "audit-log verify" in section
    assert "intact" in section, section[:600]
    row = section[section.index("<h3>Erasures"):section.index("records in this report")]
    assert SUBJECT in row and os_user() in row
    assert "3 (task.estimated 3)" in row  # the subject's archived events, now unreadable
    assert f"{DEMO_OPERATOR}</td><td>erase</td><td>{SUBJECT}</td><td><span class=\"rollback\">" \
           "denied" in section

    # Reading the audit log is an auditor's right: an operator's report says so instead.
    page, _ = write_current(who.operator, stack, tmp_path / "op.html", title="t")
    assert 'id="audit-trail"' not in page
    assert f"audit trail not shown: {DEMO_OPERATOR} may not read the audit log" in page
