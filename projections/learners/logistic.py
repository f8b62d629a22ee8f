"""Review challenger: online logistic regression on log-scaled change metrics."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from projections.learners.base import StateLearner, num, project_of

#: starting log-odds of every project's intercept, sigmoid(-2) ≈ 0.12: most changes
#: introduce no defect, so an unseen project's first scores mean "probably clean"
BIAS_PRIOR = -2.0


def change_features(x: dict[str, Any]) -> dict[str, float]:
    """Log-scaled just-in-time metrics; ``la``/``ld`` are turned back into absolute lines.

    >>> f = change_features({"la": 0.5, "lt": 100.0, "nf": 3.0})
    >>> round(f["size"], 3), f["fix"]
    (3.989, 0.0)
    """
    lt = max(num(x, "lt"), 0.0)
    la = max(num(x, "la"), 0.0) * lt
    ld = max(num(x, "ld"), 0.0) * lt
    nf = max(num(x, "nf"), 0.0)
    log1p = math.log1p
    return {
        "size": log1p(la + nf),
        "la": log1p(la),
        "ld": log1p(ld),
        "lt": log1p(lt),
        "nf": log1p(nf),
        "ns": log1p(max(num(x, "ns"), 0.0)),
        "nm": log1p(max(num(x, "nm"), 0.0)),
        "entropy": num(x, "entropy"),
        "fix": 1.0 if num(x, "fix") > 0 else 0.0,
        "ndev": log1p(max(num(x, "ndev"), 0.0)),
        "pd": log1p(max(num(x, "pd"), 0.0)),
        "npt": num(x, "npt"),
        "exp": log1p(max(num(x, "exp"), 0.0)),
        "rexp": log1p(max(num(x, "rexp"), 0.0)),
        "sexp": log1p(max(num(x, "sexp"), 0.0)),
    }


class OnlineLogistic(StateLearner):
    """Per-project logistic regression, AdaGrad SGD on log-scaled metrics.

    Before any label arrives the model ranks by size: the weight of the
    ``size`` feature (``log1p(lines added + files)``) starts at ``prior``,
    encoding the well-known size/defect relation instead of a coin flip, and
    the intercept starts at :data:`BIAS_PRIOR`. Both are learned; the score
    served is the one trained (same weights, same intercept).
    AdaGrad step sizes make the fixed log scales of the metrics harmless.

    >>> m = OnlineLogistic()
    >>> small = {"project": "p", "la": 0.01, "lt": 50.0, "nf": 1.0}
    >>> big = {"project": "p", "la": 0.5, "lt": 900.0, "nf": 9.0}
    >>> m.predict_one(big) > m.predict_one(small)
    True
    >>> before = m.predict_one(small)
    >>> for _ in range(50):
    ...     m.learn_one(small, 1.0)
    >>> m.predict_one(small) > before
    True
    """

    name: ClassVar[str] = "logistic"

    def __init__(self, lr: float = 0.002, l2: float = 0.01, prior: float = 1.0) -> None:
        self.lr = float(lr)
        self.l2 = float(l2)
        self.prior = float(prior)
        self.models: dict[str, dict[str, Any]] = {}

    def _model(self, project: str) -> dict[str, Any]:
        model = self.models.get(project)
        if model is None:
            model = {"w": self._initial_weights(), "g2": {}}
            self.models[project] = model
        return model

    def _initial_weights(self) -> dict[str, float]:
        return {"size": self.prior, "": BIAS_PRIOR}

    @staticmethod
    def _score(w: dict[str, float], f: dict[str, float]) -> float:
        # the intercept is keyed "" so that it can never collide with a feature name
        s = w[""] + sum(w.get(k, 0.0) * v for k, v in f.items())
        return 1.0 / (1.0 + math.exp(-max(min(s, 30.0), -30.0)))

    def predict_one(self, x: dict[str, Any]) -> float:
        model = self.models.get(project_of(x))
        # an unseen project is scored by the priors without being stored:
        # predicting must not change the state (snapshots stay deterministic)
        w = model["w"] if model is not None else self._initial_weights()
        return self._score(w, change_features(x))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        model = self._model(project_of(x))
        f = change_features(x)
        g = self._score(model["w"], f) - float(y)
        w, g2 = model["w"], model["g2"]
        f[""] = 1.0
        for key, value in f.items():
            old = w.get(key, 0.0)
            anchor = self.prior if key == "size" else 0.0
            grad = g * value + self.l2 * (old - anchor)
            acc = g2.get(key, 0.0) + grad * grad
            g2[key] = acc
            if acc > 0.0:
                w[key] = old - self.lr * grad / math.sqrt(acc)
