"""``selflearn bench | evaluate``: the measuring commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ops.access import require
from ops.cli.common import AsJson, fail, load_settings


def bench(
    name: Annotated[str, typer.Argument(help="Which benchmark (see `selflearn bench list`).")],
    as_json: AsJson = False,
) -> None:
    """Run a benchmark; it starts what it needs and prints one flat JSON object."""
    from ops import benches

    require(load_settings(), "bench", name)
    names = benches.names()
    if name == "list":
        typer.echo("\n".join(names))
        return
    if name not in names:
        fail(f"unknown benchmark {name!r}; available: {', '.join(names)}")
    result = benches.run(name)
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


def evaluate(
    what: Annotated[str, typer.Argument(help="storypoints | changes | pii | faces")],
    data: Annotated[Path | None, typer.Option("--data", help="Folder of CSVs (default: shipped).")]
    = None,
    as_json: AsJson = False,
    through_pipeline: Annotated[bool, typer.Option(
        "--through-pipeline", help="Send the rows through broker, worker and shadow projection.")]
    = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write rolling MAE PNG here.")] = None,
    learner: Annotated[list[str] | None, typer.Option(
        "--learner", help="Only this learner (repeatable); a River spec 'river.…' works too.")]
    = None,
    served: Annotated[bool, typer.Option(
        "--served", help="Score what the live policy answered: each project replayed through "
                         "shadow, promotion gate and decision engine (learner 'served').")]
    = False,
    holdout: Annotated[bool, typer.Option(
        "--holdout", help="Macro numbers on the selection and the held-out projects "
                          "(projections/holdout.py).")] = False,
    clip: Annotated[list[Path] | None, typer.Option(
        "--clip", help="faces: video clip to evaluate (repeatable; default: shipped).")] = None,
) -> None:
    """Prequential evaluation of every learner on a folder of real data."""
    from ops.data import data_path
    from ops.usecases.evaluate import WHATS
    from ops.usecases.evaluate import evaluate as run_evaluation

    require(load_settings(), "evaluate", what)
    if what == "pii":  # PII detectors against the hand-labelled texts
        from ops.cli.privacy import print_pii
        from ops.usecases.privacy import evaluate_pii

        pii = evaluate_pii()
        if as_json:
            typer.echo(json.dumps(pii))
        else:
            print_pii(pii)
        return
    if what == "faces":  # the vision agent's blur against a DNN face detector
        from ops.report.tables import print_faces
        from ops.usecases.faces import evaluate_faces

        try:
            faces = evaluate_faces(clip)
        except OSError as exc:  # FileNotFoundError included: a --clip that is not there
            fail(str(exc))
        if as_json:
            typer.echo(json.dumps(faces))
        else:
            print_faces(faces)
        return
    if what not in WHATS:
        fail(f"unknown evaluation {what!r}; use storypoints, changes, pii or faces")
    folder = data or data_path(what)
    if not folder.is_dir():
        fail(f"{folder} is not a folder of CSV files")
    if served and (through_pipeline or learner):
        fail("--served replays the shipped agent configuration in-process; "
             "it does not combine with --through-pipeline or --learner")
    result = run_evaluation(what, folder, through_pipeline=through_pipeline,
                            settings=load_settings() if through_pipeline else None, plot=plot,
                            learners=learner or None, holdout=holdout, served=served)
    if as_json or holdout:
        typer.echo(json.dumps(result, indent=None if as_json else 2))
        return
    from ops.report.tables import print_evaluation

    print_evaluation(what, result)
