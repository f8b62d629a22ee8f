"""``selflearn report``: write the HTML report, or serve it live on localhost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ops.access import require
from ops.cli.common import DataDir, fail, load_settings, resolve_or_fail


def report(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the HTML (default: <data_dir>/report.html).")] = None,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Serve the report on localhost, regenerated every few seconds.")] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve (0: any free port).")]
    = 8765,
    hours: Annotated[float | None, typer.Option(
        "--hours", help="Only events of the last N hours (default: all archived events).")]
    = None,
    every: Annotated[float, typer.Option("--every", help="Seconds between regenerations.")]
    = 5.0,
    data_dir: DataDir = None,
) -> None:
    """Write a self-contained HTML report: live vs shadow metrics, canary, latency, vision."""
    from ops.report.generate import default_target, write_current
    from ops.report.server import serve as serve_report

    settings = load_settings(data_dir)
    require(settings, "report")
    addresses = resolve_or_fail(settings)
    target = out or default_target(settings)
    title = f"selflearn report · {settings.topic_prefix}"

    def regenerate(refresh: int | None = None) -> str:
        page, _ = write_current(settings, addresses, target, title=title, hours=hours,
                                refresh=refresh)
        return page

    if not serve:
        regenerate()
        typer.echo(f"report written to {Path(target).resolve()}")
        return
    try:
        server = serve_report(port, lambda: regenerate(refresh=max(1, round(every))),
                              every=every)
    except OSError as exc:
        fail(f"cannot listen on port {port} ({exc}); choose another with --port")
    typer.echo(f"serving the report on {server.url} (also written to "
               f"{Path(target).resolve()}); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
