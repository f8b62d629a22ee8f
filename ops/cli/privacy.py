"""``selflearn export | erase | rotate-keys`` (``evaluate pii`` is in measure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.access import outcome, require
from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table


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


def erase(
    subject_id: Annotated[str, typer.Argument(help="The data subject (a pseudonymous id).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the event).")],
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the worker.")]
    = 30.0,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Erase a data subject: destroy their keys, announce it; projections forget. Needs admin."""
    from ops.usecases.privacy import erase as erase_subject
    from schemas.addresses import StackNotRunning

    settings = load_settings(data_dir)
    actor = require(settings, "erase", subject_id, {"reason": reason})
    try:
        out = erase_subject(settings, subject_id, reason, wait)
    except StackNotRunning as exc:
        outcome(settings, actor, "erase", subject_id, "failed", {"error": str(exc)})
        fail(str(exc))
    outcome(settings, actor, "erase", subject_id, "applied",
            {"event": out["event"], "key_versions": out["key_versions_destroyed"],
             "forgot": out["forgot"]})
    if as_json:
        typer.echo(json.dumps(out))
        return
    forgot = out["forgot"]
    rows = [[k, v] for k, v in (forgot or {}).items()]
    print_table(f"erased {subject_id}: {out['key_versions_destroyed']} key version(s) destroyed",
                ["projection", "items forgotten"], rows,
                caption=f"subject.erased {out['event']}" + (
                    "" if forgot else "; no worker answered yet (it forgets when it catches up)"))


def rotate_keys(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Rotate the master key: new version, every data key re-wrapped. Needs admin."""
    from ops.usecases.privacy import rotate_keys as rotate
    from schemas.addresses import StackNotRunning

    settings = load_settings(data_dir)
    actor = require(settings, "rotate-keys", "master")
    try:
        out = rotate(settings)
    except StackNotRunning as exc:
        outcome(settings, actor, "rotate-keys", "master", "failed", {"error": str(exc)})
        fail(str(exc))
    outcome(settings, actor, "rotate-keys", "master", "applied",
            {"kek_version": out["kek_version"], "rewrapped": out["rewrapped"]})
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"master key v{out['kek_version']}: {out['rewrapped']} data keys re-wrapped "
               f"(key.rotated {out['event']})")
