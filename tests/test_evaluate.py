"""The evaluation harness reproduces the published baselines and the targets hold."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from ops.data import data_path
from projections.datasets import (
    label_events,
    read_changes,
    read_storypoints,
)
from projections.evaluate import (
    auc,
    evaluate_changes,
    evaluate_storypoints,
    macro_gains,
    plot_rolling_mae,
    recall_at,
)
from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS


def test_plain_csv_directory_reads_like_the_gzipped_one(tmp_path: Path) -> None:
    src = data_path("storypoints") / "bamboo.csv.gz"
    with gzip.open(src, "rb") as fin, open(tmp_path / "bamboo.csv", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    assert read_storypoints(tmp_path, "bamboo") == read_storypoints(
        data_path("storypoints"), "bamboo"
    )


def test_no_outcome_is_learned_before_it_is_known() -> None:
    rows = read_changes(data_path("changes"), "IVY")
    for when, i, y in label_events(rows):
        assert when >= rows[i].date
        if y:
            assert rows[i].fixed_at is not None and when >= rows[i].fixed_at


def test_metrics_match_hand_computed_values() -> None:
    assert auc([1.0, 2.0, 3.0], [0, 0, 1]) == 1.0
    assert auc([3.0, 2.0, 1.0], [0, 0, 1]) == 0.0
    assert recall_at([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]) == 0.5


def test_storypoint_baselines_reproduce_the_readme() -> None:
    r = evaluate_storypoints(data_path("storypoints"), ["constant", "running_median"])
    assert r["pooled"]["n"] == 19117
    assert r["pooled"]["mae"]["constant"] == pytest.approx(4.075, abs=5e-4)
    assert r["pooled"]["mae"]["running_median"] == pytest.approx(3.781, abs=5e-4)
    assert r["projects"]["bamboo"]["mae"]["running_median"] == pytest.approx(1.135, abs=5e-4)


def test_size_heuristic_reproduces_the_readme_recall() -> None:
    r = evaluate_changes(data_path("changes"), ["size_heuristic"])
    assert r["projects"]["JCR"]["recall_at_20"]["size_heuristic"] == pytest.approx(0.716, abs=6e-4)
    assert r["macro_recall_at_20"]["size_heuristic"] == pytest.approx(0.558, abs=6e-4)
    assert sum(p["n"] for p in r["projects"].values()) == 134137


def test_full_storypoint_evaluation_meets_the_targets() -> None:
    r = evaluate_storypoints(data_path("storypoints"))
    assert set(r) == {"projects", "pooled", "best"}
    assert set(r["pooled"]["mae"]) == set(TASK_LEARNERS)
    assert len(r["projects"]) == 12
    best = r["best"]
    assert macro_gains(r, "constant")[best] >= 0.20
    assert macro_gains(r, "running_median")[best] >= 0.05


def test_review_learners_all_reported(tmp_path: Path) -> None:
    d = tmp_path / "changes"
    d.mkdir()
    for name in ("IVY_input", "IVY_commitsID", "IVY_mapping"):
        shutil.copy(data_path("changes") / f"{name}.csv.gz", d)
    r = evaluate_changes(d)
    ivy = r["projects"]["IVY"]
    assert set(ivy["auc"]) == set(REVIEW_LEARNERS) and ivy["n"] == 2880
    assert all(0.5 < v <= 1.0 for v in ivy["auc"].values())


def test_rolling_mae_plot_is_written(tmp_path: Path) -> None:
    d = tmp_path / "sp"
    d.mkdir()
    shutil.copy(data_path("storypoints") / "duracloud.csv.gz", d)
    out = plot_rolling_mae(d, tmp_path / "mae.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_best_review_learner_beats_the_size_heuristic_under_late_labels() -> None:
    r = evaluate_changes(data_path("changes"), ["size_heuristic", "review_rank"])
    macro = r["macro_recall_at_20"]
    assert r["best"] == "review_rank"
    assert macro["review_rank"] >= macro["size_heuristic"] + 0.04
    assert macro["review_rank"] == pytest.approx(0.6093, abs=6e-4)
