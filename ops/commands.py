"""``selflearn worker | bench | evaluate``: the long-running and measuring commands."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli import AsJson, DataDir, app, fail, load_settings

BENCHES = "ops.benches"


@app.command()
def worker(
    data_dir: DataDir = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Run a Faust worker (features, projections); start more to scale out by partitions."""
    import sys

    from schemas.settings import StackNotRunning, resolve

    settings = load_settings(data_dir)
    try:
        resolve(settings)
    except StackNotRunning as exc:
        fail(str(exc))
    from ops.worker_app import app as faust_app

    sys.argv = ["faust", "-A", "ops.worker_app", "worker", "-l", loglevel, "--without-web"]
    faust_app.main()


def _bench_names() -> list[str]:
    package = importlib.import_module(BENCHES)
    modules = pkgutil.iter_modules(package.__path__)
    return sorted(m.name for m in modules if not m.name.startswith("_"))


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Which benchmark (see `selflearn bench list`).")],
    as_json: AsJson = False,
) -> None:
    """Run a benchmark; it starts what it needs and prints one flat JSON object."""
    names = _bench_names()
    if name == "list":
        typer.echo("\n".join(names))
        return
    if name not in names:
        fail(f"unknown benchmark {name!r}; available: {', '.join(names)}")
    result = importlib.import_module(f"{BENCHES}.{name}").run()
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench {name}")
    table.add_column("key")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    Console().print(table)


@app.command()
def evaluate(
    what: Annotated[str, typer.Argument(help="storypoints | changes | pii")],
    data: Annotated[Path | None, typer.Option("--data", help="Folder of CSVs (default: shipped).")]
    = None,
    as_json: AsJson = False,
    through_pipeline: Annotated[bool, typer.Option(
        "--through-pipeline", help="Send the rows through broker, worker and shadow projection.")]
    = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write rolling MAE PNG here.")] = None,
) -> None:
    """Prequential evaluation of every learner on a folder of real data."""
    from ops.data import data_path
    from projections import evaluate as ev

    if what == "pii":  # PII detectors against the hand-labelled texts (ops.privacy_cli)
        from ops.privacy_cli import evaluate_pii, print_pii

        pii = evaluate_pii()
        typer.echo(json.dumps(pii)) if as_json else print_pii(pii)
        return
    if what not in ("storypoints", "changes"):
        fail(f"unknown evaluation {what!r}; use storypoints, changes or pii")
    folder = data or data_path(what)
    if not folder.is_dir():
        fail(f"{folder} is not a folder of CSV files")
    if through_pipeline:
        from ops.pipeline_eval import evaluate_through_pipeline

        result = evaluate_through_pipeline(what, folder, load_settings())
    elif what == "storypoints":
        result = ev.evaluate_storypoints(folder)
    else:
        result = ev.evaluate_changes(folder)
    if plot is not None and what == "storypoints":
        ev.plot_rolling_mae(folder, plot)
    if as_json:
        typer.echo(json.dumps(result))
        return
    from ops.report_tables import print_evaluation

    print_evaluation(what, result)


@app.command()
def vision(
    source: Annotated[str, typer.Option("--source", help="Video file or camera index.")] = "",
    fps: Annotated[float, typer.Option("--fps", help="Target frames/s (0: unpaced).")] = 30.0,
    loop: Annotated[bool, typer.Option("--loop/--no-loop", help="Replay a file forever.")] = False,
    duration: Annotated[float, typer.Option("--duration", help="Stop after N s (0: never).")]
    = 0.0,
    camera_id: Annotated[str, typer.Option("--camera-id")] = "camera-1",
    data_dir: DataDir = None,
) -> None:
    """Run the vision agent: detect and blur faces, emit frame.processed events (no pixels)."""
    from agents.client import AgentClient
    from agents.vision import run_vision
    from ops.data import data_path
    from ops.metrics import observe_frame, start_metrics_server
    from schemas.settings import StackNotRunning

    settings = load_settings(data_dir)
    src: str | int = source or str(data_path("video/Megamind.avi"))
    if isinstance(src, str) and src.isdigit():
        src = int(src)
    try:
        client = AgentClient.from_settings(camera_id, settings)
    except StackNotRunning as exc:
        fail(str(exc))
    max_frames = int(duration * fps) if duration and fps else None
    start_metrics_server()

    def observe(_frame: object, payload: dict[str, Any]) -> None:
        observe_frame(camera_id, payload["fps"], payload["processing_latency_ms"] / 1000)

    try:
        stats = run_vision(src, client.emit, target_fps=fps, loop=loop, max_frames=max_frames,
                           camera_id=camera_id, on_frame=observe)
    finally:
        client.close(timeout=5)
    typer.echo(json.dumps({"frames": stats.frames, "dropped": stats.dropped, "fps": stats.fps,
                           "p99_frame_ms": stats.percentile_ms(99), "faces": stats.faces}))


@app.command()
def demo(
    duration: Annotated[float, typer.Option("--duration", help="Seconds of agent traffic.")]
    = 120.0,
    speed: Annotated[float, typer.Option("--speed", help="Multiplier on the agents' rates.")]
    = 1.0,
    keep_running: Annotated[bool, typer.Option("--keep-running",
                                               help="Leave worker and servers running.")] = False,
    data_dir: DataDir = None,
) -> None:
    """The main job: embedded stack, worker, eight agents on real data, shadow → canary."""
    from ops.demo import run_demo
    from ops.stack import StackError

    try:
        run_demo(load_settings(data_dir), duration=duration, speed=speed,
                 keep_running=keep_running)
    except (StackError, TimeoutError) as exc:
        fail(str(exc))
