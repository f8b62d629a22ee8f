"""Prequential metrics of one model: its errors, rolling windows and drift detector.

Errors: ``task_estimate`` absolute error in story points; ``review_risk`` log
loss of the risk of needing another round (predictions clipped to
``[1e-6, 1 - 1e-6]``; scores outside ``[0, 1]``, like ``size_heuristic``'s,
are treated as certain), Brier score as a second metric.

Drift: an ADWIN detector (``river.drift.ADWIN``) watches each model's error;
:class:`projections.shadow.ShadowProjection` decides what a drift resets.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from river.drift import ADWIN

from projections.learners import Learner
from projections.sealing import dumps_sealed, loads_sealed

log = logging.getLogger(__name__)
EPS = 1e-6
DRIFT_DELTA = 0.001  # ADWIN confidence; smaller is more conservative


@dataclass(frozen=True, slots=True)
class Scored:
    """Errors of every model of one agent on the same request (for paired tests)."""

    agent_id: str
    kind: str
    request_id: str
    seq: int  # per-agent count of scored outcomes, 1-based; increases by one
    errors: Mapping[str, float]
    generations: Mapping[str, int]
    occurred_at: datetime


def error_of(kind: str, prediction: float, y: float) -> tuple[float, float]:
    """(error, secondary metric): absolute error, or (log loss, Brier score).

    >>> error_of("task_estimate", 3.0, 5.0)
    (2.0, 0.0)
    >>> [round(v, 4) for v in error_of("review_risk", 0.8, 1.0)]
    [0.2231, 0.04]
    """
    if kind == "task_estimate":
        return abs(prediction - y), 0.0
    p = min(max(prediction, EPS), 1.0 - EPS) if math.isfinite(prediction) else 0.5
    loss = -math.log(p) if y >= 0.5 else -math.log(1.0 - p)
    return loss, (p - y) ** 2


def finite(prediction: float, kind: str) -> float:
    """A prediction as a finite float (NaN/inf: the kind's neutral answer, 0 or 0.5)."""
    p = float(prediction)
    return p if math.isfinite(p) else (0.0 if kind == "task_estimate" else 0.5)


@dataclass
class ModelState:
    """One model of one agent: the learner, its drift detector and prequential metrics."""

    learner: Learner
    window: int
    generation: int = 1
    n: int = 0
    total: float = 0.0
    total2: float = 0.0
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    rsum: float = 0.0
    rsum2: float = 0.0
    drifts: int = 0
    detector: ADWIN = field(default_factory=lambda: ADWIN(delta=DRIFT_DELTA))

    def score(self, err: float, aux: float) -> bool:
        """Add one error; True when the detector signals drift."""
        self.n += 1
        self.total += err
        self.total2 += aux
        self.recent.append((err, aux))
        self.rsum += err
        self.rsum2 += aux
        if len(self.recent) > self.window:
            old, old2 = self.recent.popleft()
            self.rsum -= old
            self.rsum2 -= old2
        self.detector.update(err)
        return bool(self.detector.drift_detected)

    def summary(self, kind: str) -> dict[str, float]:
        main = "mae" if kind == "task_estimate" else "log_loss"
        m, r = max(self.n, 1), max(len(self.recent), 1)
        out = {"n": float(self.n), main: self.total / m, f"rolling_{main}": self.rsum / r,
               "drifts": float(self.drifts), "generation": float(self.generation)}
        if kind == "review_risk":
            out["brier"], out["rolling_brier"] = self.total2 / m, self.rsum2 / r
        return out

    def state(self) -> dict[str, Any]:
        return {
            "learner": self.learner.snapshot().decode(), "generation": self.generation,
            "n": self.n, "total": self.total, "total2": self.total2,
            "recent": list(self.recent), "rsum": self.rsum, "rsum2": self.rsum2,
            "drifts": self.drifts,
            # ADWIN is an object graph: pickled, and sealed (HMAC) so a checkpoint
            # written by anyone but a holder of the key is refused, not unpickled.
            "detector": dumps_sealed(self.detector, _detector_context(self.learner.name)),
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any], factory: Callable[[], Learner],
                   window: int) -> ModelState:
        restore = getattr(factory, "restore", None) or type(factory()).restore
        learner = restore(raw["learner"].encode())
        sealed = raw["detector"]
        if isinstance(sealed, str):  # written before detectors were sealed: never unpickled
            log.warning("unsealed drift detector state of %s dropped; it starts afresh",
                        learner.name)
            detector = ADWIN(delta=DRIFT_DELTA)
        else:  # raises SnapshotTampered before unpickling anything forged
            detector = loads_sealed(sealed, _detector_context(learner.name))
        return cls(
            learner=learner, window=window,
            generation=raw["generation"], n=raw["n"], total=raw["total"], total2=raw["total2"],
            recent=deque(tuple(p) for p in raw["recent"]), rsum=raw["rsum"], rsum2=raw["rsum2"],
            drifts=raw["drifts"], detector=detector,
        )


def _detector_context(learner: str) -> str:
    """What a sealed detector state claims to be (bound into its MAC)."""
    return f"ADWIN drift detector of learner {learner!r}"
