"""Held-out projects: choose on some shipped projects, report on the others.

A configuration chosen by looking at every shipped project's results is
judged on the data it was tuned to. The rule here is fixed in advance and
knows nothing of the results: projects in name order, every third one
starting with the third is **held out** (4 of 12 story-point projects, 4 of
12 change projects); the others are the **selection** set. River challengers
were chosen on the selection set only (docs/river.md); the held-out numbers
are what such a choice is worth on projects it never saw.

>>> split(["a", "b", "c", "d", "e", "f", "g"])
(['a', 'b', 'd', 'e', 'g'], ['c', 'f'])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EVERY = 3


def split(projects: Iterable[str]) -> tuple[list[str], list[str]]:
    """(selection, held-out) projects: every third in name order, from the third, is held out."""
    names = sorted(projects)
    held = names[EVERY - 1::EVERY]
    return [p for p in names if p not in held], held


def holdout_summary(what: str, result: dict[str, Any]) -> dict[str, Any]:
    """Macro metrics of every learner on the selection and the held-out projects.

    ``result`` is :func:`projections.evaluate.evaluate_storypoints`' or
    :func:`~projections.evaluate.evaluate_changes`' output (``what``:
    ``storypoints`` or ``changes``). Story points: mean over projects of
    ``1 - mae / mae_constant`` and ``1 - mae / mae_running_median`` (when those
    baselines were evaluated) and the MAE pooled over the part's issues;
    changes: mean over projects of ``recall_at_20`` and ``auc``.

    >>> r = {"projects": {p: {"n": 1, "mae": {"constant": 2.0, "m": 1.0}} for p in "abc"}}
    >>> s = holdout_summary("storypoints", r)
    >>> s["held_out"]["projects"], s["held_out"]["macro_gain_vs_constant"]["m"]
    (['c'], 0.5)
    """
    if what not in ("storypoints", "changes"):
        raise ValueError(f"unknown evaluation {what!r}; use storypoints or changes")
    projects = result["projects"]
    out: dict[str, Any] = {"rule": f"every {EVERY}rd project in name order, from the "
                                   f"{EVERY}rd, is held out"}
    for part, names in zip(("selection", "held_out"), split(projects), strict=True):
        rows = [projects[p] for p in names]
        summary: dict[str, Any] = {"projects": names}
        if what == "storypoints":
            learners = list(rows[0]["mae"])
            n = sum(r["n"] for r in rows)
            summary["mae"] = {k: sum(r["mae"][k] * r["n"] for r in rows) / n for k in learners}
            for ref in ("constant", "running_median"):
                if ref in learners:
                    summary[f"macro_gain_vs_{ref}"] = {
                        k: sum(1.0 - r["mae"][k] / r["mae"][ref] for r in rows) / len(rows)
                        for k in learners}
        else:
            for metric in ("recall_at_20", "auc"):
                summary[f"macro_{metric}"] = {
                    k: sum(r[metric][k] for r in rows) / len(rows) for k in rows[0][metric]}
        out[part] = summary
    return out
