"""The audit trail of an installation: records, spool, checkpoints, verification.

:func:`record` appends to the PostgreSQL audit log and then signs a checkpoint
(``<data_dir>/audit/``). When PostgreSQL cannot be reached (``selflearn up``
runs before it exists; a denied ``status`` while the stack is down) the record
goes to ``<data_dir>/audit/spool.jsonl`` with its time and is appended, in
order, before the next record that reaches the database — so nothing is lost
and the log's order stays the order of events in this data folder.

:func:`sync_transitions` copies promotion and rollback transitions from the
event archive into the log (idempotent: each carries its event id as ``ref``);
the worker runs :func:`tick` every ``SELFLEARN_AUDIT_CHECKPOINT_S`` seconds,
so automatic transitions are logged and checkpointed without an operator.

A checkpoint is only signed when the log still matches the newest one
(same root at the old size): a rewritten or truncated log is never blessed by a
fresh signature.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from pymerkle import SqliteTree

from ops.access.audit_log import (
    GENESIS,
    TABLE,
    AuditLog,
    Finding,
    Record,
    Verification,
    canonical,
    check_chain,
    merkle_tree,
    root_of,
)
from ops.access.checkpoint import (
    BadCheckpoint,
    Checkpoint,
    CheckpointStore,
    SigningKey,
    parse_note,
)

log = logging.getLogger(__name__)
AUDIT_DIR = "audit"
SPOOL = "spool.jsonl"
TRANSITIONS = {"promotion.step_changed": "promotion.step",
               "promotion.rolled_back": "promotion.rollback"}


class CheckpointRefused(RuntimeError):
    """The log no longer matches its newest signed checkpoint; nothing was signed."""


@dataclass(frozen=True)
class Trail:
    """Where one installation's audit trail lives: the table, the key, the checkpoints."""

    database_url: str | None
    folder: Path
    table: str = TABLE

    @classmethod
    def of(cls, settings: Any, table: str = TABLE) -> Trail:
        """The trail of ``settings`` (no database URL when no PostgreSQL is known)."""
        from schemas.addresses import StackNotRunning, resolve

        try:
            url: str | None = resolve(settings).database_url
        except StackNotRunning:
            url = settings.configured("postgres")
        return cls(url, Path(settings.data_dir) / AUDIT_DIR, table)

    @property
    def log(self) -> AuditLog:
        if self.database_url is None:
            raise psycopg.OperationalError("no PostgreSQL address (stack not running)")
        return AuditLog(self.database_url, self.table)

    @property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.folder, self.table)

    def origin(self, key: SigningKey) -> str:
        return f"{key.name}/{self.table}"

    @contextmanager
    def _spool_lock(self) -> Iterator[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".spool.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.folder / f"{self.table}.{SPOOL}"

    def spooled(self) -> int:
        """Records waiting in the spool for the database."""
        path = self.folder / f"{self.table}.{SPOOL}"
        return len(path.read_bytes().splitlines()) if path.exists() else 0


def record(trail: Trail, actor: str, operation: str, target: str, outcome: str,
           detail: dict[str, Any] | None = None, *, ref: str | None = None,
           checkpoint: bool = True) -> int | None:
    """Append a record (spooled records first) and sign a checkpoint.

    Returns the record's sequence number, or None when it was spooled because
    PostgreSQL is unreachable. Never raises for an unreachable database.
    """
    # A spooled record gets a reference, so a drain cut short is never appended twice.
    entry = {"at": datetime.now(UTC).isoformat(), "actor": actor, "operation": operation,
             "target": target, "outcome": outcome, "detail": canonical(detail),
             "ref": ref or f"spool:{uuid.uuid4()}"}
    with trail._spool_lock() as spool:
        try:
            audit = trail.log
            with audit.connect() as conn:
                _drain(audit, conn, spool)
                seq = audit.append(actor, operation, target, outcome, entry["detail"], ref=ref,
                                   at=datetime.fromisoformat(entry["at"]), conn=conn)
        except psycopg.OperationalError as exc:
            # Expected before `selflearn up`: the record waits in the spool, in order.
            log.info("audit log unreachable (%s); record spooled to %s", exc, spool)
            with open(spool, "ab") as out:
                out.write(orjson.dumps(entry) + b"\n")
            return None
    if checkpoint:
        try:
            sign_checkpoint(trail)
        except (CheckpointRefused, BadCheckpoint, psycopg.Error, OSError) as exc:
            log.error("no checkpoint signed: %s", exc)
    return seq


def _drain(audit: AuditLog, conn: psycopg.Connection[Any], spool: Path) -> None:
    """Append the spooled records, in order, then empty the spool (caller holds its lock)."""
    if not spool.exists():
        return
    for line in spool.read_bytes().splitlines():
        e = orjson.loads(line)
        audit.append(e["actor"], e["operation"], e["target"], e["outcome"], e["detail"],
                     ref=e["ref"], at=datetime.fromisoformat(e["at"]), conn=conn)
    spool.unlink()


def sign_checkpoint(trail: Trail) -> Checkpoint | None:
    """Sign a checkpoint of the whole log, if it grew and still matches the newest one.

    The leaves signed so far are mirrored in ``<folder>/<table>.merkle.db`` (a
    pymerkle ``SqliteTree``), so a checkpoint reads only the records after the
    last one it signed: that record must still hash to its mirrored leaf and the
    new ones must chain on from it. Without a usable mirror (first run, deleted,
    behind the newest checkpoint) the whole log is read and checked against the
    newest checkpoint's root instead.

    Returns the new checkpoint, or None when the log did not grow.

    Raises
    ------
    CheckpointRefused
        The log is shorter than, or differs from, what was signed before.
    """
    key = SigningKey.load_or_create(trail.folder)
    store = trail.checkpoints
    with store.locked():
        previous = _newest(store, key)
        mirror = SqliteTree(str(trail.folder / f"{trail.table}.merkle.db"), algorithm="sha256")
        try:
            size = mirror.get_size()
            if previous is not None and (size < previous.size or
                                         root_of(mirror, previous.size) != previous.root):
                mirror.close()
                (trail.folder / f"{trail.table}.merkle.db").unlink()
                mirror = SqliteTree(str(trail.folder / f"{trail.table}.merkle.db"),
                                    algorithm="sha256")
                size = 0
            _extend(mirror, trail.log.records(from_seq=max(size, 1)), size, previous)
            size = mirror.get_size()
            if previous is not None and size == previous.size:
                return None
            cp = Checkpoint(trail.origin(key), size, root_of(mirror, size))
        finally:
            mirror.close()
        store.write(key.sign(cp))
        return cp


def _extend(mirror: SqliteTree, records: list[Record], size: int,
            previous: Checkpoint | None) -> None:
    """Append ``records`` (from number ``size``, or 1) to the mirror after checking them."""
    if size and (not records or records[0].seq != size
                 or hashlib.sha256(b"\x00" + records[0].body()).digest()  # RFC 6962 leaf
                 != mirror.get_leaf(size)):
        raise CheckpointRefused(f"record {size} of the audit log is missing or changed since "
                                "it was signed")
    new = records[1:] if size else records
    before = records[0] if size else None
    for r in new:
        if r.seq != (before.seq + 1 if before else 1) or r.computed_hash() != r.hash or \
                r.prev_hash != (before.hash if before else GENESIS):
            raise CheckpointRefused(f"record {r.seq} of the audit log does not chain on from "
                                    "the records signed before it")
        before = r
    if new:
        mirror.append_entries([r.body() for r in new])
    if previous is not None and not size:  # rebuilt: must reproduce the newest signed root
        if mirror.get_size() < previous.size:
            raise CheckpointRefused(f"the audit log has {mirror.get_size()} records, fewer "
                                    f"than the {previous.size} of its newest checkpoint")
        if root_of(mirror, previous.size) != previous.root:
            raise CheckpointRefused(f"the first {previous.size} records of the audit log no "
                                    "longer match their signed checkpoint")


def _newest(store: CheckpointStore, key: SigningKey) -> Checkpoint | None:
    try:
        return parse_note(store.latest.read_text(), key.vkey)
    except FileNotFoundError:
        return None


def verify(trail: Trail, vkey: str | None = None) -> Verification:
    """Check the whole log: chain, numbering, and every signed checkpoint's root and size.

    ``vkey`` pins the verifier key; by default the one in the data folder is used.
    """
    records = trail.log.records()
    result = Verification(size=len(records), findings=check_chain(records))
    if vkey is None:
        try:
            vkey = (trail.folder / "checkpoint.vkey").read_text().strip()
        except FileNotFoundError:
            vkey = ""
    notes = trail.checkpoints.notes()
    if not notes or not vkey:
        if records:
            result.findings.append(Finding("checkpoint", None, "no signed checkpoint (or no "
                                           "verifier key): truncation cannot be ruled out"))
        return result
    tree = merkle_tree(records)
    for note, written in notes:
        try:
            cp = parse_note(note, vkey)
        except BadCheckpoint as exc:
            result.findings.append(Finding("signature", None, f"checkpoint written {written}: "
                                           f"{exc}"))
            continue
        result.checkpoints += 1
        result.signed_size = max(result.signed_size, cp.size)
        if not cp.origin.endswith(f"/{trail.table}"):
            result.findings.append(Finding("checkpoint", None, f"checkpoint of another log "
                                           f"({cp.origin!r})"))
        elif cp.size > len(records):
            result.findings.append(Finding(
                "truncated", len(records) + 1, f"the log has {len(records)} records but a "
                f"checkpoint signed {written} covers {cp.size}: its tail was cut off"))
        elif root_of(tree, cp.size) != cp.root:
            result.findings.append(Finding(
                "checkpoint", cp.size, f"the first {cp.size} records do not match the "
                f"checkpoint signed {written}: records were changed, deleted, inserted or "
                "moved (and the chain rewritten)"))
    result.unsigned_tail = max(0, len(records) - result.signed_size)
    return result


def sync_transitions(trail: Trail, events_table: str = "events", limit: int = 10_000) -> int:
    """Copy archived promotion/rollback transitions not yet in the log; returns how many."""
    from projections.archive_sql import check_name

    audit = trail.log
    stmt = sql.SQL("""
        SELECT e.event_id, e.occurred_at, e.type, e.payload, e.src_topic, e.src_partition,
               e.src_offset
        FROM {e} e
        WHERE e.type = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM {a} a WHERE a.ref = e.event_id::text)
        ORDER BY e.occurred_at, e.event_id
        LIMIT %s""").format(e=sql.Identifier(check_name(events_table)),
                            a=sql.Identifier(audit.table))
    with audit.connect() as conn:
        audit.ensure_schema(conn)
        try:
            rows = conn.execute(stmt, (list(TRANSITIONS), limit)).fetchall()
        except psycopg.errors.UndefinedTable:
            return 0  # no worker has archived anything yet
        conn.commit()
        for event_id, occurred_at, kind, payload, topic, partition, offset in rows:
            p = payload if isinstance(payload, dict) else orjson.loads(payload)
            actor = p.get("operator") if p.get("manual") else "system:promotion"
            detail = {k: p.get(k) for k in ("from_step", "to_step", "champion", "challenger",
                                            "reason", "kind") if k in p}
            detail.update(event_id=str(event_id), occurred_at=occurred_at.isoformat(),
                          source=f"{topic}:{partition}@{offset}")
            audit.append(actor or "unknown", TRANSITIONS[kind], p["agent_id"], "applied",
                         detail, ref=str(event_id), conn=conn)
    return len(rows)


def tick(trail: Trail) -> int:
    """The worker's periodic duty: copy new transitions, then sign a checkpoint."""
    copied = sync_transitions(trail)
    sign_checkpoint(trail)
    return copied
