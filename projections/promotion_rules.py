"""The promotion gate and the rollback rules, as pure functions of one agent's state.

What they decide and why (Wilcoxon signed-rank on paired errors, sample
sizes, the rollback thresholds) is told in :mod:`projections.promotion`, the
projection that drives them.

>>> st = AgentState(step=5, champion=["m0", 1], challenger=["m1", 2])
>>> st.latency = {"canary": [9000.0] * 50, "champion": [300.0] * 50}
>>> degraded(st, PromotionPolicy())
'latency p99 9000us vs champion 300us'
>>> winner(AgentState(champion=["m0", 1]), PromotionPolicy()) is None
True
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import wilcoxon


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    """Pure configuration of the gate and of automatic rollback (see module docstring)."""

    alpha: float = 0.01
    min_samples: int = 200
    window: int = 1000
    test_every: int = 25
    min_gain: float = 0.01
    degrade_window: int = 200
    degrade_min_samples: int = 50
    degrade_tolerance: float = 0.10
    latency_min_samples: int = 50
    latency_tolerance: float = 0.5
    latency_slack_us: float = 1000.0
    fallback_min_samples: int = 50
    fallback_tolerance: float = 0.02
    refresh_every: int = 100  # scored outcomes between snapshots of the live models (0: never)


@dataclass
class AgentState:
    """The state machine of one agent (plain data, serialised by orjson)."""

    step: int = 0
    champion: list[Any] = field(default_factory=list)  # [name, version]
    challenger: list[Any] | None = None
    previous: list[Any] | None = None  # champion before the last 100 % promotion
    revision: int = 0
    next_version: int = 2
    last_seq: int = 0
    since_test: int = 0
    since_refresh: int = 0  # scored outcomes since the live models were last snapshotted
    pairs: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    gens: dict[str, int] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)  # policy -> latencies
    fallbacks: dict[str, list[int]] = field(default_factory=dict)  # route -> [fallbacks, n]

    def new_step(self) -> None:
        self.pairs, self.latency, self.fallbacks, self.since_test = {}, {}, {}, 0


def mean(xs: Any) -> float:
    """Mean of an iterable (0 when empty).

    >>> mean(x for x in (1.0, 2.0)), mean([])
    (1.5, 0.0)
    """
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def p99(xs: list[float]) -> float:
    """Nearest-rank 99th percentile of a non-empty list."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def winner(st: AgentState, cfg: PromotionPolicy) -> tuple[str, float, float] | None:
    """Best challenger passing the gate: (name, p-value, relative gain)."""
    k = max(len(st.pairs), 1) if st.step == 0 else 1
    best: tuple[str, float, float] | None = None
    for name, q in st.pairs.items():
        if len(q) < cfg.min_samples:
            continue
        d = [c - h for c, h in q]
        base = mean(c for c, _ in q)
        gain = mean(d) / base if base > 0 else 0.0
        if gain < cfg.min_gain or sum(1 for v in d if v != 0.0) < 10:
            continue
        p = float(wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)
        if p < cfg.alpha / k and (best is None or gain > best[2]):
            best = (name, p, gain)
    return best


def gate_report(st: AgentState) -> dict[str, dict[str, float]]:
    """Where each challenger stands at the gate now: pairs, mean gain and p-value.

    The same one-sided Wilcoxon test :func:`winner` runs, on the pairs
    collected in the current step, without its thresholds (for reports: an
    arm with fewer than 10 non-zero differences gets ``p`` = 1).

    >>> st = AgentState(champion=["m0", 1], pairs={"m1": deque([(2.0, 1.0)] * 20)})
    >>> r = gate_report(st)["m1"]
    >>> r["n"], r["gain"], r["p"] < 1e-4
    (20, 0.5, True)
    """
    out: dict[str, dict[str, float]] = {}
    for name, q in st.pairs.items():
        d = [c - h for c, h in q]
        base = mean(c for c, _ in q)
        p = 1.0
        if sum(1 for v in d if v != 0.0) >= 10:
            p = float(wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)
        out[name] = {"n": len(d), "gain": mean(d) / base if base > 0 else 0.0, "p": p}
    return out


def degraded(st: AgentState, cfg: PromotionPolicy) -> str:
    """Why the canary must be rolled back ("" when it is fine)."""
    q = list(st.pairs.get(st.challenger[0], ()))[-cfg.degrade_window:] if st.challenger else []
    if len(q) >= cfg.degrade_min_samples:
        champ, chal = mean(c for c, _ in q), mean(h for _, h in q)
        if chal > champ * (1.0 + cfg.degrade_tolerance):
            return f"error {chal:.4g} vs champion {champ:.4g} over {len(q)} requests"
    can, cha = st.latency.get("canary", []), st.latency.get("champion", [])
    if len(can) >= cfg.latency_min_samples and len(cha) >= cfg.latency_min_samples:
        pc, ph = p99(can), p99(cha)
        if pc > ph * (1.0 + cfg.latency_tolerance) + cfg.latency_slack_us:
            return f"latency p99 {pc:.0f}us vs champion {ph:.0f}us"
    fc, fh = st.fallbacks.get("canary", [0, 0]), st.fallbacks.get("champion", [0, 0])
    if fc[1] >= cfg.fallback_min_samples:
        rc, rh = fc[0] / fc[1], fh[0] / max(fh[1], 1)
        if rc > rh + cfg.fallback_tolerance:
            return f"fallback rate {rc:.1%} vs champion {rh:.1%}"
    return ""
