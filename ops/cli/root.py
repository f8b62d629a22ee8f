"""The root ``selflearn`` app: every command, registered explicitly, in ``--help`` order.

To add a command: write a function in the module of its group under
``ops/cli/`` (or a new module) that parses options, calls a use case and
prints; import heavy libraries (faust, mlflow, cv2, psycopg, aiokafka)
*inside* the function so ``selflearn --help`` stays fast; then add one line
to :data:`COMMANDS`. Command modules never import this module.

>>> [name for name, _ in COMMANDS][:3]
['up', 'down', 'status']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ops.cli import audit, measure, operate, privacy, replay, report, run, stack

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
    ("erase", privacy.erase),
    ("rotate-keys", privacy.rotate_keys),
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
    return app


app = build_app()
