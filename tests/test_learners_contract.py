"""One contract, every learner: determinism, purity, robustness, real data."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest

from ops.data import data_path
from projections.datasets import iter_storypoints, read_changes
from projections.learners import REVIEW_LEARNERS, TASK_LEARNERS, Learner

TASK_ROWS = [(r.x, r.storypoint) for r in islice(iter_storypoints(data_path("storypoints")), 300)]
REVIEW_ROWS = [(r.x, float(r.bug)) for r in read_changes(data_path("changes"), "IVY")[:300]]

CASES: list[tuple[str, Callable[[], Learner], list[tuple[dict[str, Any], float]]]] = [
    *((n, f, TASK_ROWS) for n, f in TASK_LEARNERS.items()),
    *((n, f, REVIEW_ROWS) for n, f in REVIEW_LEARNERS.items()),
]
IDS = [c[0] for c in CASES]


def _train(model: Learner, rows: list[tuple[dict[str, Any], float]]) -> list[float]:
    preds = []
    for x, y in rows:
        preds.append(model.predict_one(x))
        model.learn_one(x, y)
    return preds


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_learns_from_real_rows_with_finite_predictions(name, make, rows) -> None:
    model = make()
    assert model.name == name
    preds = _train(model, rows)
    assert all(p == p and abs(p) < 1e6 for p in preds)
    if name in REVIEW_LEARNERS and name != "size_heuristic":
        assert all(0.0 <= p <= 1.0 for p in preds)


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_restored_snapshot_predicts_and_learns_bit_identically(name, make, rows) -> None:
    model = make()
    _train(model, rows[:200])
    data = model.snapshot()
    assert isinstance(data, bytes)
    assert model.snapshot() == data
    clone = type(model).restore(data)
    assert clone.snapshot() == data
    assert _train(clone, rows[200:]) == _train(model, rows[200:])
    assert clone.snapshot() == model.snapshot()


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_restore_rejects_another_learners_snapshot(name, make, rows) -> None:
    other = next(f for n, f, _ in CASES if n != name)()
    with pytest.raises(ValueError, match="restore it with"):
        type(make()).restore(other.snapshot())


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_inputs_are_not_mutated(name, make, rows) -> None:
    model = make()
    for x, y in rows[:100]:
        before = copy.deepcopy(x)
        model.predict_one(x)
        model.learn_one(x, y)
        assert x == before


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_shuffled_feature_order_gives_the_same_result(name, make, rows) -> None:
    rng = random.Random(7)
    shuffled = []
    for x, y in rows:
        items = list(x.items())
        rng.shuffle(items)
        shuffled.append((dict(items), y))
    assert _train(make(), shuffled) == _train(make(), rows)


@pytest.mark.parametrize(("name", "make", "rows"), CASES, ids=IDS)
def test_missing_unseen_and_odd_features_are_tolerated(name, make, rows) -> None:
    model = make()
    _train(model, rows[:50])
    for x in (
        {},
        {"project": "never-seen"},
        {"title": None, "description": 3, "la": "x"},
        {**rows[0][0], "avg_completion_time": 12.5, "extra": [1, 2]},
    ):
        p = model.predict_one(x)
        assert p == p
        model.learn_one(x, 1.0)
    assert model.predict_one(rows[0][0]) == model.predict_one(dict(rows[0][0]))


def test_baselines_predict_as_specified() -> None:
    const, med = TASK_LEARNERS["constant"](), TASK_LEARNERS["running_median"]()
    for y in (1.0, 8.0, 2.0):
        med.learn_one({"project": "a"}, y)
        const.learn_one({"project": "a"}, y)
    assert const.predict_one({"project": "a"}) == 4.0
    assert med.predict_one({"project": "a"}) == 2.0
    assert med.predict_one({"project": "b"}) == 4.0
    size = REVIEW_LEARNERS["size_heuristic"]()
    assert size.predict_one({"la": 0.1, "lt": 200.0, "nf": 2.0}) == pytest.approx(22.0)


def test_logistic_serves_the_intercept_it_learns() -> None:
    """A change with every metric at zero is scored by the intercept alone."""
    model = REVIEW_LEARNERS["logistic"]()
    blank, other = {"project": "p"}, {"project": "q"}
    prior = model.predict_one(blank)
    assert prior == pytest.approx(1.0 / (1.0 + math.exp(2.0)))  # sigmoid(-2): mostly clean
    for _ in range(300):
        model.learn_one(blank, 1.0)
    risen = model.predict_one(blank)
    assert risen > prior  # AdaGrad at lr 0.002 moves the intercept slowly, but it moves
    assert model.predict_one(other) == prior  # the intercept is per project
    for _ in range(600):
        model.learn_one(blank, 0.0)
    assert model.predict_one(blank) < risen
    assert type(model).restore(model.snapshot()).predict_one(blank) == model.predict_one(blank)
