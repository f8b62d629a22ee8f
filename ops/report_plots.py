"""Matplotlib charts of the report, each returned as a ``data:image/png;base64`` URI.

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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

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


def _time_axis(ax: Any) -> None:
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
    for i, (name, pts) in enumerate(series.items()):
        pts = thin(pts)
        if not pts:
            continue
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
    _time_axis(ax)
    ax.legend(loc="best", fontsize=8, frameon=False)
    return to_uri(fig)


def canary_chart(points: Sequence[tuple[datetime, int, str]], until: datetime) -> str:
    """Canary percent over time as a step line; ``kind`` is step / promoted / rolled_back."""
    fig, ax = _figure(2.6)
    xs: list[datetime] = []
    ys: list[int] = []
    for when, percent, kind in points:
        xs.append(when)
        ys.append(percent)
        if kind == "promoted":  # 100 %: the challenger became champion; canary restarts at 0
            ax.scatter([when], [100], marker="^", s=70, color="#16a34a", zorder=3,
                       label="promoted")
            xs.append(when)
            ys.append(0)
        elif kind == "rolled_back":
            ax.scatter([when], [0], marker="X", s=80, color="#dc2626", zorder=3,
                       label="rolled back")
    if xs:
        xs.append(max(until, xs[-1]))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="#f59e0b", linewidth=2, label="canary %")
    ax.set_ylim(-8, 108)
    ax.set_yticks([0, 5, 25, 50, 100])
    ax.set_ylabel("traffic on challenger (%)")
    _time_axis(ax)
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
