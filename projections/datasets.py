"""Readers for the shipped learning data (story points and code changes).

Both readers accept any directory holding files of the documented format,
either plain ``.csv`` or gzip-compressed ``.csv.gz``.

Late labels of changes
----------------------
``ChangeRow.fixed_at`` is the commit date of the change that fixed this one
(the earliest when several fixes are traced, never before the change itself),
or ``None`` when no fix is traced. The evaluation turns it into outcome events
with one realistic rule (:func:`label_events`): every change is reviewed for
its outcome once, :data:`CLEAN_HORIZON_DAYS` days (one year) after it landed,
and learned as defect-introducing (``1``) if its fix had landed by then, else
as clean (``0``). A fix arriving after the horizon is delivered on its own
date as a correcting ``1``, as in real life. (Delivering fixes immediately and
clean labels after the horizon skews the recent class balance and made every
learner worse; one maturation date per change keeps it unbiased.) A ``bug == 1``
change whose fixing commit cannot be found is never reported as a defect to
the learners (the stream never carried that fact); it still counts as a defect
when recall and AUC are measured.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

CLEAN_HORIZON_DAYS = 365
METRICS: tuple[str, ...] = (
    "ns", "nm", "nf", "entropy", "la", "ld", "lt", "fix",
    "ndev", "pd", "npt", "exp", "rexp", "sexp",
)  # fmt: skip


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".csv.gz"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _stems(directory: Path, tail: str = "") -> list[str]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory of .csv/.csv.gz files")
    names: set[str] = set()
    for path in directory.iterdir():
        for suffix in (".csv.gz", ".csv"):
            if path.name.endswith(tail + suffix):
                names.add(path.name[: -len(tail + suffix)])
                break
    return sorted(names)


# ----------------------------------------------------------------- story points


@dataclass(frozen=True, slots=True)
class StoryRow:
    """One issue: the task features ``x`` and its story points ``y``."""

    project: str
    issuekey: str
    title: str
    description: str
    storypoint: float

    @property
    def x(self) -> dict[str, Any]:
        return {"project": self.project, "title": self.title, "description": self.description}


def storypoint_projects(data_dir: str | Path) -> list[str]:
    """Project names of a story-point directory, sorted.

    >>> from ops.data import data_path
    >>> storypoint_projects(data_path("storypoints"))[:2]
    ['appceleratorstudio', 'aptanastudio']
    """
    return _stems(Path(data_dir))


def read_storypoints(data_dir: str | Path, project: str) -> list[StoryRow]:
    """Rows of one project in creation order (the file order).

    ``NULL`` descriptions become empty strings.

    >>> from ops.data import data_path
    >>> rows = read_storypoints(data_path("storypoints"), "bamboo")
    >>> rows[0].issuekey, rows[0].storypoint
    ('BAM-65', 3.0)
    """
    path = _find(Path(data_dir), project)
    if path is None:
        raise FileNotFoundError(f"no {project}.csv or {project}.csv.gz in {data_dir}")
    rows: list[StoryRow] = []
    with _open_text(path) as handle:
        for rec in csv.DictReader(handle):
            desc = rec.get("description") or ""
            title = rec.get("title") or ""
            rows.append(
                StoryRow(
                    project=project,
                    issuekey=rec["issuekey"],
                    title="" if title == "NULL" else title,
                    description="" if desc == "NULL" else desc,
                    storypoint=float(rec["storypoint"]),
                )
            )
    return rows


def iter_storypoints(data_dir: str | Path) -> Iterator[StoryRow]:
    """All projects one after the other, each from its start."""
    for project in storypoint_projects(data_dir):
        yield from read_storypoints(data_dir, project)


# ---------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change with its metrics, its outcome and when that outcome is known.

    ``fixed_at`` is the date of the fixing change (``None`` when no fix is traced).
    """

    project: str
    transactionid: str
    date: datetime
    metrics: dict[str, float]
    bug: int
    fixed_at: datetime | None

    @property
    def x(self) -> dict[str, Any]:
        return {"project": self.project, **self.metrics}


def change_projects(data_dir: str | Path) -> list[str]:
    """Project names of a change directory (those having ``P_input``), sorted.

    >>> from ops.data import data_path
    >>> change_projects(data_path("changes"))[:3]
    ['Ant', 'Derby', 'Geronimo']
    """
    return _stems(Path(data_dir), "_input")


def _parse_date(text: str) -> datetime | None:
    text = text.strip()
    if not text or text == "NA":
        return None
    return datetime.fromisoformat(text)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def read_changes(data_dir: str | Path, project: str) -> list[ChangeRow]:
    """Changes of one project sorted by commit date (ties by transaction id).

    Rows dated ``NA`` are dropped; see the module docstring for ``known_at``.

    >>> from ops.data import data_path
    >>> rows = read_changes(data_path("changes"), "IVY")
    >>> all(a.date <= b.date for a, b in zip(rows, rows[1:]))
    True
    >>> all(r.fixed_at is None or r.fixed_at >= r.date for r in rows)
    True
    >>> sum(r.bug for r in rows), sum(1 for r in rows if r.fixed_at is not None)
    (466, 460)
    """
    directory = Path(data_dir)
    inp = _find(directory, f"{project}_input")
    if inp is None:
        raise FileNotFoundError(f"no {project}_input.csv(.gz) in {directory}")
    raw: list[tuple[datetime, str, dict[str, float], int]] = []
    with _open_text(inp) as handle:
        for rec in csv.DictReader(handle):
            date = _parse_date(rec["commitdate"])
            if date is None:
                continue
            metrics = {k: _float(rec[k]) for k in METRICS}
            raw.append((date, rec["transactionid"], metrics, int(float(rec["bug"]))))
    raw.sort(key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else 0, r[1]))
    date_of_tid = {tid: date for date, tid, _, _ in raw}

    tid_of_commit: dict[str, str] = {}
    ids = _find(directory, f"{project}_commitsID")
    if ids is not None:
        with _open_text(ids) as handle:
            for rec in csv.DictReader(handle, delimiter="\t"):
                tid_of_commit[rec["commit"].strip()] = rec["transactionid"].strip()
    fix_date: dict[str, datetime] = {}
    mapping = _find(directory, f"{project}_mapping")
    if mapping is not None:
        with _open_text(mapping) as handle:
            for pair in csv.reader(handle, delimiter="\t"):
                if len(pair) < 2 or pair[0] == "fix":
                    continue
                fix_tid = tid_of_commit.get(pair[0].strip())
                intro_tid = tid_of_commit.get(pair[1].strip())
                if fix_tid is None or intro_tid is None or fix_tid not in date_of_tid:
                    continue
                when = date_of_tid[fix_tid]
                if intro_tid not in fix_date or when < fix_date[intro_tid]:
                    fix_date[intro_tid] = when

    rows: list[ChangeRow] = []
    for date, tid, metrics, bug in raw:
        fixed = fix_date.get(tid) if bug else None
        rows.append(ChangeRow(project, tid, date, metrics, bug, fixed and max(fixed, date)))
    return rows


def label_events(
    rows: list[ChangeRow], horizon_days: float = CLEAN_HORIZON_DAYS
) -> list[tuple[datetime, int, int]]:
    """Outcome events ``(known date, row index, label)`` sorted by date.

    >>> from datetime import datetime as dt
    >>> r = ChangeRow("p", "1", dt(2020, 1, 1), {}, 1, dt(2021, 1, 1))
    >>> [(d.date().isoformat(), i, y) for d, i, y in label_events([r], 90)]
    [('2020-03-31', 0, 0), ('2021-01-01', 0, 1)]
    >>> [(d.date().isoformat(), y) for d, _, y in label_events([r], 400)]
    [('2021-02-04', 1)]
    """
    horizon = timedelta(days=horizon_days)
    events: list[tuple[datetime, int, int]] = []
    for i, row in enumerate(rows):
        clean_at = row.date + horizon
        found = row.fixed_at is not None and row.fixed_at <= clean_at
        events.append((clean_at, i, 1 if found else 0))
        if row.fixed_at is not None and not found:
            events.append((row.fixed_at, i, 1))
    events.sort()
    return events
