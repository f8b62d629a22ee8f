"""The ``selflearn`` command line.

Command bodies stay thin: they parse options and call into ``ops`` modules.
To add a command, either decorate a function here with ``@app.command()``
and import its implementation *inside* the function (so ``selflearn --help``
stays fast; never import faust or mlflow at module level), or build a
``typer.Typer()`` in your own module and mount it with
``app.add_typer(your_app, name="group")`` at the end of this file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="selflearn",
    help="Event-sourced stream processor: run the embedded stack and the learning loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    str | None,
    typer.Option(
        "--data-dir", "-d",
        help="Data folder of the embedded stack (default: $SELFLEARN_DATA_DIR or ./.selflearn).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_settings(data_dir: str | None = None) -> Any:
    """Settings from the environment, with ``--data-dir`` taking precedence."""
    from schemas.settings import Settings

    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    return settings


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` in red on stderr and exit with ``code``."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def up(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Start the servers not configured by SELFLEARN_* variables (broker, PostgreSQL, Redis)."""
    from ops.stack import StackError, status
    from ops.stack import up as stack_up

    settings = load_settings(data_dir)
    began = time.monotonic()
    try:
        stack_up(settings)
    except (StackError, OSError, RuntimeError) as exc:
        fail(str(exc))
    report = status(settings)
    report["seconds"] = round(time.monotonic() - began, 2)
    _show(report, as_json, title=f"selflearn stack up ({report['seconds']} s)")


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop the servers that `selflearn up` started in this data folder (data is kept)."""
    from ops.stack import down as stack_down

    settings = load_settings(data_dir)
    stopped = stack_down(settings)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command("status")
def status_cmd(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Show each server: address, who provides it, and whether it answers.

    Exits with code 1 when a server is unreachable.
    """
    from ops.stack import status

    settings = load_settings(data_dir)
    report = status(settings)
    reachable = all(info["reachable"] for info in report["servers"].values())
    if reachable:
        from ops.fleet import fleet_report, print_fleet
        from schemas.settings import resolve

        report["fleet"] = fleet_report(settings, resolve(settings))
    _show(report, as_json, title="selflearn stack")
    if reachable and not as_json:
        print_fleet(report["fleet"])
    if not reachable:
        raise typer.Exit(1)


def _show(report: dict[str, Any], as_json: bool, title: str) -> None:
    """Print a status report as JSON or as a rich table with hints for failures."""
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=f"data folder: {report['data_dir']}")
    for column in ("server", "address", "source", "pid", "reachable"):
        table.add_column(column, overflow="fold")
    hints: list[str] = []
    for name, info in report["servers"].items():
        ok = info["reachable"]
        table.add_row(
            name, info["address"] or "-", info["source"],
            str(info["pid"] or "-"), "[green]yes[/]" if ok else "[red]no[/]",
        )
        if not ok:
            log = f" (log: {info['log']})" if info.get("log") else ""
            hint = info["error"] or "unreachable"
            if info["source"] != "missing":
                hint += f"; check the server, or set {info['env']} / run `selflearn up`"
            hints.append(f"{name}: {hint}{log}")
    console = Console()
    console.print(table)
    for hint in hints:
        console.print(f"[yellow]{hint}[/]", highlight=False)


def main() -> None:
    """Console-script entry point (``selflearn``)."""
    app()


# Commands defined in other modules register themselves on ``app`` when imported.
from ops import commands as _commands  # noqa: E402,F401
from ops import fleet as _fleet  # noqa: E402,F401
from ops import privacy_cli as _privacy_cli  # noqa: E402,F401
from ops import replay_cli as _replay_cli  # noqa: E402,F401
from ops import report_cli as _report_cli  # noqa: E402,F401

if __name__ == "__main__":
    # Run the imported module's app: it is the one other modules registered commands on.
    from ops.cli import main as _main

    _main()
