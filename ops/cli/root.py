"""The root ``selflearn`` app: every command, registered explicitly, in ``--help`` order.

To add a command: write a function in the module of its group under
``ops/cli/`` (or a new module) that parses options, calls a use case and
prints; import heavy libraries (faust, mlflow, cv2, psycopg, aiokafka)
*inside* the function so ``selflearn --help`` stays fast; then add one line
to :data:`COMMANDS` (or to a group of :data:`GROUPS`, for ``selflearn GROUP NAME``).
Command modules never import this module. Every command checks the caller's role
first (``ops.access.require``; the operation is the command path, e.g.
``audit-log.verify``, listed in ``ops/access/policy.csv``).

>>> [name for name, _ in COMMANDS][:3]
['up', 'down', 'status']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ops.cli import access, audit, lineage, measure, operate, privacy, replay, report, run, stack

COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("up", stack.up),
    ("down", stack.down),
    ("status", stack.status),
    ("worker", run.worker),
    ("bench", measure.bench),
    ("evaluate", measure.evaluate),
    ("vision", run.vision),
    ("demo", run.demo),
    ("fleet", stack.fleet),
    ("replay", replay.replay),
    ("audit", audit.audit),
    ("promote", operate.promote),
    ("rollback", operate.rollback),
    ("report", report.report),
    ("export", privacy.export),
    ("lineage", lineage.lineage),
    ("erase", privacy.erase),
    ("rotate-keys", privacy.rotate_keys),
)

Command = tuple[str, Callable[..., Any]]
GROUPS: tuple[tuple[str, str, tuple[Command, ...]], ...] = (
    ("role", "Who holds which role (admins change them).",
     (("grant", access.role_grant), ("revoke", access.role_revoke), ("list", access.role_list))),
    ("audit-log", "The tamper-evident audit log.",
     (("verify", access.audit_log_verify), ("show", access.audit_log_show))),
)


def build_app() -> typer.Typer:
    """A fresh ``selflearn`` app with every command of :data:`COMMANDS` registered."""
    app = typer.Typer(
        name="selflearn",
        help="Event-sourced stream processor: run the embedded stack and the learning loop.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, command in COMMANDS:
        app.command(name)(command)
    for group, help_text, commands in GROUPS:
        sub = typer.Typer(help=help_text, no_args_is_help=True)
        for name, command in commands:
            sub.command(name)(command)
        app.add_typer(sub, name=group)
    return app


app = build_app()
