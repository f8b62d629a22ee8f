"""The tamper-evident audit log against the session's real PostgreSQL.

Each test gets a private audit table and checkpoint folder, writes records as
the application does (one signed checkpoint after each), then tampers with the
table as a superuser who switched the append-only triggers off
(``session_replication_role = replica``) — first naively, then rewriting the
hash chain so that only the signed checkpoints outside the database can tell.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import sql

from ops.access.audit_log import GENESIS, Record
from ops.access.checkpoint import DASH
from ops.access.trail import (
    CheckpointRefused,
    Trail,
    record,
    sign_checkpoint,
    sync_transitions,
    verify,
)
from projections.archive import EventArchive
from schemas import new_event
from schemas.addresses import Addresses

N = 8


@pytest.fixture
def trail(stack: Addresses, tmp_path: Path) -> Iterator[Trail]:
    """A private audit table with N records, each followed by a signed checkpoint."""
    t = Trail(stack.database_url, tmp_path / "audit", table=f"audit_{uuid.uuid4().hex[:10]}")
    for i in range(N):
        record(t, ["alice", "bob"][i % 2], ["promote", "rollback", "export"][i % 3],
               f"agent-{i}", "allowed", {"i": i, "reason": "test"})
    yield t
    with psycopg.connect(stack.database_url) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t.table)))


def _tamper(t: Trail, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run SQL on the audit table as a superuser with triggers off (``{t}`` is the table)."""
    assert t.database_url is not None
    with psycopg.connect(t.database_url) as conn:
        conn.execute("SET session_replication_role = replica")
        for stmt, params in statements:
            conn.execute(sql.SQL(stmt).format(t=sql.Identifier(t.table)), params)


def _rewrite_chain(t: Trail) -> None:
    """The strong attacker: renumber densely and recompute every hash and link."""
    records = t.log.records()
    prev, fixed = GENESIS, []
    for i, r in enumerate(records, start=1):
        r2 = Record(i, r.at, r.actor, r.operation, r.target, r.outcome, r.detail, r.ref, prev)
        r2 = Record(**{**r2.__dict__, "hash": r2.computed_hash()})
        fixed.append(r2)
        prev = r2.hash
    _tamper(t, ("DELETE FROM {t}", ()), *[
        ("INSERT INTO {t} (seq, at, actor, operation, target, outcome, detail, ref, prev_hash, "
         "hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
         (r.seq, r.at, r.actor, r.operation, r.target, r.outcome, r.detail, r.ref,
          r.prev_hash, r.hash)) for r in fixed])
    assert _kinds_chain_only(t) == set(), "the rewritten chain must look intact by itself"


def _kinds(t: Trail) -> set[str]:
    return {f.kind for f in verify(t).findings}


def _kinds_chain_only(t: Trail) -> set[str]:
    from ops.access.audit_log import check_chain

    return {f.kind for f in check_chain(t.log.records())}


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash, written out independently of pymerkle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_untouched_log_verifies_and_checkpoint_is_c2sp(trail: Trail) -> None:
    result = verify(trail)
    assert result.ok, result.findings
    assert (result.size, result.checkpoints, result.signed_size, result.unsigned_tail) == \
        (N, N, N, 0)
    records = trail.log.records()
    assert [r.seq for r in records] == list(range(1, N + 1))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    # The newest checkpoint, read as plain C2SP text and checked without our parser.
    note = trail.checkpoints.latest.read_text()
    origin, size, root, blank, sig_line, end = note.split("\n")
    assert (blank, end) == ("", "")
    assert origin.endswith(f"/{trail.table}") and int(size) == N
    assert base64.b64decode(root) == _mth([r.body() for r in records])
    dash, name, b64 = sig_line.split(" ")
    vname, kid, vkey = (trail.folder / "checkpoint.vkey").read_text().strip().split("+", 2)
    raw, pub = base64.b64decode(b64), base64.b64decode(vkey)
    assert dash == DASH and name == vname and raw[:4].hex() == kid and pub[0] == 1
    Ed25519PublicKey.from_public_bytes(pub[1:]).verify(raw[4:], "\n".join(
        [origin, size, root]).encode() + b"\n")
    assert oct((trail.folder / "checkpoint.key").stat().st_mode & 0o777) == "0o600"
    # Without its leaf mirror the signer reads the whole log, and still extends it.
    (trail.folder / f"{trail.table}.merkle.db").unlink()
    record(trail, "carol", "export", "*", "allowed")
    assert verify(trail).signed_size == N + 1 and verify(trail).ok


def test_application_cannot_update_delete_or_truncate(trail: Trail) -> None:
    assert trail.database_url is not None
    t = sql.Identifier(trail.table)
    for stmt in ("UPDATE {t} SET outcome = 'denied' WHERE seq = 2", "DELETE FROM {t} WHERE seq = 8",
                 "TRUNCATE {t}"):
        with psycopg.connect(trail.database_url) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(sql.SQL(stmt).format(t=t))
    assert [r.outcome for r in trail.log.records()] == ["allowed"] * N
    assert verify(trail).ok


def test_modified_record_is_detected(trail: Trail) -> None:
    _tamper(trail, ("UPDATE {t} SET outcome = 'denied' WHERE seq = 3", ()))
    findings = verify(trail).findings
    assert ("modified", 3) in {(f.kind, f.seq) for f in findings}, findings
    _rewrite_chain(trail)
    assert _kinds(trail) == {"checkpoint"}
    with pytest.raises(CheckpointRefused):  # a rewritten log never gets a fresh signature
        sign_checkpoint(trail)
    (trail.folder / f"{trail.table}.merkle.db").unlink()  # nor from a rebuilt leaf mirror
    with pytest.raises(CheckpointRefused, match="no longer match"):
        sign_checkpoint(trail)


def test_deleted_record_is_detected(trail: Trail) -> None:
    _tamper(trail, ("DELETE FROM {t} WHERE seq = 4", ()))
    found = {(f.kind, f.seq) for f in verify(trail).findings}
    assert ("deleted", 4) in found and ("chain", 5) in found, found
    _rewrite_chain(trail)
    assert "checkpoint" in _kinds(trail)


def test_reordered_records_are_detected(trail: Trail) -> None:
    # Records 3 and 4 swap places (whole rows: only their numbers change).
    _tamper(trail, ("UPDATE {t} SET seq = seq + 1000 WHERE seq IN (3, 4)", ()),
            ("UPDATE {t} SET seq = CASE seq WHEN 1003 THEN 4 ELSE 3 END WHERE seq > 1000", ()))
    found = {(f.kind, f.seq) for f in verify(trail).findings}
    assert ("reordered", 3) in found, found
    _rewrite_chain(trail)
    assert _kinds(trail) == {"checkpoint"}


def test_inserted_record_is_detected(trail: Trail) -> None:
    third = trail.log.records()[2]
    forged = Record(4, third.at, "mallory", "erase", "everyone", "allowed", "{}", None,
                    third.hash)
    _tamper(trail, ("UPDATE {t} SET seq = seq + 1000 WHERE seq >= 4", ()),
            ("UPDATE {t} SET seq = seq - 999 WHERE seq > 1000", ()),
            ("INSERT INTO {t} (seq, at, actor, operation, target, outcome, detail, ref, "
             "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
             (4, forged.at, forged.actor, forged.operation, forged.target, forged.outcome,
              forged.detail, forged.ref, forged.prev_hash, forged.computed_hash())))
    found = {(f.kind, f.seq) for f in verify(trail).findings}
    assert ("inserted", 4) in found, found
    _rewrite_chain(trail)
    assert _kinds(trail) == {"checkpoint"}  # N+1 records whose first N differ from the root


def test_truncated_tail_is_detected(trail: Trail) -> None:
    _tamper(trail, ("DELETE FROM {t} WHERE seq > 5", ()))
    assert _kinds_chain_only(trail) == set()  # what is left is a perfect chain
    result = verify(trail)
    assert {f.kind for f in result.findings} == {"truncated"}, result.findings
    assert result.size == 5 and result.signed_size == N
    # New records after the cut do not hide it, and are not signed on top of it.
    record(trail, "alice", "promote", "agent-x", "allowed")
    assert "truncated" in _kinds(trail)
    with pytest.raises(CheckpointRefused):
        sign_checkpoint(trail)


def test_forged_checkpoint_and_wrong_key_are_detected(trail: Trail) -> None:
    lines = trail.checkpoints.history.read_text().splitlines()
    forged = lines[-1].replace(f"\\n{N}\\n", f"\\n{N + 5}\\n")
    assert forged != lines[-1]
    trail.checkpoints.history.write_text("\n".join([*lines[:-1], forged]) + "\n")
    assert _kinds(trail) == {"signature"}
    other = Trail(trail.database_url, trail.folder.parent / "elsewhere", trail.table)
    sign_checkpoint(other)  # another key signs the same log
    pinned = (other.folder / "checkpoint.vkey").read_text()
    result = verify(trail, vkey=pinned)
    assert {f.kind for f in result.findings} == {"signature"} and result.checkpoints == 0


def test_records_spool_while_postgres_is_unreachable(stack: Addresses, tmp_path: Path) -> None:
    table = f"audit_{uuid.uuid4().hex[:10]}"
    down = Trail("postgresql://127.0.0.1:1/nowhere", tmp_path, table)
    assert record(down, "alice", "up", "*", "allowed") is None
    assert record(down, "bob", "status", "*", "denied") is None
    assert down.spooled() == 2
    up = Trail(stack.database_url, tmp_path, table)
    try:
        assert record(up, "carol", "promote", "a", "allowed") == 3
        records = up.log.records()
        assert [(r.seq, r.actor, r.outcome) for r in records] == [
            (1, "alice", "allowed"), (2, "bob", "denied"), (3, "carol", "allowed")]
        assert records[0].at < records[1].at < records[2].at  # spooled at their own time
        assert up.spooled() == 0 and verify(up).ok
    finally:
        with psycopg.connect(stack.database_url) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_transitions_are_copied_once(trail: Trail, stack: Addresses) -> None:
    events = f"ev_{uuid.uuid4().hex[:10]}"
    archive = EventArchive(stack.database_url, table=events)
    archive.ensure_schema()
    step = new_event("promotion.step_changed", {
        "agent_id": "a1", "kind": "task_estimate", "from_step": 0, "to_step": 5,
        "champion": "m0:v1", "challenger": "m1:v2", "reason": "manual", "manual": True,
        "operator": "alice"}, producer="a1")
    back = new_event("promotion.rolled_back", {
        "agent_id": "a1", "kind": "task_estimate", "from_step": 5, "champion": "m0:v1",
        "challenger": "m1:v2", "reason": "error 2.1 vs champion 1.4"}, producer="a1")
    try:
        archive.write([("p.control", 3, 10, step), ("p.control", 3, 11, back)])
        assert sync_transitions(trail, events_table=events) == 2
        assert sync_transitions(trail, events_table=events) == 0
        new = trail.log.records()[N:]
        assert [(r.actor, r.operation, r.target, r.ref) for r in new] == [
            ("alice", "promotion.step", "a1", str(step.event_id)),
            ("system:promotion", "promotion.rollback", "a1", str(back.event_id))]
        assert new[1].as_dict()["detail"]["source"] == "p.control:3@11"
        sign_checkpoint(trail)
        assert verify(trail).ok
    finally:
        with archive.connection() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                sql.Identifier(events)))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.Identifier(f"{events}_cold")))
            conn.commit()
        archive.close()
