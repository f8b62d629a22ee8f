"""``selflearn up | down | status | fleet``: the embedded stack and the fleet at a glance."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from ops.access import require
from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table, resolve_or_fail


def up(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Start the servers not configured by SELFLEARN_* variables (broker, PostgreSQL, Redis)."""
    from ops.stack import lifecycle

    settings = load_settings(data_dir)
    require(settings, "up")
    began = time.monotonic()
    try:
        lifecycle.up(settings)
    except (lifecycle.StackError, OSError, RuntimeError) as exc:
        fail(str(exc))
    report = lifecycle.status(settings)
    report["seconds"] = round(time.monotonic() - began, 2)
    _show(report, as_json, title=f"selflearn stack up ({report['seconds']} s)")


def down(data_dir: DataDir = None) -> None:
    """Stop the servers that `selflearn up` started in this data folder (data is kept)."""
    from ops.stack import lifecycle

    settings = load_settings(data_dir)
    require(settings, "down")
    stopped = lifecycle.down(settings)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def status(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Show each server: address, who provides it, and whether it answers.

    Exits with code 1 when a server is unreachable.
    """
    from ops.stack import lifecycle

    settings = load_settings(data_dir)
    require(settings, "status")
    report = lifecycle.status(settings)
    reachable = all(info["reachable"] for info in report["servers"].values())
    if reachable:
        from ops.usecases.fleet import fleet_report
        from schemas.addresses import resolve

        report["fleet"] = fleet_report(settings, resolve(settings))
    _show(report, as_json, title="selflearn stack")
    if reachable and not as_json:
        print_fleet(report["fleet"])
    if not reachable:
        raise typer.Exit(1)


def fleet(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Per agent: live policy from Redis; dead letters; worker lag per partition."""
    from ops.usecases.fleet import fleet_report

    settings = load_settings(data_dir)
    require(settings, "fleet")
    report = fleet_report(settings, resolve_or_fail(settings))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_fleet(report)


def print_fleet(report: dict[str, Any]) -> None:
    """The fleet report (:func:`ops.usecases.fleet.fleet_report`) as rich tables."""
    print_table(f"fleet {report['prefix']!r}: {len(report['agents'])} agents",
                ["agent", "mode", "canary %", "champion", "challenger", "revision"],
                [[a, p["mode"], p["canary_percent"], p["champion"], p["challenger"] or "-",
                  p["revision"]] for a, p in report["agents"].items()])
    if report["lag"] is not None:
        print_table(f"worker lag (group {report['group']}): total {report['total_lag']}",
                    ["topic", "partition", "end", "committed", "lag"],
                    [[x["topic"], x["partition"], x["end"], x["committed"], x["lag"]]
                     for x in report["lag"] if x["end"]])
    else:
        typer.echo(f"worker lag: unknown ({report['lag_error']})")
    typer.echo(f"dead letters: {report['dead_letters']}")
    typer.echo(f"lost events (producer sequence gaps): {report.get('lost_events', 0)}")


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
