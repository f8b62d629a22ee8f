"""The report's audit-trail and erasure section: who did what during the run, and proof.

:func:`load_trail` reads the audit log (``ops.access.trail``) from a moment
on, verifies the whole log against its signed checkpoints, and for every
erasure in that window counts the archived events that became unreadable and
reads what each projection forgot (the workers' totals in Redis,
``<prefix>:erasure:<subject>``). :func:`trail_section` turns that into HTML.

>>> from datetime import UTC, datetime
>>> view = TrailView(where={"audit log": "table audit_log"}, verified="intact (3 records)",
...     records=[{"seq": 1, "at": datetime(2025, 1, 1, tzinfo=UTC), "actor": "alice",
...               "operation": "erase", "target": "r-1", "outcome": "denied",
...               "detail": {"needs": ["admin"]}}])
>>> page = trail_section(view)
>>> "alice" in page and "denied" in page and "intact" in page
True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ops.report.html import esc, fmt_time, table

SHOWN = 200  # records listed; the counts above the table cover all of them
_FORGOT = ("features", "memory", "learning", "archive")


@dataclass
class TrailView:
    """What the section shows: where the trail lives, its verification, records, erasures."""

    where: dict[str, str] = field(default_factory=dict)
    verified: str = ""
    intact: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)
    erasures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _where(trail: Any, database_url: str | None) -> dict[str, str]:
    import psycopg

    out = {}
    if database_url:
        info = psycopg.conninfo.conninfo_to_dict(database_url)  # no password shown
        out["audit log"] = (f"PostgreSQL table {trail.table} at {info.get('host', 'localhost')}:"
                            f"{info.get('port', 5432)}/{info.get('dbname', '')}")
    out["signed checkpoint"] = str(trail.checkpoints.latest)
    out["verifier key"] = str(trail.folder / "checkpoint.vkey")
    return out


def _unreadable(database_url: str, subject: str) -> dict[str, int]:
    """Archived events of ``subject`` whose personal text is sealed or erased, by type."""
    import psycopg

    from schemas.protect import personal_paths

    counts: Counter[str] = Counter()
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        try:
            rows = conn.execute("SELECT type, payload::text FROM events WHERE subject_id = %s",
                                (subject,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    for kind, payload in rows:
        if personal_paths(kind, orjson.loads(payload)):
            counts[kind] += 1
    return dict(counts)


def forgot_counts(redis_url: str, prefix: str, subject: str) -> dict[str, int] | None:
    """What the workers forgot of ``subject`` so far, per projection (``copies`` handled)."""
    import redis

    r = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        got: dict[bytes, bytes] = r.hgetall(f"{prefix}:erasure:{subject}")  # type: ignore[assignment]
        raw = {k.decode(): int(v) for k, v in got.items()}
    finally:
        r.close()
    return raw or None


def load_trail(settings: Any, addresses: Any, since: datetime | None) -> TrailView:
    """The audit records from ``since`` (all when None), the log's verification, erasures.

    Raises only for an unreachable audit log; the caller turns that into a note.
    """
    from ops.access.trail import Trail, verify

    trail = Trail.of(settings)
    view = TrailView(where=_where(trail, trail.database_url))
    result = verify(trail)
    view.intact = result.ok
    view.verified = (f"intact: {result.size} records, {result.checkpoints} signed checkpoints "
                     f"(newest covers {result.signed_size})" if result.ok else
                     f"{len(result.findings)} finding(s): "
                     + "; ".join(f.message for f in result.findings[:3]))
    for r in trail.log.records(since=since):
        detail = orjson.loads(r.detail) if r.detail else {}
        view.records.append({"seq": r.seq, "at": r.at, "actor": r.actor,
                             "operation": r.operation, "target": r.target,
                             "outcome": r.outcome, "detail": detail})
        if r.operation == "erase" and r.outcome == "applied":
            view.erasures.append({"subject": r.target, "at": r.at, "by": r.actor,
                                  "key_versions": detail.get("key_versions"),
                                  "forgot": detail.get("forgot")})
    for e in view.erasures:
        try:
            e["unreadable"] = _unreadable(addresses.database_url, e["subject"])
        except Exception as exc:  # noqa: BLE001 - shown as a note, the rest stands
            view.notes.append(f"archive unreadable for {e['subject']}: {exc}")
        try:
            e["forgot"] = forgot_counts(addresses.redis_url, settings.topic_prefix,
                                  e["subject"]) or e["forgot"]
        except Exception as exc:  # noqa: BLE001
            view.notes.append(f"Redis unreadable for {e['subject']}: {exc}")
    return view


def _summary(op: str, d: dict[str, Any]) -> str:
    """The detail worth a glance, per kind of record."""
    if op.startswith("promotion."):
        step = f"{d.get('from_step')} → {d.get('to_step', 0)} %"
        return f"{step} {d.get('challenger') or ''} (champion {d.get('champion')}): " \
               f"{d.get('reason', '')}"
    if "needs" in d:
        return f"needs {' or '.join(d['needs'])}; has {', '.join(d.get('roles') or []) or 'none'}"
    keep = {k: v for k, v in d.items() if v is not None and k in (
        "reason", "role", "key_versions", "kek_version", "rewrapped", "forgot", "out", "rows")}
    return ", ".join(f"{k} {v}" for k, v in keep.items())


def trail_section(view: TrailView) -> str:
    """HTML: where the trail is, whether it verifies, the erasures, the records."""
    parts = ["<section id=\"audit-trail\"><h2>Audit trail</h2>"]
    parts += [f'<div class="note">{esc(n)}</div>' for n in view.notes]
    state = "" if view.intact else ' class="rollback"'
    parts.append(f"<p><b>audit-log verify</b>: <span{state}>{esc(view.verified)}</span></p>")
    parts.append(table(["what", "where"], [[esc(k), f"<code>{esc(v)}</code>"]
                                           for k, v in view.where.items()]))
    if view.erasures:
        parts.append("<h3>Erasures (crypto-shredding)</h3>")
        rows = []
        for e in view.erasures:
            unread = e.get("unreadable") or {}
            forgot = e.get("forgot") or {}
            rows.append([esc(e["subject"]), esc(fmt_time(e["at"])), esc(e["by"]),
                         esc(e.get("key_versions", "—")),
                         f"{sum(unread.values()):,} ("
                         + esc(", ".join(f"{k} {v}" for k, v in sorted(unread.items())))
                         + ")",
                         *[esc(forgot.get(k, "—")) for k in _FORGOT]])
        parts.append(table(["subject", "at", "by", "key versions destroyed",
                            "archived events now unreadable", *(f"{k} forgot" for k in _FORGOT)],
                           rows, {3, 5, 6, 7, 8}))
    counts = Counter((r["operation"], r["outcome"]) for r in view.records)
    parts.append(f"<h3>{len(view.records):,} records in this report's window</h3>")
    parts.append('<p class="muted">' + esc(", ".join(
        f"{op} {outcome} ×{n}" for (op, outcome), n in sorted(counts.items()))) + "</p>")
    shown = view.records[-SHOWN:]
    if len(view.records) > len(shown):
        parts.append(f'<p class="muted">the last {SHOWN} are listed '
                     "(<code>selflearn audit-log show</code> lists all)</p>")
    rows = [[str(r["seq"]), esc(fmt_time(r["at"])), esc(r["actor"]), esc(r["operation"]),
             esc(r["target"]),
             f'<span class="rollback">{esc(r["outcome"])}</span>' if r["outcome"] in (
                 "denied", "failed") or r["operation"] == "promotion.rollback"
             else esc(r["outcome"]),
             esc(_summary(r["operation"], r["detail"]))] for r in shown]
    parts.append(table(["#", "at", "actor", "operation", "target", "outcome", "detail"], rows,
                       {0}))
    return "".join(parts) + "</section>"
