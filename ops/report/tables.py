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
    for name, t in result.get("targets", {}).items():  # evaluate --served
        Console().print(f"served {name}: {t['value']:+.1%} (target {t['target']:+.0%}: "
                        f"{'met' if t['met'] else 'not met'})")


def print_faces(result: dict[str, Any]) -> None:
    """``evaluate faces``: one row per clip."""
    columns = {"frames": "frames", "reference_boxes": "faces", "mean_coverage": "mean",
               "boxes_90pct_covered": ">=90%", "boxes_under_50pct": "<50%",
               "mean_blurred_area": "blurred", "fps": "fps", "fps_per_core": "fps/core"}
    table = Table(title=f"faces: share of each reference box blurred ({result['reference']})")
    table.add_column("clip")
    for label in columns.values():
        table.add_column(label, justify="right")
    for clip, row in result["clips"].items():
        table.add_row(clip, *(str(row[k]) for k in columns))
    Console().print(table)
