"""k-anonymous exports of the learning data, verified on the written file.

An analyst gets one row per task (story points) or per change (defect
prediction), never a direct identifier (no issue key, commit id, title,
description or author): the quasi-identifiers — what could be linked to the
public issue tracker or git history to find the person behind a row — are
generalised with anonypyx's Mondrian into ranges and sets so that every
combination is shared by at least ``k`` rows; the outcome stays exact.
With ``l``, every class also holds ``l`` distinct outcomes (distinct
l-diversity), so membership in a class does not reveal the outcome.

What counts as a quasi-identifier (``DATASETS``):

* storypoints — project, position in the project's history (creation order),
  title length in words, description length in characters; outcome: story points.
* changes — project, commit month, lines added/deleted, files touched,
  developers who touched them, the author's experience, whether it is a fix;
  outcome: ``bug`` (the change introduced a defect: sensitive for its author).
  The other metrics are dropped: with a commit month they could single out a
  commit in the public history.

The check runs on the file as written: read it back, group by the
quasi-identifier columns, count. Mondrian never suppresses rows; a data set
smaller than ``k`` is suppressed whole (and reported so).

>>> import pandas as pd
>>> df = pd.DataFrame({"project": ["a"] * 6 + ["b"] * 6, "size": list(range(12)),
...                    "outcome": [0, 1] * 6})
>>> out = anonymise(df, ["project", "size"], "outcome", k=3)
>>> check(out, ["project", "size"], "outcome", k=3)["min_class"] >= 3
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "storypoints": (("project", "position", "title_words", "description_chars"), "storypoint"),
    "changes": (("project", "month", "la", "ld", "nf", "ndev", "exp", "fix"), "bug"),
}
# Integer columns that hold months since year 0, rendered as YYYY-MM in the file.
MONTH_COLUMNS = frozenset({"month"})


class ExportError(ValueError):
    """The export cannot be made or does not meet k (or l); the message says why."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What ``selflearn export`` prints: sizes, classes, suppression, the checked k and l."""

    dataset: str
    rows_in: int
    rows_out: int
    classes: int
    min_class: int
    suppressed: int
    suppression_rate: float
    k: int
    l_diversity: int | None
    min_distinct_outcomes: int
    quasi_identifiers: list[str] = field(default_factory=list)
    sensitive: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def story_frame(folder: str | Path, projects: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per issue: quasi-identifiers and story points, no text, no key."""
    from projections.datasets import read_storypoints, storypoint_projects

    rows = []
    for project in projects or storypoint_projects(folder):
        for i, r in enumerate(read_storypoints(folder, project)):
            rows.append({"project": project, "position": i,
                         "title_words": len(r.title.split()),
                         "description_chars": len(r.description), "storypoint": r.storypoint})
    return pd.DataFrame(rows)


def change_frame(folder: str | Path, projects: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per change: quasi-identifiers and the defect outcome, no commit id."""
    from projections.datasets import change_projects, read_changes

    rows = []
    for project in projects or change_projects(folder):
        for r in read_changes(folder, project):
            m = r.metrics
            rows.append({"project": project, "month": r.date.year * 12 + r.date.month - 1,
                         **{c: int(m[c]) for c in ("la", "ld", "nf", "ndev", "exp", "fix")},
                         "bug": r.bug})
    return pd.DataFrame(rows)


def _month(value: str) -> str:
    def one(n: str) -> str:
        year, month = divmod(int(n), 12)
        return f"{year:04d}-{month + 1:02d}"
    low, sep, high = value.partition("-")
    return f"{one(low)}..{one(high)}" if sep else one(low)


def anonymise(df: pd.DataFrame, quasi_identifiers: Sequence[str], sensitive: str, k: int,
              l_div: int | None = None) -> pd.DataFrame:
    """One row per input row with its quasi-identifiers generalised (strings); order lost.

    Numeric quasi-identifiers become ``"lo-hi"`` ranges, others comma-joined
    sets. Raises :class:`ExportError` for unusable input (missing columns,
    non-numeric values in a numeric column, ``k`` < 1, ``l`` larger than the
    number of distinct outcomes). ``l_div`` asks for distinct l-diversity.
    """
    import anonypyx

    qi = list(quasi_identifiers)
    missing = [c for c in [*qi, sensitive] if c not in df.columns]
    if missing:
        raise ExportError(f"columns missing from the data: {missing}")
    if not isinstance(k, int) or k < 1:
        raise ExportError(f"k must be an integer >= 1, got {k!r}")
    if l_div is not None and (not isinstance(l_div, int) or l_div < 1):
        raise ExportError(f"l must be an integer >= 1, got {l_div!r}")
    data = df[[*qi, sensitive]].reset_index(drop=True).copy()
    if len(data) < k:
        return data.iloc[0:0].astype(str)  # too few rows to hide anyone: suppress all
    if l_div is not None and data[sensitive].nunique() < l_div:
        raise ExportError(f"only {data[sensitive].nunique()} distinct {sensitive} values; "
                          f"l={l_div}")
    for col in qi:
        if pd.api.types.is_numeric_dtype(data[col]) and not pd.api.types.is_bool_dtype(data[col]):
            if data[col].isna().any():
                raise ExportError(f"column {col!r} has missing values")
            data[col] = data[col].astype("int64")  # anonypyx ranges are over integers
        else:
            data[col] = data[col].astype(str).astype("category")
    anonymiser = anonypyx.Anonymiser(
        data, k=k, l=l_div, feature_columns=qi, sensitive_column=sensitive,
        algorithm="Mondrian", generalisation_strategy="human-readable")
    classes = anonymiser.anonymise()
    rows = classes.loc[classes.index.repeat(classes["count"])].drop(columns="count")
    rows = rows[[*qi, sensitive]].reset_index(drop=True)
    for col in qi:
        rows[col] = rows[col].astype(str)
        if col in MONTH_COLUMNS:
            rows[col] = rows[col].map(_month)
    return rows


def check(rows: pd.DataFrame, quasi_identifiers: Sequence[str], sensitive: str, k: int,
          l_div: int | None = None) -> dict[str, int]:
    """Group by the quasi-identifiers; :class:`ExportError` unless every class has >= k rows
    (and >= ``l_div`` distinct ``sensitive`` values). Returns ``classes``, ``min_class``,
    ``min_distinct`` (0 for an empty export)."""
    if rows.empty:
        return {"classes": 0, "min_class": 0, "min_distinct": 0}
    groups = rows.groupby(list(quasi_identifiers), dropna=False, observed=True)[sensitive]
    sizes, distinct = groups.size(), groups.nunique(dropna=False)
    if int(sizes.min()) < k:
        raise ExportError(f"a class has {int(sizes.min())} rows < k={k}")
    if l_div is not None and int(distinct.min()) < l_div:
        raise ExportError(f"a class has {int(distinct.min())} distinct {sensitive} < l={l_div}")
    return {"classes": int(len(sizes)), "min_class": int(sizes.min()),
            "min_distinct": int(distinct.min())}


def export(dataset: str, out: str | Path, k: int = 5, l_div: int | None = None,
           folder: str | Path | None = None,
           projects: Sequence[str] | None = None) -> ExportReport:
    """Write the k-anonymous CSV of ``dataset`` to ``out``, re-read it, check it, report.

    ``folder`` defaults to the shipped data; ``projects`` limits the export.
    """
    if dataset not in DATASETS:
        raise ExportError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    began = time.monotonic()
    if folder is None:
        folder = Path(__file__).resolve().parents[1] / "ops" / "data" / dataset
    qi, sensitive = DATASETS[dataset]
    frame = (story_frame if dataset == "storypoints" else change_frame)(folder, projects)
    rows = anonymise(frame, qi, sensitive, k, l_div)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, index=False)
    written = pd.read_csv(path, dtype=str, keep_default_na=False)
    found = check(written, qi, sensitive, k, l_div)
    suppressed = len(frame) - len(written)
    return ExportReport(
        dataset=dataset, rows_in=len(frame), rows_out=len(written), classes=found["classes"],
        min_class=found["min_class"], suppressed=suppressed,
        suppression_rate=round(suppressed / len(frame), 4) if len(frame) else 0.0, k=k,
        l_diversity=l_div,
        min_distinct_outcomes=found["min_distinct"], quasi_identifiers=list(qi),
        sensitive=sensitive, seconds=round(time.monotonic() - began, 2))
