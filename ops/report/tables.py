"""Rich tables for evaluation results (the human face of ``--json`` output)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_evaluation(what: str, result: dict[str, Any]) -> None:
    """One row per project, one column per learner; the best learner is bold."""
    metric = "mae" if what == "storypoints" else "recall_at_20"
    projects = result["projects"]
    learners = sorted({name for p in projects.values() for name in p[metric]})
    table = Table(title=f"{what}: {metric} per project (best: {result['best']})")
    table.add_column("project")
    table.add_column("n", justify="right")
    for name in learners:
        style = "bold green" if name == result["best"] else ""
        table.add_column(name, justify="right", style=style)
    rows = list(projects.items())
    if "pooled" in result:
        rows.append(("pooled", result["pooled"]))
    for project, row in rows:
        table.add_row(project, str(row["n"]), *(f"{row[metric].get(n, float('nan')):.3f}"
                                                for n in learners))
    Console().print(table)
