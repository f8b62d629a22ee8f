"""The report's pictures: matplotlib charts as ``data:image/png;base64`` URIs, and the
HTML sections (chart plus table) that show them.

Headless (Agg backend), no fonts or files from the network: the page that
embeds these strings is self-contained. Every function takes plain series
(lists of ``(datetime, value)``) so it can be called without any server.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
>>> uri = line_chart({"m": [(t0, 1.0), (t0 + timedelta(minutes=1), 0.5)]}, ylabel="MAE")
>>> uri.startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ops.report.collect import (  # noqa: E402
    FPS_TARGET,
    HISTORY_ROWS,
    LATENCY_TARGET_US,
    POLICY_LABELS,
    AgentData,
    Collected,
    Point,
    canary_step,
    percentile,
)
from ops.report.html import anchor, esc, fmt, fmt_time, img, table  # noqa: E402
from schemas.policy import STEPS, LivePolicy  # noqa: E402

Series = Sequence[tuple[datetime, float]]
PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444", "#0ea5e9", "#84cc16",
           "#ec4899")
POLICY_COLORS = {"champion": "#2563eb", "canary": "#f59e0b", "fallback": "#ef4444",
                 "baseline": "#6b7280"}
MAX_POINTS = 600  # per series; longer series are thinned evenly before plotting


def _figure(height: float = 3.0) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(8.4, height), dpi=100)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _time_axis(ax: Any, times: Sequence[datetime]) -> None:
    if times and max(times) - min(times) < timedelta(minutes=1):  # too short for date ticks
        ax.set_xlim(min(times) - timedelta(minutes=1), max(times) + timedelta(minutes=1))
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def to_uri(fig: Figure) -> str:
    """Render ``fig`` to PNG, close it, and return it as a base64 data URI."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thin(series: Series, limit: int = MAX_POINTS) -> list[tuple[datetime, float]]:
    """At most ``limit`` evenly spaced points of ``series`` (first and last kept).

    >>> len(thin([(None, float(i)) for i in range(10_000)], 100))
    100
    """
    pts = list(series)
    if len(pts) <= limit:
        return pts
    step = (len(pts) - 1) / (limit - 1)
    return [pts[round(i * step)] for i in range(limit)]


def line_chart(series: Mapping[str, Series], *, ylabel: str, styles:
               Mapping[str, Mapping[str, Any]] | None = None, hline: float | None = None,
               hline_label: str = "", logy: bool = False) -> str:
    """One line per named series over event time; ``styles`` overrides line options."""
    fig, ax = _figure()
    times: list[datetime] = []
    for i, (name, pts) in enumerate(series.items()):
        pts = thin(pts)
        if not pts:
            continue
        times += (pts[0][0], pts[-1][0])
        style: dict[str, Any] = {"color": PALETTE[i % len(PALETTE)], "linewidth": 1.6}
        style.update((styles or {}).get(name, {}))
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=name, marker="o" if len(pts) < 30 else None, markersize=3,
                **style)
    if hline is not None:
        ax.axhline(hline, color="#dc2626", linewidth=1, linestyle=":", label=hline_label)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    _time_axis(ax, times)
    ax.legend(loc="best", fontsize=8, frameon=False)
    return to_uri(fig)


def canary_chart(points: Sequence[tuple[datetime, int, str]], until: datetime) -> str:
    """Canary percent over time as a step line; ``kind`` is step / promoted / rolled_back."""
    fig, ax = _figure(2.6)

    def rung(percent: int) -> float:  # the ramp's steps, evenly spaced (5 % is visible)
        return float(STEPS.index(percent)) if percent in STEPS else percent / 25.0

    xs: list[datetime] = []
    ys: list[float] = []
    for when, percent, kind in points:
        xs.append(when)
        ys.append(rung(percent))
        if kind == "promoted":  # 100 %: the challenger became champion; canary restarts at 0
            ax.scatter([when], [rung(100)], marker="^", s=70, color="#16a34a", zorder=3,
                       label="promoted")
            xs.append(when)
            ys.append(0.0)
        elif kind == "rolled_back":
            ax.scatter([when], [0], marker="X", s=80, color="#dc2626", zorder=3,
                       label="rolled back")
    if xs:
        xs.append(max(until, xs[-1]))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="#f59e0b", linewidth=2, label="canary step")
    ax.set_ylim(-0.3, len(STEPS) - 0.6)
    ax.set_yticks(range(len(STEPS)), [f"{s} %" for s in STEPS])
    ax.set_ylabel("traffic on challenger")
    _time_axis(ax, xs)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=8, frameon=False)
    return to_uri(fig)


def bar_chart(counts: Mapping[str, float], *, xlabel: str, color: str = "#ef4444") -> str:
    """Horizontal bars, largest on top (dead letters by reason)."""
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = _figure(max(1.6, 0.45 * len(items) + 0.8))
    ax.barh([k for k, _ in items], [v for _, v in items], color=color)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", color="#e5e7eb")
    ax.grid(False, axis="y")
    return to_uri(fig)


# --- sections: charts with their tables ----------------------------------------------------

def agents_section(c: Collected, policies: Mapping[str, LivePolicy]) -> str:
    """The table at the top: one row per agent, linking to its section."""
    rows = []
    for aid in sorted(set(c.agents) | set(policies)):
        a, pol = c.agents.get(aid) or AgentData(aid), policies.get(aid)
        lat = [v for s in a.latency.values() for _, v in s]
        champ = pol.champion.name if pol else ""
        latest = a.metrics.get(champ, [])
        rows.append((
            f'<a href="#{anchor(aid)}">{esc(aid)}</a>', esc(pol.kind if pol else a.kind or "—"),
            esc(pol.mode if pol else "—"), f"{canary_step(pol, a)} %",
            esc(f"{champ}:v{pol.champion.version}" if pol else "—"),
            esc(f"{pol.challenger.name}:v{pol.challenger.version}"
                if pol and pol.challenger else "—"),
            f"{a.decisions:,}", fmt(percentile(lat, 95)),
            fmt(latest[-1][1], 3) if latest else "—",
            str(sum(h["event"] == "rollback" for h in a.history))))
    head = ("agent", "kind", "mode", "canary", "champion", "challenger", "decisions",
            "p95 latency (µs)", "live metric", "rollbacks")
    return "<section><h2>Agents</h2>" + table(head, rows, {6, 7, 8, 9}) + "</section>"


def agent_section(a: AgentData, pol: LivePolicy | None, until: datetime) -> str:
    """One agent: badges, live vs shadow metrics, canary history, decision latency."""
    mode = pol.mode if pol else "unknown"
    step = canary_step(pol, a)
    out = [f'<section id="{anchor(a.agent_id)}"><h2>{esc(a.agent_id)}</h2><p>',
           f'<span class="badge">{esc(pol.kind if pol else a.kind or "kind unknown")}</span>',
           f'<span class="badge {esc(mode)}">{esc(mode)}</span>',
           f'<span class="badge canary">canary step {step} %</span>']
    if pol is not None:
        chal = f" · challenger {pol.challenger.name}:v{pol.challenger.version}" \
            if pol.challenger else ""
        out.append(f'<span class="muted">champion {esc(pol.champion.name)}:'
                   f"v{pol.champion.version}{esc(chal)} · revision {pol.revision}</span>")
    out.append("</p>")
    if a.metrics:
        champ = pol.champion.name if pol else ""
        canary = pol.challenger.name if pol and pol.challenger else ""
        named: dict[str, list[Point]] = {}
        styles: dict[str, dict[str, Any]] = {}
        for model, pts in sorted(a.metrics.items(), key=lambda kv: kv[0] != champ):
            role = (("live" if mode == "live" else "champion") if model == champ
                    else "canary" if model == canary else "shadow")
            label = f"{model} ({role})"
            named[label] = pts
            styles[label] = {"linewidth": 2.6} if model == champ else (
                {"linewidth": 2.0} if role == "canary" else {"linestyle": "--"})
        out.append(f"<h3>Live vs shadow: {esc(a.metric_name)} per model</h3>")
        out.append(img(line_chart(named, ylabel=a.metric_name, styles=styles),
                       f"{a.agent_id} model metrics"))
    if a.history:
        steps = [(h["at"], h["to"], "rolled_back" if h["event"] == "rollback" else
                  "promoted" if h["to"] == 100 else "step") for h in a.history]
        out.append("<h3>Canary history</h3>")
        out.append(img(canary_chart(steps, until), f"{a.agent_id} canary history"))
        rows = [(fmt_time(h["at"]),
                 '<span class="rollback">rollback</span>' if h["event"] == "rollback"
                 else "step", f'{h["from"]} % → {h["to"]} %', esc(h["champion"]),
                 esc(h["challenger"] or "—"), esc(h["reason"]), esc(h["by"]))
                for h in reversed(a.history[-HISTORY_ROWS:])]
        out.append(table(("time", "event", "step", "champion", "challenger", "reason", "by"),
                         rows))
    if a.latency:
        out.append("<h3>Decision latency by policy</h3>")
        p95 = {f"{name} p95": binned(pts, lambda v: percentile(v, 95))
               for name, pts in sorted(a.latency.items())}
        styles = {f"{n} p95": {"color": POLICY_COLORS.get(n, "#111827")}
                  for n in a.latency}
        chart = line_chart(p95, ylabel="latency (µs, log)", styles=styles,
                           hline=LATENCY_TARGET_US, hline_label="target p95 (100 ms)", logy=True)
        out.append(img(chart, f"{a.agent_id} decision latency"))
        order = sorted(a.latency, key=lambda n: (n not in POLICY_LABELS,
                                                 POLICY_LABELS.index(n)
                                                 if n in POLICY_LABELS else 0, n))
        latency_rows: list[tuple[str, ...]] = []
        for name in order:
            vals = [v for _, v in a.latency[name]]
            latency_rows.append((esc(name), f"{len(vals):,}",
                                 *(fmt(percentile(vals, q)) for q in (50, 95, 99)),
                                 fmt(max(vals))))
        out.append(table(("policy", "decisions", "p50 (µs)", "p95 (µs)", "p99 (µs)",
                          "max (µs)"), latency_rows, {1, 2, 3, 4, 5}))
    if not (a.metrics or a.history or a.latency):
        out.append('<p class="muted">No events for this agent in the report window.</p>')
    return "".join(out) + "</section>"


def binned(pts: Sequence[Point], stat: Callable[[list[float]], float], bins: int = 60
           ) -> list[Point]:
    """``stat`` of each of ``bins`` equal event-time slices of time-ordered ``pts``.

    Empty slices are left out; a short series is returned as it is.
    """
    if len(pts) <= bins:
        return list(pts)
    t0, t1 = pts[0][0], pts[-1][0]
    width = max((t1 - t0).total_seconds() / bins, 1e-6)
    groups: dict[int, list[float]] = defaultdict(list)
    for t, v in pts:
        groups[min(int((t - t0).total_seconds() / width), bins - 1)].append(v)
    return [(pts[0][0] + (pts[-1][0] - t0) * ((i + 0.5) / bins), stat(vs))
            for i, vs in sorted(groups.items())]


def vision_section(c: Collected) -> str:
    """Frames per second per camera (binned mean and minimum) against the 30 fps target."""
    series: dict[str, list[Point]] = {}
    styles: dict[str, dict[str, Any]] = {}
    for i, (cam, recs) in enumerate(sorted(c.cameras.items())):
        fps = [(t, f) for t, f, _, _ in recs]
        series[f"{cam} mean"] = binned(fps, lambda v: sum(v) / len(v))
        series[f"{cam} min"] = binned(fps, min)
        color = PALETTE[i % len(PALETTE)]
        styles[f"{cam} mean"], styles[f"{cam} min"] = {"color": color}, {
            "color": color, "linestyle": ":", "linewidth": 1.0}
    chart = line_chart(series, ylabel="frames / s", styles=styles, hline=FPS_TARGET,
                       hline_label="target 30 fps")
    rows = []
    for cam, recs in sorted(c.cameras.items()):
        rates = [r[1] for r in recs]
        rows.append((esc(cam), f"{len(recs):,}", fmt(sum(rates) / len(rates)), fmt(min(rates)),
                     fmt(percentile([r[2] for r in recs], 95), 2),
                     # ``dropped`` is the camera's running total: the largest value counts.
                     f"{max(r[3] for r in recs):,}"))
    return ("<section><h2>Vision</h2>" + img(chart, "vision fps") +
            table(("camera", "frames", "mean fps", "min fps", "p95 processing (ms)", "dropped"),
                  rows, {1, 2, 3, 4, 5}) + "</section>")


def dead_letter_section(dead: Mapping[str, int]) -> str:
    """Dead-letter counts by reason, as bars and a table."""
    if not dead:
        return '<section><h2>Dead letters</h2><p class="muted">None.</p></section>'
    rows = [(esc(r), f"{n:,}") for r, n in sorted(dead.items(), key=lambda kv: -kv[1])]
    return ("<section><h2>Dead letters</h2>" +
            img(bar_chart(dead, xlabel="records"), "dead letters by reason") +
            table(("reason", "records"), rows, {1}) + "</section>")
