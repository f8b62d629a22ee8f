"""The audit log: an append-only, hash-chained table in PostgreSQL.

Each record holds a dense sequence number (1, 2, 3, … with no gaps), the actor,
the operation, its target, the outcome, the time, a JSON detail, an optional
reference (the event id of a promotion transition, so the worker's periodic
copy is idempotent) and the SHA-256 of the previous record. A record's hash is
the SHA-256 of its canonical bytes (:meth:`Record.body`), which also are its
leaf in the RFC 6962 Merkle tree (``pymerkle``) whose roots the signed
checkpoints (``ops.access.checkpoint``) carry.

Append-only for the application: triggers refuse UPDATE, DELETE and TRUNCATE
for every role (the embedded PostgreSQL connects as a superuser, whom
``REVOKE`` does not bind; ``REVOKE`` is still issued for other roles). A
superuser can switch triggers off (``session_replication_role``), which is why
:func:`verify` does not trust the table: it recomputes every hash, follows the
chain and compares the Merkle roots with the signed checkpoints kept outside
the database.

Appends take a transaction-scoped advisory lock, read the last record and
insert the next one, so numbers stay dense with any number of writers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from pymerkle import BaseMerkleTree, InmemoryTree

TABLE = "audit_log"
GENESIS = bytes(32)  # "previous hash" of record 1
_LOCK = 0x5E1F_A0D1  # advisory lock key of appends and DDL
_READY: set[tuple[str, str]] = set()  # (database, table) whose DDL ran in this process
_COLUMNS = ("seq", "at", "actor", "operation", "target", "outcome", "detail", "ref",
            "prev_hash", "hash")


@dataclass(frozen=True)
class Record:
    """One audit record as stored (``hash`` covers every other field)."""

    seq: int
    at: datetime
    actor: str
    operation: str
    target: str
    outcome: str
    detail: str  # canonical JSON text
    ref: str | None
    prev_hash: bytes
    hash: bytes = b""

    def body(self) -> bytes:
        """Canonical bytes: what is hashed and what the Merkle tree's leaf holds.

        >>> r = Record(1, datetime(2025, 1, 1, tzinfo=UTC), "alice", "promote", "a", "allowed",
        ...            "{}", None, GENESIS)
        >>> r.body()[:40]
        b'[1,"2025-01-01T00:00:00.000000+00:00","a'
        """
        at = self.at.astimezone(UTC).isoformat(timespec="microseconds")
        return orjson.dumps([self.seq, at, self.actor, self.operation, self.target,
                             self.outcome, self.detail, self.ref, self.prev_hash.hex()])

    def computed_hash(self) -> bytes:
        return hashlib.sha256(self.body()).digest()

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at.astimezone(UTC).isoformat(),
                "actor": self.actor, "operation": self.operation, "target": self.target,
                "outcome": self.outcome, "detail": orjson.loads(self.detail), "ref": self.ref,
                "hash": self.hash.hex()}


def canonical(detail: dict[str, Any] | None) -> str:
    """Detail as canonical JSON text (sorted keys), so hashing never depends on dict order."""
    return orjson.dumps(detail or {}, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _ddl(table: str) -> list[sql.Composed]:
    t, fn = sql.Identifier(table), sql.Identifier(f"{table}_append_only")
    return [
        sql.SQL("""CREATE TABLE IF NOT EXISTS {t} (
            seq       bigint      PRIMARY KEY CHECK (seq >= 1),
            at        timestamptz NOT NULL,
            actor     text        NOT NULL,
            operation text        NOT NULL,
            target    text        NOT NULL,
            outcome   text        NOT NULL,
            detail    text        NOT NULL,
            ref       text        UNIQUE,
            prev_hash bytea       NOT NULL,
            hash      bytea       NOT NULL)""").format(t=t),
        sql.SQL("""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log % is append-only: % refused',
                    TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
            END $$""").format(fn=fn),
        sql.SQL("CREATE OR REPLACE TRIGGER {name} BEFORE UPDATE OR DELETE ON {t} "
                "FOR EACH ROW EXECUTE FUNCTION {fn}()").format(
            name=sql.Identifier(f"{table}_no_change"), t=t, fn=fn),
        sql.SQL("CREATE OR REPLACE TRIGGER {name} BEFORE TRUNCATE ON {t} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(
            name=sql.Identifier(f"{table}_no_truncate"), t=t, fn=fn),
        sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {t} FROM PUBLIC").format(t=t),
    ]


class AuditLog:
    """The audit table of one database (``table`` lets tests use a private one).

    Parameters
    ----------
    database_url
        libpq URL of the database holding the log.
    table
        Table name (lower case, digits, underscores).
    """

    def __init__(self, database_url: str, table: str = TABLE) -> None:
        from projections.archive_sql import check_name

        self.database_url = database_url
        self.table = check_name(table)

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection (short timeout: an audit write must not hang a command)."""
        return psycopg.connect(self.database_url, connect_timeout=3)

    def ensure_schema(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """Create the table and its append-only triggers (idempotent, serialised)."""
        if (self.database_url, self.table) in _READY:
            return
        own = conn is None
        conn = conn or self.connect()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                for stmt in _ddl(self.table):
                    conn.execute(stmt)
            _READY.add((self.database_url, self.table))
        finally:
            if own:
                conn.close()

    def append(self, actor: str, operation: str, target: str, outcome: str,
               detail: dict[str, Any] | str | None = None, *, ref: str | None = None,
               at: datetime | None = None, conn: psycopg.Connection[Any] | None = None
               ) -> int:
        """Append one record; returns its sequence number.

        With ``ref``, a record already holding that reference is not duplicated
        (its number is returned).
        """
        own = conn is None
        conn = conn or self.connect()
        try:
            self.ensure_schema(conn)
            text = detail if isinstance(detail, str) else canonical(detail)
            t = sql.Identifier(self.table)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                if ref is not None:
                    hit = conn.execute(sql.SQL("SELECT seq FROM {t} WHERE ref = %s").format(t=t),
                                       (ref,)).fetchone()
                    if hit:
                        return int(hit[0])
                last = conn.execute(sql.SQL("SELECT seq, hash FROM {t} ORDER BY seq DESC "
                                            "LIMIT 1").format(t=t)).fetchone()
                seq, prev = (int(last[0]) + 1, bytes(last[1])) if last else (1, GENESIS)
                rec = Record(seq, at or datetime.now(UTC), actor, operation, target, outcome,
                             text, ref, prev)
                conn.execute(
                    sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
                        t=t, c=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
                        v=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS))),
                    (rec.seq, rec.at, rec.actor, rec.operation, rec.target, rec.outcome,
                     rec.detail, rec.ref, rec.prev_hash, rec.computed_hash()))
            return seq
        finally:
            if own:
                conn.close()

    def records(self, *, actor: str | None = None, operation: str | None = None,
                since: datetime | None = None, from_seq: int | None = None,
                limit: int | None = None, newest_first: bool = False) -> list[Record]:
        """Records in sequence order, optionally filtered (``operation``: exact or prefix.*)."""
        where: list[sql.Composable] = []
        params: list[Any] = []
        if from_seq is not None:
            where.append(sql.SQL("seq >= %s"))
            params.append(from_seq)
        if actor:
            where.append(sql.SQL("actor = %s"))
            params.append(actor)
        if operation:
            if operation.endswith("*"):
                where.append(sql.SQL("operation LIKE %s"))
                params.append(operation[:-1].replace("%", r"\%").replace("_", r"\_") + "%")
            else:
                where.append(sql.SQL("operation = %s"))
                params.append(operation)
        if since:
            where.append(sql.SQL("at >= %s"))
            params.append(since)
        stmt = sql.SQL("SELECT {c} FROM {t}{w} ORDER BY seq{d}{lim}").format(
            c=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), t=sql.Identifier(self.table),
            w=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
            d=sql.SQL(" DESC") if newest_first else sql.SQL(""),
            lim=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL(""))
        with self.connect() as conn:
            self.ensure_schema(conn)
            rows = conn.execute(stmt, params).fetchall()
        return [Record(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8]),
                       bytes(r[9])) for r in rows]


def merkle_tree(records: Iterable[Record]) -> InmemoryTree:
    """RFC 6962 tree over the records' canonical bytes, in the order given."""
    tree = InmemoryTree(algorithm="sha256")
    bodies = [r.body() for r in records]
    if bodies:
        tree.append_entries(bodies)
    return tree


def root_of(tree: BaseMerkleTree, size: int) -> bytes:
    """Merkle root of the first ``size`` leaves (RFC 6962: the empty tree hashes b'')."""
    if size == 0:
        return hashlib.sha256(b"").digest()
    return bytes(tree.get_root(size))


@dataclass
class Finding:
    """One thing :func:`verify` found wrong."""

    kind: str  # modified|deleted|inserted|reordered|chain|truncated|checkpoint|signature
    seq: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


@dataclass
class Verification:
    """Result of :func:`verify`: ``ok`` when there is no finding."""

    size: int
    findings: list[Finding] = field(default_factory=list)
    checkpoints: int = 0
    signed_size: int = 0  # largest size covered by a valid signed checkpoint
    unsigned_tail: int = 0  # records after the newest valid checkpoint

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "size": self.size, "checkpoints": self.checkpoints,
                "signed_size": self.signed_size, "unsigned_tail": self.unsigned_tail,
                "findings": [f.as_dict() for f in self.findings]}


def check_chain(records: Sequence[Record]) -> list[Finding]:
    """Dense numbers, each hash recomputed, each record chained to the one before."""
    found: list[Finding] = []
    by_hash = {r.hash: r.seq for r in records}
    expected, prev, before = 1, GENESIS, None
    for r in records:
        if r.seq > expected:
            gap = f"{expected}" if r.seq == expected + 1 else f"{expected}..{r.seq - 1}"
            found.append(Finding("deleted", expected, f"record(s) {gap} missing: the numbers "
                                                      "must be dense"))
        if r.computed_hash() != r.hash:
            found.append(Finding("modified", r.seq, f"record {r.seq} does not match its hash: "
                                                    "its content was changed"))
        if r.prev_hash != prev:
            other = by_hash.get(r.prev_hash)
            if other is not None and before is not None and before.prev_hash == r.prev_hash:
                found.append(Finding("inserted", before.seq, f"record {before.seq} was "
                                     f"inserted: it and record {r.seq} both follow record "
                                     f"{other}"))
            elif other is not None:
                found.append(Finding("reordered", r.seq, f"record {r.seq} chains to record "
                                     f"{other}, not to the record before it: records moved"))
            else:
                found.append(Finding("chain", r.seq, f"record {r.seq} chains to a record that "
                                     "is not in the log (one before it was deleted, changed "
                                     "or inserted)"))
        expected, prev, before = r.seq + 1, r.hash, r
    return found
