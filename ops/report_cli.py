"""``selflearn report``: write the HTML report, or serve it live on localhost.

Registers itself on :data:`ops.cli.app` when imported (``from ops import report_cli``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from ops.cli import DataDir, app, fail, load_settings


@app.command()
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
    from ops.report import build_report, gather, write_report
    from ops.report import serve as serve_report
    from schemas.settings import StackNotRunning, resolve

    settings = load_settings(data_dir)
    try:
        addr = resolve(settings)
    except StackNotRunning as exc:
        fail(str(exc))
        return
    target = out or settings.data_dir / "report.html"
    cold = (settings.data_dir / "cold").resolve().as_uri()
    title = f"selflearn report · {settings.topic_prefix}"

    def regenerate(refresh: int | None = None) -> str:
        since = datetime.now(UTC) - timedelta(hours=hours) if hours else None
        events, policies, dead, notes = gather(addr.kafka_bootstrap, addr.database_url,
                                               addr.redis_url, settings.topic_prefix,
                                               since, cold_uri=cold)
        page = build_report(events, policies, dead, title, refresh=refresh, notes=notes)
        write_report(target, page)
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
        return
    typer.echo(f"serving the report on {server.url} (also written to "
               f"{Path(target).resolve()}); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
