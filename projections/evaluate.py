"""Offline prequential evaluation of the task and review learners on real data.

Pure functions: read a data directory, replay each project from its start,
predict before learning, return plain dicts (JSON-ready).

* :func:`evaluate_storypoints` — MAE per project and pooled; ``best`` is the
  learner with the best macro gain over ``constant`` (mean over projects of
  ``1 - mae / mae_constant``).
* :func:`evaluate_changes` — each change is scored before its outcome is
  known; outcomes arrive late (:func:`projections.datasets.label_events`).
  ``recall_at_20``: share of the project's defect-introducing changes among
  its ``int(0.2 * n)`` highest scores (ties: earlier change first). ``best``
  has the best macro recall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from projections.datasets import (
    change_projects,
    label_events,
    read_changes,
    read_storypoints,
    storypoint_projects,
)
from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS, Learner, learner_factory

Factories = dict[str, Callable[[], Learner]]


def _pick(registry: Factories, names: Iterable[str] | None) -> Factories:
    """Factories by name; a River spec (``river.…``) is accepted in place of a name."""
    if names is None:
        return dict(registry)
    kind = "task_estimate" if registry is TASK_LEARNERS else "review_risk"
    unknown = [n for n in names if n not in registry and not n.startswith("river.")]
    if unknown:
        raise KeyError(f"unknown learners {unknown}; known: {sorted(registry)} or a River "
                       f"spec ('river.module.Class|…')")
    return {n: learner_factory(kind, n) for n in names}


def _macro_gain(projects: dict[str, Any], name: str, reference: str) -> float:
    gains = [1.0 - p["mae"][name] / p["mae"][reference] for p in projects.values()]
    return sum(gains) / len(gains)


def storypoint_errors(
    data_dir: str | Path, learners: Iterable[str] | None = None, limit: int | None = None
) -> dict[str, dict[str, list[float]]]:
    """Prequential absolute errors per project and learner (first ``limit`` rows)."""
    factories = _pick(TASK_LEARNERS, learners)
    out: dict[str, dict[str, list[float]]] = {}
    for project in storypoint_projects(data_dir):
        rows = read_storypoints(data_dir, project)[:limit]
        models = {name: make() for name, make in factories.items()}
        errors: dict[str, list[float]] = {name: [] for name in models}
        for row in rows:
            x = row.x
            for name, model in models.items():
                errors[name].append(abs(model.predict_one(x) - row.storypoint))
                model.learn_one(x, row.storypoint)
        out[project] = errors
    return out


def evaluate_storypoints(
    data_dir: str | Path, learners: Iterable[str] | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Prequential MAE of every task learner, per project and pooled.

    One fresh model per learner and project, replayed in creation order.
    Also reports ``macro_gain_vs_constant`` / ``..._vs_running_median`` when
    those baselines are evaluated (extra keys, outside ``projects``/``pooled``).

    >>> from ops.data import data_path
    >>> r = evaluate_storypoints(data_path("storypoints"), ["constant"], limit=10)
    >>> sorted(r), r["pooled"]["n"], r["best"]
    (['best', 'pooled', 'projects'], 120, 'constant')
    """
    return storypoint_summary(storypoint_errors(data_dir, learners, limit))


def storypoint_summary(errors: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per-project and pooled MAE and ``best`` from prequential absolute errors.

    ``errors`` is :func:`storypoint_errors`' shape (project -> learner -> errors
    in replay order); ``ops.demo.pipeline_eval`` feeds it the errors measured
    through the pipeline, so both paths share this aggregation.

    >>> r = storypoint_summary({"p": {"constant": [1.0, 3.0], "m": [0.0, 1.0]}})
    >>> r["projects"]["p"], r["pooled"]["mae"]["m"], r["best"]
    ({'n': 2, 'mae': {'constant': 2.0, 'm': 0.5}}, 0.5, 'm')
    """
    projects: dict[str, Any] = {}
    pooled: dict[str, float] = {}
    n_all = 0
    for project, errs in errors.items():
        n = len(next(iter(errs.values()), []))
        n_all += n
        projects[project] = {"n": n, "mae": {k: sum(v) / max(n, 1) for k, v in errs.items()}}
        for k, v in errs.items():
            pooled[k] = pooled.get(k, 0.0) + sum(v)
    names = list(next(iter(errors.values())))
    result: dict[str, Any] = {
        "projects": projects,
        "pooled": {"n": n_all, "mae": {k: pooled[k] / max(n_all, 1) for k in names}},
    }
    if "constant" in names:
        gains = {k: _macro_gain(projects, k, "constant") for k in names}
        result["best"] = max(names, key=lambda k: gains[k])
    else:
        result["best"] = min(names, key=lambda k: result["pooled"]["mae"][k])
    return result


def macro_gains(result: dict[str, Any], reference: str) -> dict[str, float]:
    """Mean over projects of ``1 - mae / mae_reference`` for every learner."""
    names = result["pooled"]["mae"]
    return {k: _macro_gain(result["projects"], k, reference) for k in names}


def auc(scores: list[float], labels: list[int]) -> float:
    """ROC AUC by average ranks (ties get half credit); 0.5 if one class is absent.

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return 0.5
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def recall_at(scores: list[float], labels: list[int], share: float = 0.2) -> float:
    """Share of positives among the ``int(share * n)`` highest scores (stable ties).

    >>> recall_at([5.0, 1.0, 3.0, 2.0, 4.0], [1, 1, 0, 0, 0])
    0.5
    """
    k = int(share * len(scores))
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    pos = sum(labels)
    return sum(labels[i] for i in top) / pos if pos else 0.0


def effort_recall_at(scores: list[float], labels: list[int], effort: list[float],
                     share: float = 0.2) -> float:
    """Share of positives found reviewing in score order within ``share`` of the total effort.

    The effort-aware view of defect prediction: changes are reviewed from the
    highest score down until the next one would take the changed lines
    reviewed beyond ``share`` of all changed lines (ties: earlier change
    first). Efforts below one line count as one, so no change is free.

    >>> effort_recall_at([5.0, 4.0, 3.0, 2.0], [1, 0, 1, 1], [1.0, 1.0, 10.0, 8.0], 0.2)
    0.3333333333333333
    """
    cost = [max(e, 1.0) for e in effort]
    budget = share * sum(cost)
    pos = sum(labels)
    found, spent = 0, 0.0
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if spent + cost[i] > budget:
            break
        spent += cost[i]
        found += labels[i]
    return found / pos if pos else 0.0


def change_effort(x: dict[str, Any]) -> float:
    """Changed lines of a change: ``(la + ld) * lt`` (``la``, ``ld`` are normalised by ``lt``)."""
    return (float(x.get("la", 0.0)) + float(x.get("ld", 0.0))) * float(x.get("lt", 0.0))


def change_scores(
    data_dir: str | Path, project: str, learners: Iterable[str] | None = None
) -> tuple[list[int], dict[str, list[float]]]:
    """Replay one project: labels and each learner's before-outcome scores."""
    factories = _pick(REVIEW_LEARNERS, learners)
    rows = read_changes(data_dir, project)
    events = label_events(rows)
    models = {name: make() for name, make in factories.items()}
    scores: dict[str, list[float]] = {name: [] for name in models}
    j = 0
    for row in rows:
        while j < len(events) and events[j][0] <= row.date:
            _, i, y = events[j]
            j += 1
            for model in models.values():
                model.learn_one(rows[i].x, float(y))
        x = row.x
        for name, model in models.items():
            scores[name].append(model.predict_one(x))
    return [r.bug for r in rows], scores


def evaluate_changes(data_dir: str | Path, learners: Iterable[str] | None = None) -> dict[str, Any]:
    """Recall at 20 % review budget and AUC of every review learner, per project.

    Also reports ``macro_recall_at_20`` (an extra key).
    """
    return change_summary({project: change_scores(data_dir, project, learners)
                           for project in change_projects(data_dir)})


def change_summary(
    replayed: dict[str, tuple[list[int], dict[str, list[float]]]],
) -> dict[str, Any]:
    """Recall at 20 %, AUC and ``best`` from each project's labels and scores.

    ``replayed`` maps a project to :func:`change_scores`' ``(labels, scores)``;
    ``ops.demo.pipeline_eval`` feeds it the scores measured through the pipeline.
    """
    projects: dict[str, Any] = {}
    for project, (labels, scores) in replayed.items():
        projects[project] = {
            "n": len(labels),
            "recall_at_20": {k: recall_at(s, labels) for k, s in scores.items()},
            "auc": {k: auc(s, labels) for k, s in scores.items()},
        }
    names = list(next(iter(projects.values()))["recall_at_20"])
    macro = {k: sum(p["recall_at_20"][k] for p in projects.values()) / len(projects) for k in names}
    return {
        "projects": projects,
        "best": max(names, key=macro.__getitem__),
        "macro_recall_at_20": macro,
    }


def plot_rolling_mae(data_dir: str | Path, out_png: str | Path, window: int = 200) -> Path:
    """Write a PNG of each task learner's rolling MAE over the pooled replay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = storypoint_errors(data_dir)
    fig, ax = plt.subplots(figsize=(10, 5))
    names = list(next(iter(errors.values())))
    for name in names:
        series = [e for errs in errors.values() for e in errs[name]]
        acc, rolled = 0.0, []
        for i, e in enumerate(series):
            acc += e - (series[i - window] if i >= window else 0.0)
            rolled.append(acc / min(i + 1, window))
        ax.plot(rolled, label=name, linewidth=0.8)
    ax.set_xlabel("issue (projects one after another)")
    ax.set_ylabel(f"rolling MAE ({window} issues)")
    ax.legend()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
