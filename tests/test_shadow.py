"""Shadow projection: predict on every request, score then learn on every outcome."""

from __future__ import annotations

import dataclasses
from itertools import islice

from ops.data import data_path
from projections.agent_specs import AgentSpec
from projections.base import batch_of
from projections.datasets import iter_storypoints, read_changes
from projections.shadow import Scored, ShadowProjection
from schemas import new_event
from tests.test_promotion import FACTORIES, Oracle, spec, stream


class OracleB(Oracle):
    """A second oracle, as a challenger whose errors jump with the champion's."""

    name = "oracle_b"


def _req(agent: str, rid: str, key: str, **ctx: object):
    kind = "review_risk" if agent == "code-reviewer" else "task_estimate"
    field = "change_id" if kind == "review_risk" else "task_id"
    return new_event("decision.requested", {"request_id": rid, "kind": kind,
                                            "context": {field: key, **ctx}}, producer=agent)


def _done(task_id: str, points: float, project: str = "p"):
    return new_event("task.completed", {"task_id": task_id, "project": project,
                                        "actual_points": points}, producer="tracker")


def test_every_model_predicts_every_request_without_touching_anything_live() -> None:
    sp = ShadowProjection()
    req = _req("task-estimator", "r1", "t1", project="p", title="Add login page")
    out = sp.apply(batch_of(req))
    assert [e.type for e in out] == ["shadow.predicted"] * 4
    assert {e.payload["model"] for e in out} == {
        "running_median", "recency_median", "knn_median", "river_title_linear"}
    assert all(e.payload["request_id"] == "r1" and e.correlation_id == "r1" for e in out)
    assert len(sp.pending) == 1


def test_stored_prediction_is_scored_before_the_model_learns() -> None:
    seen: list[Scored] = []
    sp = ShadowProjection(on_scored=seen.append)
    sp.apply(batch_of(_req("task-estimator", "r1", "t1", project="p", title="a")))
    sp.apply(batch_of(_req("task-estimator", "r2", "t2", project="p", title="b")))
    sp.apply(batch_of(_done("t1", 10.0)))
    sp.apply(batch_of(_done("t2", 10.0)))
    # both were predicted before any outcome: the default 4 points, error 6 each
    assert [s.errors["running_median"] for s in seen] == [6.0, 6.0]
    assert [s.request_id for s in seen] == ["r1", "r2"] and [s.seq for s in seen] == [1, 2]
    m = sp.metrics("task-estimator")["running_median"]
    assert m["mae"] == 6.0 and m["n"] == 2.0
    out = sp.apply(batch_of(_req("task-estimator", "r3", "t3", project="p", title="c")))
    assert out[0].payload["prediction"] == 10.0  # ... and learned afterwards


def test_one_outcome_feeds_every_agent_waiting_for_it() -> None:
    seen: list[Scored] = []
    sp = ShadowProjection(on_scored=seen.append)
    sp.apply(batch_of(_req("task-estimator", "r1", "t1", project="p", title="a")))
    sp.apply(batch_of(_req("doc-keeper", "r2", "t1", project="p", title="a")))
    sp.apply(batch_of(_done("t1", 3.0)))
    assert sorted(s.agent_id for s in seen) == ["doc-keeper", "task-estimator"]
    assert sp.apply(batch_of(_done("t1", 3.0))) == [] and sp.counters["unmatched"] == 1


def test_pending_predictions_are_bounded_and_drops_are_counted() -> None:
    sp = ShadowProjection(max_pending=3)
    for i in range(5):
        sp.apply(batch_of(_req("task-estimator", f"r{i}", f"t{i}", project="p", title="x")))
    assert len(sp.pending) == 3 and sp.counters["dropped"] == 2
    sp.apply(batch_of(_done("t0", 1.0)))
    assert sp.counters["unmatched"] == 1 and sp.seq == {}


def test_identity_not_id_order_decides_what_was_applied() -> None:
    sp = ShadowProjection()
    req = _req("task-estimator", "r1", "t1", project="p", title="x")
    later_request = _req("task-estimator", "r2", "t2", project="p", title="y")
    assert len(sp.apply(batch_of(later_request))) == 4
    # An older id (a producer whose clock is behind, another replica) is a new event.
    assert len(sp.apply(batch_of(req))) == 4
    assert sp.apply(batch_of(req)) == []  # re-delivered
    assert sp.apply(batch_of(later_request)) == []
    assert sp.apply([("other", 3, 99, later_request)]) == []  # re-sent


def test_two_producer_instances_of_one_agent_interleave_without_loss() -> None:
    sp = ShadowProjection()
    events = []
    for n in range(20):
        instance, seq = ("a", "b")[n % 2], n // 2
        events.append(dataclasses.replace(
            _req("task-estimator", f"r{n}", f"t{n}", project="p", title="x"),
            producer_id=instance, producer_epoch=0, sequence=seq))
    lost = {4, 5, 13}  # never delivered: gaps, counted per instance's sequence
    newest_first = [ev for n, ev in enumerate(events) if n not in lost][::-1]
    assert all(len(sp.apply([("", 0, i, ev)])) == 4 for i, ev in enumerate(newest_first))
    assert sp.marks.gaps == len(lost)  # out of order is fine; missing is visible
    assert all(sp.apply(batch_of(ev)) == [] for ev in newest_first)  # re-delivered: nothing
    assert all(len(sp.apply(batch_of(events[n]))) == 4 for n in lost)  # late: fill holes
    assert sp.marks.gaps == 0


def test_review_risk_reports_log_loss_and_brier_on_real_changes() -> None:
    seen: list[Scored] = []
    sp = ShadowProjection(evaluate_every=100, on_scored=seen.append)
    evaluated = []
    rows = read_changes(data_path("changes"), "IVY")[:400]
    for i, row in enumerate(rows):
        sp.apply(batch_of(_req("code-reviewer", f"r{i}", row.transactionid, **row.x)))
        if i >= 20:
            old = rows[i - 20]
            evaluated += sp.apply(batch_of(new_event("review.completed", {
                "change_id": old.transactionid, "project": "IVY",
                "passed_first_try": not old.bug}, producer="reviews")))
    metrics = sp.metrics("code-reviewer")
    assert set(metrics) == {"size_heuristic", "review_rank", "river_jit_offset", "logistic"}
    for m in metrics.values():
        assert m["n"] == 380 and 0.0 <= m["brier"] <= 1.0 and m["log_loss"] > 0.0
    assert {e.type for e in evaluated} == {"model.evaluated"} and len(evaluated) == 3 * 4
    assert evaluated[0].payload["metrics"]["n"] == 100.0


def test_drifting_challenger_is_reset_but_the_champion_never_is() -> None:
    agent = "task-estimator"
    agents = {agent: AgentSpec(agent, "task_estimate", "live", "oracle",
                               ("oracle_b", "constant"), {**FACTORIES, "oracle_b": OracleB})}
    sp = ShadowProjection(agents)
    for ev in stream(agent, 0, 600, offset_by=0.0):
        sp.apply(batch_of(ev))
    assert sp.counters["resets"] == 0
    for ev in stream(agent, 600, 300, offset_by=30.0):  # both oracles' errors jump
        sp.apply(batch_of(ev))
    metrics = sp.metrics(agent)
    assert metrics["oracle_b"]["generation"] == 2.0 and metrics["oracle_b"]["drifts"] == 1.0
    assert metrics["oracle_b"]["n"] < 300  # its metrics restarted at the reset
    assert metrics["oracle"]["generation"] == 1.0  # the champion is protected
    assert metrics["oracle"]["n"] == 900.0 and sp.counters["resets"] == 1


def test_real_storypoints_learn_prequentially_better_than_the_baseline() -> None:
    sp = ShadowProjection({"task-estimator": spec()})
    rows = list(islice(iter_storypoints(data_path("storypoints")), 1500))
    for i, row in enumerate(rows):
        sp.apply(batch_of(_req("task-estimator", f"r{i}", row.issuekey, hint=0.0, **row.x)))
        sp.apply(batch_of(_done(row.issuekey, row.storypoint, row.project)))
    m = sp.metrics("task-estimator")
    assert sp.seq["task-estimator"] == 1500 and m["constant"]["n"] == 1500.0
    assert m["running_median"]["rolling_mae"] < m["constant"]["rolling_mae"]
