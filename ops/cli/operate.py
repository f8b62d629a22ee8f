"""``selflearn promote | rollback``: operator overrides, recorded as events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table
from ops.usecases.operator_commands import WAIT_S

Operator = Annotated[str, typer.Option("--operator", help="Who asks (recorded in the event).")]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the new policy.")]


def promote(
    agent_id: Annotated[str, typer.Argument(help="The agent whose canary moves up.")],
    operator: Operator,
    challenger: Annotated[str | None, typer.Option(help="Model to promote from shadow.")]
    = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "manual promotion",
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Move an agent's canary one step up now (5 → 25 → 50 → 100 %)."""
    _command("promote", agent_id, operator, reason, challenger, wait, data_dir, as_json)


def rollback(
    agent_id: Annotated[str, typer.Argument(help="The agent to roll back.")],
    operator: Operator,
    reason: Annotated[str, typer.Option(help="Why (required, it is the audit record).")],
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Send an agent back to its last champion now."""
    _command("rollback", agent_id, operator, reason, None, wait, data_dir, as_json)


def _command(action: str, agent_id: str, operator: str, reason: str, challenger: str | None,
             wait: float, data_dir: str | None, as_json: bool) -> None:
    from ops.usecases.operator_commands import send_command
    from projections.archive import ArchiveUnavailable
    from schemas.settings import StackNotRunning

    settings = load_settings(data_dir)
    try:
        out = send_command(settings, agent_id, action, operator, reason, challenger, wait)
    except (StackNotRunning, ArchiveUnavailable) as exc:  # both RuntimeErrors: exit 1, not 2
        fail(str(exc))
    except (TimeoutError, RuntimeError) as exc:
        fail(str(exc), code=2)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    rows = [[k, (out["before"] or {}).get(k, "-"), out["after"][k]] for k in out["after"]]
    print_table(f"{action} {agent_id} by {operator}: applied in {out['seconds']} s",
                ["field", "before", "after"], rows, caption=f"command event {out['command']}")
