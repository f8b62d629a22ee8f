"""``selflearn export``: a k-anonymous CSV of the learning data (``evaluate pii`` is in measure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.access import outcome, require
from ops.cli.common import AsJson, fail, load_settings


def print_pii(result: dict[str, Any], split: str = "test") -> None:
    """Precision/recall per type and mode for one split, as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PII detection on {split} ({result['texts']} labelled texts in all)")
    table.add_column("type")
    modes = list(result["modes"])
    for mode in modes:
        table.add_column(f"{mode} P / R", justify="right")
    types = [*result["labelled_types"], "PHONE", "CARD"]

    def cell(d: dict[str, Any]) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"
        return f"{f(d['precision'])} / {f(d['recall'])}"

    for kind in types:
        table.add_row(kind, *[cell(result["modes"][m][split]["types"][kind]) for m in modes])
    table.add_row("micro", *[cell(result["modes"][m][split]["micro"]) for m in modes])
    Console().print(table)


def export(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    k: Annotated[int, typer.Option("--k", help="Every quasi-identifier class has >= k rows.")]
    = 5,
    l_div: Annotated[int | None, typer.Option(
        "--l", help="Also >= l distinct outcomes per class (distinct l-diversity).")] = None,
    dataset: Annotated[str, typer.Option(
        "--dataset", help="storypoints (per task) | changes (per change; slow: ~4 min)")]
    = "storypoints",
    project: Annotated[list[str] | None, typer.Option(
        "--project", help="Only these projects (repeatable).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of CSVs (default: shipped).")]
    = None,
    as_json: AsJson = False,
) -> None:
    """Write a k-anonymous CSV of the learning data, re-read it and verify k (and l)."""
    from projections.export import ExportError
    from projections.export import export as write_export

    settings = load_settings()
    actor = require(settings, "export", dataset, {"out": str(out), "k": k, "l": l_div})
    try:
        report = write_export(dataset, out, k=k, l_div=l_div, folder=data, projects=project)
    except (ExportError, FileNotFoundError) as exc:
        outcome(settings, actor, "export", dataset, "failed", {"error": str(exc)})
        fail(str(exc))
        return
    outcome(settings, actor, "export", dataset, "applied",
            {"out": str(out), "rows": report.rows_out, "classes": report.classes})
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(f"wrote {out}: {report.rows_out} of {report.rows_in} rows in {report.classes} "
               f"classes (smallest {report.min_class}, k={k}"
               + (f", l={l_div}, min distinct outcomes {report.min_distinct_outcomes}"
                  if l_div else "")
               + f"); suppressed {report.suppressed} ({report.suppression_rate:.2%}); "
               f"{report.seconds} s")
