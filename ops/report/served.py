"""The report's "served" section: what each live agent's answers were worth.

Per agent that made decisions: the error of the answer each request got
(``decision.made``, scored when its outcome arrives) over time against the
never-learning baseline's error on the same requests, and one row per arm —
champion, canary and every shadow challenger — with its mean error and a 95 %
confidence interval over the last :data:`ARM_WINDOW` scored outcomes and the
promotion gate's p-value now: the gate's own test
(:func:`projections.promotion_rules.gate_report`) on the pairs it holds now,
rebuilt from the events (the pairs scored since the last canary step or
rollback, at most ``window`` = 1 000; refreshes keep them).

Kept apart from :mod:`ops.report.collect` so the two fold their events
independently. Errors are the gate's (:func:`projections.prequential.error_of`):
absolute error for story points, log loss for review risk.

>>> from datetime import UTC, datetime
>>> from schemas import new_event
>>> t = datetime(2025, 1, 1, tzinfo=UTC)
>>> evs = [new_event("decision.requested", {"request_id": "r", "kind": "task_estimate",
...     "context": {"task_id": "t1", "project": "p"}}, producer="a", occurred_at=t),
...   new_event("decision.made", {"request_id": "r", "kind": "task_estimate", "output": 3.0,
...     "model_version": "m:1", "policy": "champion", "inputs_digest": "d", "features": {}},
...     producer="a", occurred_at=t),
...   new_event("task.completed", {"task_id": "t1", "project": "p", "actual_points": 5.0},
...     producer="tracker", occurred_at=t)]
>>> s = served_series(evs)["a"]
>>> s.served[0][1], s.baseline[0][1]
(2.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from projections.learners import learner_factory
from projections.prequential import error_of
from projections.promotion_rules import AgentState, PromotionPolicy, gate_report
from projections.shadow import OUTCOME_KEY, OUTCOMES
from schemas import Envelope
from schemas.envelope import thaw
from schemas.policy import LivePolicy

#: what the section reads (the page loads these besides collect's REPORT_TYPES)
SERVED_TYPES = ("decision.requested", "decision.made", "shadow.predicted", *OUTCOMES,
                "promotion.step_changed", "promotion.rolled_back")
BASELINE = {"task_estimate": "constant", "review_risk": "size_heuristic"}
ARM_WINDOW = 200  # scored outcomes behind each arm's mean error and interval
ROLLING = 50  # outcomes in the rolling mean of the chart
Point = tuple[datetime, float]


@dataclass
class ServedSeries:
    """One agent's scored answers: served and baseline errors, and each model's errors."""

    agent_id: str
    kind: str
    served: list[Point] = field(default_factory=list)
    baseline: list[Point] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)  # champion | canary | ..., per point
    models: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (outcome no, err)
    step_started: int = 0  # outcome count at the last canary step or rollback


def served_series(events: Iterable[Envelope]) -> dict[str, ServedSeries]:
    """Fold the events (any order) into each deciding agent's scored answers."""
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {}  # rid -> agent, kind, context
    made: dict[str, tuple[float, str]] = {}  # rid -> output, policy
    shadow: dict[str, dict[str, float]] = {}  # rid -> model -> prediction
    pending: dict[tuple[str, str], str] = {}  # (kind, outcome key) -> rid
    out: dict[str, ServedSeries] = {}
    for ev in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        p = ev.payload
        if ev.type == "decision.requested":
            ctx = thaw(p["context"])
            key = ctx.get(OUTCOME_KEY.get(p["kind"], ""))
            if key is not None:
                requests[p["request_id"]] = (ev.producer, p["kind"], ctx)
                pending[(p["kind"], str(key))] = p["request_id"]
        elif ev.type == "decision.made":
            made[p["request_id"]] = (float(p["output"]), str(p["policy"]))
        elif ev.type == "shadow.predicted":
            shadow.setdefault(p["request_id"], {})[p["model"]] = float(p["prediction"])
        elif ev.type in OUTCOMES:
            kind, key_field = OUTCOMES[ev.type]
            rid = pending.pop((kind, str(p[key_field])), None)
            if rid is not None and rid in made and rid in requests:
                _score(out, rid, requests.pop(rid), made.pop(rid), shadow.pop(rid, {}), p, ev)
        elif ev.type in ("promotion.step_changed", "promotion.rolled_back"):
            s = out.get(str(p["agent_id"]))
            if s is not None:
                s.step_started = len(s.served)
    return out


def _score(out: dict[str, ServedSeries], rid: str, request: tuple[str, str, dict[str, Any]],
           answer: tuple[float, str], preds: Mapping[str, float], p: Mapping[str, Any],
           ev: Envelope) -> None:
    agent, kind, ctx = request
    y = float(p["actual_points"]) if kind == "task_estimate" else (
        0.0 if p["passed_first_try"] else 1.0)
    s = out.get(agent)
    if s is None:
        s = out[agent] = ServedSeries(agent, kind)
    base = learner_factory(kind, BASELINE[kind])().predict_one(ctx)
    s.served.append((ev.occurred_at, error_of(kind, answer[0], y)[0]))
    s.baseline.append((ev.occurred_at, error_of(kind, base, y)[0]))
    s.policies.append(answer[1])
    for name, pred in preds.items():
        s.models.setdefault(name, []).append((len(s.served), error_of(kind, pred, y)[0]))


def rolling(points: list[Point], window: int = ROLLING) -> list[Point]:
    """Mean of the last ``window`` values at every point.

    >>> [v for _, v in rolling([(None, 1.0), (None, 3.0), (None, 5.0)], 2)]
    [1.0, 2.0, 4.0]
    """
    out: list[Point] = []
    acc = 0.0
    for i, (t, v) in enumerate(points):
        acc += v - (points[i - window][1] if i >= window else 0.0)
        out.append((t, acc / min(i + 1, window)))
    return out


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and normal-approximation 95 % interval (NaN when fewer than two values).

    >>> [round(v, 3) for v in mean_ci([1.0, 2.0, 3.0, 4.0])]
    [2.5, 1.235, 3.765]
    """
    n = len(values)
    if n < 2:
        return (values[0] if values else math.nan), math.nan, math.nan
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return m, m - half, m + half


def arms(s: ServedSeries, pol: LivePolicy | None,
         gate: PromotionPolicy | None = None) -> list[dict[str, Any]]:
    """Champion, canary and every shadow challenger: error, 95 % CI, gate p-value now."""
    cfg = gate or PromotionPolicy()
    champion = pol.champion.name if pol else ""
    canary = pol.challenger.name if pol and pol.challenger else ""
    errs = {n: dict(v) for n, v in s.models.items()}
    pairs: dict[str, Any] = {}
    if champion in errs:
        mine = errs[champion]
        for name, other in errs.items():
            if name == champion or (canary and name != canary):
                continue  # in canary the gate holds only the challenger's pairs
            common = [i for i in other if i in mine and i > s.step_started]
            pairs[name] = [(mine[i], other[i]) for i in common[-cfg.window:]]
    report = gate_report(AgentState(champion=[champion, 0], pairs=pairs))
    rows = []
    for name, series in s.models.items():
        role = ("champion" if name == champion else "canary" if name == canary
                else "shadow challenger")
        m, lo, hi = mean_ci([e for _, e in series[-ARM_WINDOW:]])
        g = report.get(name, {})
        rows.append({"model": name, "role": role, "n": min(len(series), ARM_WINDOW),
                     "error": m, "ci_low": lo, "ci_high": hi, "gate_pairs": int(g.get("n", 0)),
                     "gate_p": g.get("p", math.nan)})
    order = {"champion": 0, "canary": 1, "shadow challenger": 2}
    return sorted(rows, key=lambda r: order[r["role"]])


def served_section(events: Iterable[Envelope], policies: Mapping[str, LivePolicy]) -> str:
    """The HTML section: per deciding agent, the served-error chart and the arms table."""
    from ops.report.html import esc, fmt, img, table
    from ops.report.plots import line_chart

    series = served_series(events)
    parts = ["<section><h2>What the live policy served</h2>"
             '<p class="muted">Error of the answer each request got, scored when its outcome '
             f"arrived (rolling mean of {ROLLING}), against the never-learning baseline on the "
             "same requests. Arms: mean error over the last "
             f"{ARM_WINDOW} outcomes with a 95 % interval; gate p: the promotion gate's "
             "one-sided Wilcoxon test on its current pairs (champion − arm).</p>"]
    if not series:
        parts.append('<p class="muted">No scored decisions yet.</p>')
    for aid, s in sorted(series.items()):
        metric = "absolute error" if s.kind == "task_estimate" else "log loss"
        served, base = mean_ci([v for _, v in s.served]), mean_ci([v for _, v in s.baseline])
        parts.append(f"<h3>{esc(aid)}</h3><p>{len(s.served):,} scored answers · served "
                     f"{metric} {fmt(served[0], 3)} vs baseline "
                     f"({esc(BASELINE[s.kind])}) {fmt(base[0], 3)}</p>")
        parts.append(img(line_chart(
            {"served": rolling(s.served), f"baseline ({BASELINE[s.kind]})": rolling(s.baseline)},
            ylabel=metric, styles={f"baseline ({BASELINE[s.kind]})": {"color": "#6b7280",
                                                                     "linestyle": "--"}}),
            f"{aid}: served vs baseline error"))
        rows = [(esc(r["model"]), esc(r["role"]), f"{r['n']:,}", fmt(r["error"], 3),
                 f"{fmt(r['ci_low'], 3)} – {fmt(r['ci_high'], 3)}",
                 "—" if r["role"] == "champion" else f"{r['gate_pairs']:,}",
                 "—" if r["role"] == "champion" or r["gate_p"] != r["gate_p"]
                 else f"{r['gate_p']:.2g}")
                for r in arms(s, policies.get(aid))]
        parts.append(table(("model", "arm", "n", metric, "95 % CI", "gate pairs", "gate p"),
                           rows, {2, 3, 5, 6}))
    parts.append("</section>")
    return "".join(parts)
