"""``selflearn worker | vision | demo``: the long-running commands."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ops.access import require
from ops.cli.common import DataDir, fail, load_settings


def worker(
    data_dir: DataDir = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Run a Faust worker (features, projections); start more to scale out by partitions."""
    import sys

    from schemas.addresses import StackNotRunning, resolve

    settings = load_settings(data_dir)
    require(settings, "worker")
    try:
        resolve(settings)
    except StackNotRunning as exc:
        fail(str(exc))
    from ops.stack.worker_app import app as faust_app
    from ops.stack.workers import WORKER_APP

    sys.argv = ["faust", "-A", WORKER_APP, "worker", "-l", loglevel, "--without-web"]
    faust_app.main()


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
    from ops.usecases.vision import run_camera
    from schemas.addresses import StackNotRunning

    settings = load_settings(data_dir)
    require(settings, "vision", camera_id)
    try:
        stats = run_camera(settings, source, fps=fps, loop=loop, duration=duration,
                           camera_id=camera_id)
    except StackNotRunning as exc:
        fail(str(exc))
    typer.echo(json.dumps(stats))


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
    from ops.demo.runner import run_demo
    from ops.stack.lifecycle import StackError

    settings = load_settings(data_dir)
    require(settings, "demo")
    try:
        run_demo(settings, duration=duration, speed=speed, keep_running=keep_running)
    except (StackError, TimeoutError) as exc:
        fail(str(exc))
