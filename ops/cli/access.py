"""``selflearn role grant|revoke|list`` and ``selflearn audit-log verify|show``.

Registered as the ``role`` and ``audit-log`` groups in :mod:`ops.cli.root`; the
logic lives in ``ops.access.rbac`` and ``ops.access.trail`` (docs/access.md).
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table

User = Annotated[str, typer.Argument(help="The identity (SELFLEARN_IDENTITY, identity file "
                                          "or OS user name).")]
Role = Annotated[str, typer.Argument(help="viewer | operator | auditor | admin")]


# ----------------------------------------------------------------------- roles

def _change(action: str, user: str, role: str, data_dir: str | None) -> None:
    from ops.access import outcome, require
    from ops.access.rbac import RoleStore

    settings = load_settings(data_dir)
    actor = require(settings, f"role.{action}", user, {"role": role})
    store = RoleStore(settings.data_dir)
    try:
        changed = store.grant(user, role) if action == "grant" else store.revoke(user, role)
    except ValueError as exc:
        outcome(settings, actor, f"role.{action}", user, "failed", {"role": role,
                                                                      "error": str(exc)})
        fail(str(exc))
        return
    outcome(settings, actor, f"role.{action}", user, "applied" if changed else "unchanged",
            {"role": role})
    verb = {"grant": ("granted", "already had"), "revoke": ("revoked", "did not have")}[action]
    typer.echo(f"{role} {verb[0]} {'to' if action == 'grant' else 'from'} {user}" if changed
               else f"{user} {verb[1]} {role}: nothing changed")


def role_grant(user: User, role: Role, data_dir: DataDir = None) -> None:
    """Give USER the ROLE (admin only); stored in <data_dir>/access/roles.csv."""
    _change("grant", user, role, data_dir)


def role_revoke(user: User, role: Role, data_dir: DataDir = None) -> None:
    """Take ROLE from USER (admin only); the last admin cannot be removed."""
    _change("revoke", user, role, data_dir)


def role_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Who holds which role, and what each role may run."""
    from ops.access import require
    from ops.access.rbac import ROLES, RoleStore, role_operations

    settings = load_settings(data_dir)
    actor = require(settings, "role.list")
    holders: dict[str, list[str]] = {}
    for user, role in RoleStore(settings.data_dir).load():
        holders.setdefault(user, []).append(role)
    report: dict[str, Any] = {"you": actor.name, "identity_source": actor.source,
              "assignments": {u: sorted(r, key=ROLES.index) for u, r in sorted(holders.items())},
              "roles": {r: sorted(role_operations()[r]) for r in ROLES},
              "file": str(RoleStore(settings.data_dir).path)}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_table("role assignments", ["user", "roles"],
           [[u, ", ".join(r)] for u, r in report["assignments"].items()],
           caption=f"{report['file']}; you are {actor.name} ({actor.source})")
    print_table("what each role may run", ["role", "operations"],
           [[r, ", ".join(ops)] for r, ops in report["roles"].items()],
           caption="operator and auditor include viewer; admin includes all")


# ------------------------------------------------------------------- audit log

def _trail(settings: Any) -> Any:
    from ops.access.trail import Trail

    trail = Trail.of(settings)
    if trail.database_url is None:
        fail("no PostgreSQL: run `selflearn up` or set SELFLEARN_DATABASE_URL")
    return trail


def _sync(trail: Any) -> None:
    """Bring in transitions the worker archived since its last periodic copy."""
    import psycopg

    from ops.access.trail import sync_transitions

    try:
        sync_transitions(trail)
    except psycopg.Error as exc:
        typer.echo(f"warning: transitions not copied from the archive: {exc}", err=True)


def audit_log_verify(
    vkey: Annotated[str | None, typer.Option(
        "--vkey", help="Pinned verifier key (string or file); default: the data folder's.")]
    = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Recompute the chain and every signed checkpoint; exit 1 on any finding.

    Catches modified, deleted, inserted and reordered records and a log cut
    shorter than a signed checkpoint.
    """
    import psycopg

    from ops.access import require
    from ops.access.trail import verify as verify_trail

    settings = load_settings(data_dir)
    require(settings, "audit-log.verify")
    trail = _trail(settings)
    if vkey and Path(vkey).is_file():
        vkey = Path(vkey).read_text().strip()
    _sync(trail)
    try:
        result = verify_trail(trail, vkey)
    except psycopg.Error as exc:
        fail(f"audit log unreadable: {exc}")
        return
    report = {**result.as_dict(), "table": trail.table,
              "checkpoint": str(trail.checkpoints.latest), "vkey_file":
              str(trail.folder / "checkpoint.vkey"), "spooled": trail.spooled()}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        if result.findings:
            print_table(f"audit log {trail.table}: {len(result.findings)} finding(s)",
                   ["kind", "seq", "what"],
                   [[f.kind, f.seq or "-", f.message] for f in result.findings])
        state = "OK" if result.ok else "TAMPERED"
        typer.echo(f"audit log {state}: {result.size} records, {result.checkpoints} signed "
                   f"checkpoints (largest covers {result.signed_size}), "
                   f"{result.unsigned_tail} after the newest; checkpoint {report['checkpoint']}")
    if not result.ok:
        raise typer.Exit(1)


def audit_log_show(
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    operation: Annotated[str | None, typer.Option(
        help="Only this operation (a trailing * matches a prefix: 'promotion.*').")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO).")] = None,
    limit: Annotated[int, typer.Option(help="At most N records, newest first (0: all).")] = 50,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """List audit records, newest first, with filters."""
    from ops.access import require
    from ops.cli.replay import parse_time

    settings = load_settings(data_dir)
    require(settings, "audit-log.show")
    trail = _trail(settings)
    _sync(trail)
    records = trail.log.records(actor=actor, operation=operation, since=parse_time(since),
                                limit=limit or None, newest_first=True)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    print_table(f"audit log {trail.table}: {len(records)} record(s)",
           ["seq", "time (UTC)", "actor", "operation", "target", "outcome", "detail"],
           [[r.seq, f"{r.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", r.actor, r.operation,
             r.target, r.outcome, _short(r.detail)] for r in records])


def _short(detail: str) -> str:
    """The detail without the identity bookkeeping, for a table cell."""
    data = json.loads(detail)
    for k in ("identity_source", "os_user", "roles"):
        data.pop(k, None)
    text = ", ".join(f"{k}={v}" for k, v in data.items())
    return text if len(text) <= 80 else text[:77] + "..."
