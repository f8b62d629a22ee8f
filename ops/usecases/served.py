"""``selflearn evaluate storypoints|changes --served``: score what the live policy answered.

Every project is one team that starts the product fresh. Its rows are
replayed in the order of ``evaluate --through-pipeline``
(:func:`ops.demo.pipeline_eval.storypoint_replays` / ``change_replays``: story
points predict-then-learn, code changes with outcomes a year late) through
the worker's own learning code and the agent's own decision engine, in one
process:

* a request is answered first by :class:`agents.decision.DecisionEngine` from
  the live policy it has installed — the champion, the canary for its hashed
  share of request ids, the rule-based baseline before the first policy —
  as ``AgentClient.decide`` does; then ``decision.requested`` and
  ``decision.made`` are applied to a :class:`projections.learning.LearningShard`
  (shadow learning, promotion gate, automatic rollback: the worker's classes);
* outcomes are applied to the same shard;
* every transition the shard returns (first policy, canary steps, promotion,
  rollback) is published as the worker publishes it: its snapshots into a
  dict standing in for Redis, where only a newer revision wins
  (:class:`projections.policy_store.PolicyStore`'s rule), and the engine
  installs the policy with the stored snapshots of its champion and canary,
  as its refresh thread does.

The answer each scored request got is the learner ``served``. Beside it:
each model of the agent as it predicted in the shadow (the same requests,
drift resets included) and the never-learning baseline of the kind.

Differences from a deployment, on purpose (docs/served.md):

* a transition is live for the next request (deployed: after the read
  model's next refresh, 0.5 s);
* ``decision.made`` carries no latency, so the latency rollback rule never
  fires (it would make the numbers depend on the machine's load); the error
  and fallback rules run;
* online features (Redis counters) are empty: no learner of these kinds reads them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.decision import BASELINES, DecisionEngine
from ops.demo.pipeline_eval import Replay, change_replays, storypoint_replays
from projections.agent_specs import DEFAULT_AGENTS, AgentSpec
from projections.evaluate import (
    change_effort,
    change_summary,
    effort_recall_at,
    macro_gains,
    recall_at,
    storypoint_summary,
)
from projections.learners import learner_factory
from projections.learning import LearningShard
from projections.promotion import Transition, label
from projections.promotion_rules import PromotionPolicy, gate_report
from schemas import new_event

SERVED = "served"
PREFIX = "served"
#: the agent whose configuration (champion, challengers, mode) each project replays
AGENT_OF = {"storypoints": "task-estimator", "changes": "code-reviewer"}
#: review answers are ranked by their percentile among this many of the serving model's scores
PERCENTILE_WINDOW = 1000
#: targets of issue 16 on the served answers, macro over projects
TARGETS = {"storypoints": {"gain_vs_constant": 0.20, "gain_vs_running_median": 0.10},
           "changes": {"recall_gain_vs_size_heuristic": 0.15}}


@dataclass
class ServedProject:
    """One project's replay: what each scored request got, and what each model said."""

    agent_id: str
    served: list[float] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)  # "champion knn_median:3", per scored request
    models: dict[str, list[float]] = field(default_factory=dict)
    contexts: list[dict[str, Any]] = field(default_factory=list)  # scored requests' contexts
    transitions: list[dict[str, Any]] = field(default_factory=list)
    gate: dict[str, dict[str, float]] = field(default_factory=dict)
    step: int = 0


def replay_served(replay: Replay, spec: AgentSpec,
                  gate: PromotionPolicy | None = None) -> ServedProject:
    """Replay one project's events through shard and engine (see the module docstring)."""
    agent, kind = spec.agent_id, spec.kind
    shard = LearningShard(PREFIX)
    shard.shadow.specs[agent] = spec
    shard.promotion.specs[agent] = spec
    if gate is not None:
        shard.promotion.cfg = gate
    engine = DecisionEngine(agent, kind, redis_url=None, prefix=PREFIX,
                            stale_after_s=math.inf, freeze_gc=False)
    out = ServedProject(agent, models={n: [] for n in spec.learners()})
    store: dict[str, bytes] = {}  # Redis: model key -> snapshot
    scored = set(replay.scored)
    offsets = {"decisions": 0, "outcomes": 0}

    def publish(t: Transition) -> None:
        pol = engine.policy
        if pol is not None and t.policy.revision <= pol.revision:
            return  # not newer: the store keeps what it has
        for ref, data in t.snapshots.items():
            assert ref.snapshot_key is not None
            store[ref.snapshot_key] = data
        refs = [r for r in (t.policy.champion, t.policy.challenger) if r is not None]
        engine.install(t.policy, {r: store.get(r.snapshot_key or "") for r in refs}, {})
        p = t.event.payload
        out.transitions.append({
            "request": len(out.served), "revision": t.policy.revision,
            "type": t.event.type if t.event.type.startswith("promotion.") else "first_policy",
            "champion": label(t.policy.champion), "challenger": label(t.policy.challenger),
            "canary_percent": t.policy.canary_percent, "reason": p.get("reason", "")})

    def apply(topic: str, event: Any) -> dict[str, float]:
        result = shard.apply([(topic, 0, offsets[topic], event)])
        offsets[topic] += 1
        for t in result.policies:
            publish(t)
        return {e.payload["model"]: e.payload["prediction"] for _, e in result.events
                if e.type == "shadow.predicted"}

    for etype, payload in replay.events:
        if etype != "decision.requested":
            apply("outcomes", new_event(etype, payload, producer="tracker"))
            continue
        rid = payload["request_id"]
        d = engine.decide(payload["context"], request_id=rid)
        req = new_event(etype, payload, producer=agent, correlation_id=rid)
        preds = apply("decisions", req)
        apply("decisions", new_event("decision.made", {
            "request_id": rid, "kind": kind, "output": d.output,
            "model_version": d.model_version, "policy": d.policy,
            "inputs_digest": d.inputs_digest, "features": {}},
            producer=agent, correlation_id=rid, causation_id=str(req.event_id)))
        if rid in scored:
            out.served.append(d.output)
            out.arms.append(f"{d.policy} {d.model_version}")
            out.contexts.append(dict(payload["context"]))
            for name, series in out.models.items():
                series.append(preds[name])
    engine.close()
    state = shard.promotion.states.get(agent)
    if state is not None:
        out.gate, out.step = gate_report(state), state.step
    return out


def served_percentiles(run: ServedProject, window: int = PERCENTILE_WINDOW) -> list[float]:
    """Each served answer as its percentile among the serving model's own last scores.

    Review scores of different models live on different scales (the size rule
    counts lines, the learners answer probabilities), so ranking a project's
    served answers by their raw value would rank whole eras, not changes. A
    reviewer acts on "among the riskiest 20 % this model has scored lately":
    the answer's share of the serving model's previous ``window`` shadow
    scores below it (ties count half; 0.5 with no history yet).
    """
    from bisect import bisect_left, bisect_right, insort

    recent: dict[str, list[float]] = {n: [] for n in run.models}
    out: list[float] = []
    for i, (answer, arm) in enumerate(zip(run.served, run.arms, strict=True)):
        model = arm.split()[1].rsplit(":", 1)[0]
        seen = recent.get(model) or []
        if seen:
            below, equal = bisect_left(seen, answer), bisect_right(seen, answer)
            out.append((below + 0.5 * (equal - below)) / len(seen))
        else:
            out.append(0.5)
        for name, scores in run.models.items():
            ordered = recent[name]
            insort(ordered, scores[i])
            if i >= window:
                del ordered[bisect_left(ordered, scores[i - window])]
    return out


def _columns(kind: str, run: ServedProject) -> dict[str, list[float]]:
    """``served``, the never-learning baseline, then every model of the agent."""
    cols = {SERVED: run.served if kind == "task_estimate" else served_percentiles(run)}
    base = BASELINES[kind]
    if base not in run.models:
        never = learner_factory(kind, base)()
        cols[base] = [never.predict_one(x) for x in run.contexts]
    cols.update(run.models)
    return cols


def _history(run: ServedProject) -> dict[str, Any]:
    return {"agent": run.agent_id, "answers": dict(Counter(a.split()[0] for a in run.arms)),
            "models_served": dict(Counter(a.split()[1] for a in run.arms)),
            "transitions": run.transitions, "final_step": run.step, "gate": run.gate}


def evaluate_served(what: str, folder: str | Path, spec: AgentSpec | None = None,
                    gate: PromotionPolicy | None = None) -> dict[str, Any]:
    """``evaluate``'s JSON with the learner ``served``, plus ``served_history`` and ``targets``.

    ``spec``: the agent configuration every project replays (default: the
    shipped ``task-estimator`` / ``code-reviewer``); ``gate``: the promotion
    configuration (default: the worker's).
    """
    if what not in AGENT_OF:
        raise ValueError(f"unknown evaluation {what!r}; use storypoints or changes")
    base_spec = spec or DEFAULT_AGENTS[AGENT_OF[what]]
    folder = Path(folder)
    if what == "storypoints":
        replays, actual = storypoint_replays(folder)
        errors: dict[str, dict[str, list[float]]] = {}
        runs = {p: replay_served(rp, base_spec, gate) for p, rp in replays.items()}
        for project, run in runs.items():
            ys = actual[project]
            errors[project] = {k: [abs(p - y) for p, y in zip(v, ys, strict=True)]
                               for k, v in _columns("task_estimate", run).items()}
        result = storypoint_summary(errors)
        for ref in ("constant", "running_median"):
            if ref in result["pooled"]["mae"]:
                result[f"macro_gain_vs_{ref}"] = macro_gains(result, ref)
    else:
        creplays, labels = change_replays(folder)
        runs = {p: replay_served(rp, base_spec, gate) for p, rp in creplays.items()}
        replayed = {p: (labels[p], _columns("review_risk", run)) for p, run in runs.items()}
        result = change_summary(replayed)
        _effort_aware(result, replayed, runs)
    result["served_history"] = {p: _history(run) for p, run in runs.items()}
    result["targets"] = targets(what, result)
    return result


def _effort_aware(result: dict[str, Any], replayed: dict[str, Any],
                  runs: dict[str, ServedProject]) -> None:
    """Add ``effort_recall_at_20`` per project and ``pooled`` recall (defects found / all).

    ``effort_recall_at_20``: share of the defects found reviewing changes in
    order of risk per changed line until 20 % of the project's changed lines
    are reviewed (:func:`projections.evaluate.effort_recall_at`).
    """
    found: Counter[str] = Counter()
    found_effort: Counter[str] = Counter()
    defects = n = 0
    for project, (ys, cols) in replayed.items():
        effort = [change_effort(x) for x in runs[project].contexts]
        # effort-aware ranking (Kamei et al. 2013): predicted risk per changed line
        per = {k: effort_recall_at([v / max(e, 1.0) for v, e in zip(s, effort, strict=True)],
                                   ys, effort) for k, s in cols.items()}
        result["projects"][project]["effort_recall_at_20"] = per
        pos = sum(ys)
        defects, n = defects + pos, n + len(ys)
        for k, s in cols.items():
            found[k] += recall_at(s, ys) * pos
            found_effort[k] += per[k] * pos
    names = list(result["macro_recall_at_20"])
    result["macro_effort_recall_at_20"] = {
        k: sum(p["effort_recall_at_20"][k] for p in result["projects"].values())
        / len(result["projects"]) for k in names}
    result["pooled"] = {"n": n, "defects": defects,
                        "recall_at_20": {k: found[k] / max(defects, 1) for k in names},
                        "effort_recall_at_20": {k: found_effort[k] / max(defects, 1)
                                                for k in names}}


def targets(what: str, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 16's targets on the served answers (macro over projects): value, target, met."""
    projects = result["projects"].values()
    if what == "storypoints":
        values = {f"gain_vs_{ref}": result[f"macro_gain_vs_{ref}"][SERVED]
                  for ref in ("constant", "running_median")
                  if f"macro_gain_vs_{ref}" in result}
    else:
        gains = [p["recall_at_20"][SERVED] / p["recall_at_20"]["size_heuristic"] - 1.0
                 for p in projects if p["recall_at_20"]["size_heuristic"] > 0]
        values = {"recall_gain_vs_size_heuristic": sum(gains) / max(len(gains), 1)}
    return {k: {"value": v, "target": TARGETS[what][k], "met": v >= TARGETS[what][k]}
            for k, v in values.items()}
