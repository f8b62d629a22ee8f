"""Prequential evaluation of every learner on a folder of real data.

Offline (:mod:`projections.evaluate`) or, with ``through_pipeline``, every row
sent through broker, worker and shadow projection
(:mod:`ops.demo.pipeline_eval`); both give the same JSON. With ``served``,
the answers the live policy gave, as the learner ``served``
(:mod:`ops.usecases.served`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WHATS = ("storypoints", "changes")


def evaluate(what: str, folder: Path, *, through_pipeline: bool = False,
             settings: Any = None, plot: Path | None = None,
             learners: list[str] | None = None, holdout: bool = False,
             served: bool = False) -> dict[str, Any]:
    """The evaluation of ``what`` (storypoints | changes) on the CSVs in ``folder``.

    ``settings`` is used only ``through_pipeline``; ``plot`` writes the rolling
    MAE chart (story points only). ``learners`` picks learners by name or River
    spec (offline only); ``holdout`` returns the macro numbers on the selection
    and the held-out projects instead (:mod:`projections.holdout`). ``served``
    scores what the live policy answered (:mod:`ops.usecases.served`).
    """
    from projections import evaluate as ev

    if served:
        from ops.usecases.served import evaluate_served

        result = evaluate_served(what, folder)
    elif through_pipeline:
        from ops.demo.pipeline_eval import evaluate_through_pipeline

        result = evaluate_through_pipeline(what, folder, settings)
    elif what == "storypoints":
        result = ev.evaluate_storypoints(folder, learners)
    else:
        result = ev.evaluate_changes(folder, learners)
    if plot is not None and what == "storypoints":
        ev.plot_rolling_mae(folder, plot)
    if holdout:
        from projections.holdout import holdout_summary

        return holdout_summary(what, result)
    return result
