"""``selflearn promote | rollback``: operator overrides, recorded as events and audited."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ops.access import outcome, require
from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table
from ops.usecases.operator_commands import WAIT_S

Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the new policy.")]


def promote(
    agent_id: Annotated[str, typer.Argument(help="The agent whose canary moves up.")],
    challenger: Annotated[str | None, typer.Option(help="Model to promote from shadow.")]
    = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "manual promotion",
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Move an agent's canary one step up now (5 → 25 → 50 → 100 %). Needs operator."""
    _command("promote", agent_id, reason, challenger, wait, data_dir, as_json)


def rollback(
    agent_id: Annotated[str, typer.Argument(help="The agent to roll back.")],
    reason: Annotated[str, typer.Option(help="Why (required, it is the audit record).")],
    wait: Wait = WAIT_S,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Send an agent back to its last champion now. Needs operator."""
    _command("rollback", agent_id, reason, None, wait, data_dir, as_json)


def _command(action: str, agent_id: str, reason: str, challenger: str | None,
             wait: float, data_dir: str | None, as_json: bool) -> None:
    from ops.usecases.operator_commands import send_command
    from projections.archive import ArchiveUnavailable
    from schemas.addresses import StackNotRunning

    settings = load_settings(data_dir)
    actor = require(settings, action, agent_id, {"reason": reason, "challenger": challenger})
    try:
        out = send_command(settings, agent_id, action, reason, challenger, wait)
    except (StackNotRunning, ArchiveUnavailable) as exc:  # both RuntimeErrors: exit 1, not 2
        outcome(settings, actor, action, agent_id, "failed", {"error": str(exc)})
        fail(str(exc))
    except (TimeoutError, RuntimeError) as exc:
        outcome(settings, actor, action, agent_id, "refused" if isinstance(exc, RuntimeError)
                else "timeout", {"error": str(exc)})
        fail(str(exc), code=2)
    outcome(settings, actor, action, agent_id, "applied",
            {"command": out["command"], "revision": out["after"]["revision"]})
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    rows = [[k, (out["before"] or {}).get(k, "-"), out["after"][k]] for k in out["after"]]
    print_table(f"{action} {agent_id} by {actor.name}: applied in {out['seconds']} s",
                ["field", "before", "after"], rows, caption=f"command event {out['command']}")
