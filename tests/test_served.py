"""``evaluate --served``: the answers the live policy gave, replayed through shard and engine."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from ops.data import data_path
from ops.demo.pipeline_eval import change_replays, storypoint_replays
from ops.usecases.served import SERVED, evaluate_served, replay_served
from projections.agent_specs import DEFAULT_AGENTS
from projections.datasets import read_storypoints
from projections.evaluate import effort_recall_at, recall_at
from projections.learners import TASK_LEARNERS
from projections.promotion_rules import PromotionPolicy
from schemas.policy import bucket

PROJECT, ROWS = "appceleratorstudio", 700
#: a quick gate, and the live models refreshed after every outcome: then the live
#: model answers exactly what its shadow copy predicted, request by request
QUICK = PromotionPolicy(min_samples=50, refresh_every=1)


def _slice(folder: Path, project: str = PROJECT, rows: int = ROWS) -> Path:
    folder.mkdir()
    with open(folder / f"{project}.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["issuekey", "title", "description", "storypoint"])
        for r in read_storypoints(data_path("storypoints"), project)[:rows]:
            writer.writerow([r.issuekey, r.title, r.description or "NULL", r.storypoint])
    return folder


def _live_at(run, i: int) -> tuple[str, str, int]:
    """(champion, challenger, canary %) in force for scored request ``i`` (from the timeline)."""
    now = ("", "", 0)
    for t in run.transitions:
        if t["request"] <= i:
            now = (t["champion"].split(":")[0], t["challenger"].split(":")[0],
                   t["canary_percent"])
    return now


def test_served_answers_follow_the_live_policy_through_a_promotion(tmp_path: Path) -> None:
    replays, _ = storypoint_replays(_slice(tmp_path / "sp"))
    spec = DEFAULT_AGENTS["task-estimator"]
    run = replay_served(replays[PROJECT], spec, QUICK)
    steps = [t for t in run.transitions if t["type"] == "promotion.step_changed"]
    promoted = [t for t in steps if t["canary_percent"] == 0]
    assert promoted, f"no promotion in {ROWS} issues: {run.transitions}"
    first_step, switch = steps[0]["request"], promoted[0]["request"]
    assert run.arms[0] == "baseline constant:0"  # before the first policy: the rule
    rids = replays[PROJECT].scored
    for i in range(1, len(run.served)):
        champion, challenger, pct = _live_at(run, i)
        canary = bool(challenger) and bucket(rids[i]) < pct
        model = challenger if canary else champion
        assert run.arms[i].split()[0] == ("canary" if canary else "champion")
        assert run.served[i] == run.models[model][i], (i, run.arms[i])
        if i < first_step:
            assert model == spec.champion
    # until the gate moves, the answers are the champion's; after 100 %, the new champion's
    assert run.served[1:first_step] == run.models[spec.champion][1:first_step]
    new = promoted[0]["champion"].split(":")[0]
    assert new != spec.champion
    end = next((t["request"] for t in run.transitions[run.transitions.index(promoted[0]) + 1:]
                if t["type"] != "promotion.refreshed"), len(run.served))
    assert run.served[switch:end] == run.models[new][switch:end]
    assert run.served[switch:end] != run.models[spec.champion][switch:end]


def test_without_refresh_the_first_champion_never_learns(tmp_path: Path) -> None:
    replays, actual = storypoint_replays(_slice(tmp_path / "sp", rows=150))
    run = replay_served(replays[PROJECT], DEFAULT_AGENTS["task-estimator"],
                        PromotionPolicy(refresh_every=0))
    untrained = TASK_LEARNERS["running_median"]().predict_one({"project": PROJECT})
    assert set(run.served[1:]) == {untrained}  # the snapshot it went live with
    assert run.models["running_median"] != run.served  # its shadow copy learned meanwhile


def test_served_storypoints_json_has_the_evaluate_shape(tmp_path: Path) -> None:
    folder = _slice(tmp_path / "sp", rows=300)
    result = evaluate_served("storypoints", folder)
    row = result["projects"][PROJECT]
    assert {SERVED, "constant", "running_median", "knn_median"} <= set(row["mae"])
    assert result["pooled"]["mae"][SERVED] == row["mae"][SERVED]
    _, actual = storypoint_replays(folder)
    run = replay_served(storypoint_replays(folder)[0][PROJECT], DEFAULT_AGENTS["task-estimator"])
    mae = sum(abs(p - y) for p, y in zip(run.served, actual[PROJECT], strict=True)) / 300
    assert row["mae"][SERVED] == pytest.approx(mae)
    gain = 1 - row["mae"][SERVED] / row["mae"]["constant"]
    t = result["targets"]["gain_vs_constant"]
    assert t["value"] == pytest.approx(gain) and t["met"] == (gain >= 0.20)
    assert result["served_history"][PROJECT]["transitions"][0]["type"] == "first_policy"


def test_served_changes_with_late_outcomes_and_the_effort_aware_view(tmp_path: Path) -> None:
    folder = tmp_path / "changes"
    folder.mkdir()
    for path in data_path("changes").glob("IVY_*"):
        shutil.copy(path, folder / path.name)
    result = evaluate_served("changes", folder)
    assert list(result["projects"]) == ["IVY"]
    run = replay_served(change_replays(folder)[0]["IVY"], DEFAULT_AGENTS["code-reviewer"])
    # the first champion never learns: until the gate moves, served == the size rule
    first = next(t["request"] for t in run.transitions if t["type"] != "first_policy"
                 and t["type"] != "promotion.refreshed")
    assert 200 < first and run.served[1:first] == run.models["size_heuristic"][1:first]
    row = result["projects"]["IVY"]
    for metric in ("recall_at_20", "auc", "effort_recall_at_20"):
        assert {SERVED, "size_heuristic", "review_rank"} <= set(row[metric])
    pooled = result["pooled"]
    assert pooled["n"] == sum(p["n"] for p in result["projects"].values())
    assert 0.0 < pooled["recall_at_20"][SERVED] < 1.0
    assert "recall_gain_vs_size_heuristic" in result["targets"]


def test_effort_aware_recall_counts_changed_lines_not_changes() -> None:
    scores, labels = [4.0, 3.0, 2.0, 1.0], [1, 0, 0, 1]
    big_first = [70.0, 10.0, 10.0, 10.0]  # the top change alone is 70 % of the lines
    assert recall_at(scores, labels, 0.25) == 0.5
    assert effort_recall_at(scores, labels, big_first, 0.2) == 0.0
    small_first = [0.0, 1.0, 2.0, 3.0]
    assert effort_recall_at(small_first, labels, big_first, 0.2) == 0.5


def test_the_report_scores_each_arm_and_the_served_answers_against_the_baseline() -> None:
    from datetime import UTC, datetime, timedelta

    from ops.report.page import build_report
    from ops.report.served import arms, mean_ci, served_series
    from schemas import new_event
    from schemas.policy import LivePolicy, ModelRef

    t0, agent, evs = datetime(2026, 1, 1, tzinfo=UTC), "task-estimator", []
    truth = [float(1 + (i * 7) % 13) for i in range(300)]
    for i, y in enumerate(truth):
        at = t0 + timedelta(seconds=i)
        ctx = {"task_id": f"t{i}", "project": "p", "title": "x"}
        evs += [new_event("decision.requested", {"request_id": f"r{i}", "kind": "task_estimate",
                                                 "context": ctx}, producer=agent, occurred_at=at),
                new_event("decision.made", {"request_id": f"r{i}", "kind": "task_estimate",
                                            "output": y + 2.0, "model_version": "m0:1",
                                            "policy": "champion", "inputs_digest": "d",
                                            "features": {}}, producer=agent, occurred_at=at)]
        evs += [new_event("shadow.predicted", {"request_id": f"r{i}", "kind": "task_estimate",
                                               "model": m, "prediction": y + err},
                          producer=agent, occurred_at=at)
                for m, err in (("m0", 2.0), ("m1", -1.0 if i % 2 else 0.5))]
        evs.append(new_event("task.completed", {"task_id": f"t{i}", "project": "p",
                                                "actual_points": y}, producer="tracker",
                             occurred_at=at + timedelta(milliseconds=5)))
    s = served_series(evs)[agent]
    assert [e for _, e in s.served] == [2.0] * 300
    assert [e for _, e in s.baseline] == [abs(4.0 - y) for y in truth]  # constant 4
    pol = LivePolicy(agent, "task_estimate", "live", ModelRef("m0", 1))
    rows = {r["model"]: r for r in arms(s, pol)}
    assert rows["m0"]["role"] == "champion" and rows["m1"]["role"] == "shadow challenger"
    last = [1.0 if i % 2 else 0.5 for i in range(100, 300)]
    assert (rows["m1"]["error"], rows["m1"]["ci_low"], rows["m1"]["ci_high"]) == mean_ci(last)
    assert rows["m1"]["gate_pairs"] == 300 and rows["m1"]["gate_p"] < 1e-10
    page = build_report(evs, {agent: pol}, {})
    assert "What the live policy served" in page and "shadow challenger" in page
