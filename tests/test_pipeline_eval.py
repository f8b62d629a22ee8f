"""``evaluate --through-pipeline``: broker + worker + shadow projection give the offline numbers."""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path

import pytest

from ops.data import data_path
from ops.demo.pipeline_eval import evaluate_through_pipeline
from projections.datasets import read_storypoints
from projections.evaluate import evaluate_storypoints
from projections.learners import TASK_LEARNERS
from schemas.addresses import Addresses
from schemas.settings import Settings

PROJECTS = ("bamboo", "mule")
ROWS = 150


def _small_folder(folder: Path) -> Path:
    """Two projects x ``ROWS`` real issues, as plain CSVs (a NULL description kept)."""
    folder.mkdir()
    for project in PROJECTS:
        rows = read_storypoints(data_path("storypoints"), project)[:ROWS]
        with open(folder / f"{project}.csv", "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["issuekey", "title", "description", "storypoint"])
            for r in rows:
                writer.writerow([r.issuekey, r.title, r.description or "NULL", r.storypoint])
    return folder


@pytest.mark.timeout(180)
def test_storypoints_through_the_pipeline_equal_the_offline_evaluation(
    settings: Settings, stack: Addresses, tmp_path: Path
) -> None:
    folder = _small_folder(tmp_path / "sp")
    offline = evaluate_storypoints(folder)
    assert list(offline["pooled"]["mae"]) == list(TASK_LEARNERS)  # every learner, offline ...
    assert offline["pooled"]["n"] == len(PROJECTS) * ROWS

    piped = evaluate_through_pipeline("storypoints", folder, settings, stack)

    assert list(piped["pooled"]["mae"]) == list(TASK_LEARNERS)  # ... and through the pipeline
    assert piped == offline  # exact floats, same keys
    assert json.dumps(piped) == json.dumps(offline)  # same order too: same CLI output


def test_an_unknown_evaluation_is_refused_before_anything_starts(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown evaluation"):
        evaluate_through_pipeline("nope", tmp_path, settings, None)


def test_the_changes_replay_orders_requests_and_late_labels_like_the_offline_loop() -> None:
    from ops.demo.pipeline_eval import change_replays
    from projections.datasets import label_events, read_changes

    folder = data_path("changes")
    replays, labels = change_replays(folder)
    rows = read_changes(folder, "IVY")
    rp = replays["IVY"]
    assert labels["IVY"] == [r.bug for r in rows] and len(rp.scored) == len(rows)
    due = [e for e in label_events(rows) if e[0] <= rows[-1].date]
    outcomes = [p for t, p in rp.events if t == "review.completed"]
    assert len(outcomes) == len(due)
    assert [p["passed_first_try"] for p in outcomes] == [not y for _, _, y in due]
    # every outcome finds a request pending for it: the change's own, or a re-request
    pending: set[str] = set()
    for etype, payload in rp.events:
        if etype == "decision.requested":
            pending.add(payload["context"]["change_id"])
        else:
            pending.remove(payload["change_id"])


def test_requests_carry_exactly_the_offline_features(tmp_path: Path) -> None:
    from ops.demo.pipeline_eval import storypoint_replays

    folder = _small_folder(tmp_path / "sp")
    replays, actual = storypoint_replays(folder)
    rows = read_storypoints(folder, "mule")
    requests = [p for t, p in replays["mule"].events if t == "decision.requested"]
    assert [{k: v for k, v in p["context"].items() if k != "task_id"} for p in requests] == [
        r.x for r in rows]
    assert actual["mule"] == [r.storypoint for r in rows]
    assert [t for t, _ in islice(replays["mule"].events, 4)] == [
        "decision.requested", "task.completed"] * 2


@pytest.mark.timeout(240)
def test_changes_through_the_pipeline_equal_the_offline_evaluation(
    settings: Settings, stack: Addresses, tmp_path: Path
) -> None:
    """IVY in full: 2 880 changes, late labels and correcting labels included."""
    import shutil

    from projections.evaluate import evaluate_changes

    folder = tmp_path / "changes"
    folder.mkdir()
    for path in data_path("changes").glob("IVY_*"):
        shutil.copy(path, folder / path.name)
    offline = evaluate_changes(folder)

    piped = evaluate_through_pipeline("changes", folder, settings, stack)

    assert json.dumps(piped) == json.dumps(offline)
