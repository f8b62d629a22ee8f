"""The one check every command makes first: :func:`authorize` (and :func:`require` for the CLI).

``authorize(settings, "promote", "task-estimator")`` identifies the caller,
checks their roles against the policy, writes the audit record (always when
denied; when allowed, for privileged operations) and returns the
:class:`~ops.access.rbac.Actor` — or raises :class:`~ops.access.rbac.Denied`
before anything has changed. :func:`require` is the same for a typer command:
a denial prints its message and exits with :data:`DENIED_EXIT`.

Every call is checked and audited, except with ``once=True`` when this process
was already allowed the same operation: ``selflearn worker`` checks in the CLI,
then ``ops.worker_app`` (also started directly by ``faust -A``) checks once more
without a second record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops.access.rbac import ANY, Actor, Denied, decide, needed_roles, privileged

DENIED_EXIT = 77  # sysexits EX_NOPERM
_allowed: dict[tuple[Path, str, str, str], Actor] = {}


def authorize(settings: Any, operation: str, target: str = ANY,
              detail: dict[str, Any] | None = None, *, once: bool = False) -> Actor:
    """Check that the caller may run ``operation`` on ``target``; audit the decision.

    Parameters
    ----------
    settings
        :class:`schemas.settings.Settings` (identity, data folder, PostgreSQL).
    operation
        Operation name as in ``ops/access/policy.csv`` (``"audit-log.verify"``).
    target
        The agent or user acted on; ``"*"`` when there is none.
    detail
        Parameters worth keeping in the audit record (a reason, a role).
    once
        Return at once, without a new record, if this process was already
        allowed this operation on this target as this caller.

    Raises
    ------
    Denied
        The caller's roles do not allow it; the denial is in the audit log.

    >>> import tempfile
    >>> from schemas.settings import Settings
    >>> s = Settings(data_dir=tempfile.mkdtemp(), identity="mallory", _env_file=None,
    ...              database_url="postgresql://127.0.0.1:1/none")  # unreachable: spooled
    >>> authorize(s, "status")
    Traceback (most recent call last):
    ...
    ops.access.rbac.Denied: access denied: mallory (SELFLEARN_IDENTITY) may not run status: ...
    """
    actor, allowed = decide(settings, operation, target)
    key = (Path(settings.data_dir).resolve(), operation, target, actor.name)
    if once and allowed and key in _allowed:
        return _allowed[key]
    if not allowed or privileged(operation):
        from ops.access.trail import Trail, record

        info = {**actor.as_detail(), **(detail or {})}
        if not allowed:
            info["needs"] = needed_roles(operation, target)
        record(Trail.of(settings), actor.name, operation, target,
               "allowed" if allowed else "denied", info)
    if not allowed:
        raise Denied(actor, operation, target, needed_roles(operation, target))
    _allowed[key] = actor
    return actor


def require(settings: Any, operation: str, target: str = ANY,
            detail: dict[str, Any] | None = None) -> Actor:
    """:func:`authorize` for a typer command: a denial prints why and exits 77."""
    try:
        return authorize(settings, operation, target, detail)
    except Denied as exc:
        import typer
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]{exc}[/]", highlight=False)
        raise typer.Exit(DENIED_EXIT) from None


def outcome(settings: Any, actor: Actor, operation: str, target: str, result: str,
            detail: dict[str, Any] | None = None) -> int | None:
    """Record how a privileged operation ended (``applied``, ``refused``, ``failed`` …)."""
    from ops.access.trail import Trail, record

    return record(Trail.of(settings), actor.name, operation, target, result, detail)
