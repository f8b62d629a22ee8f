"""Task challenger: median story points of the most similar earlier issues."""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, ClassVar

import numpy as np

from projections.learners.base import (
    StateLearner,
    decayed_add,
    project_of,
    tokens,
    weighted_median,
)


class KnnMedian(StateLearner):
    """Similarity-weighted median of the ``k`` nearest earlier issues of the project.

    Similarity is an idf-weighted binary cosine over title/description tokens,
    found through an inverted index over the last ``window`` issues (bounded
    memory and time). The neighbours' points are pooled with the project's
    recency-weighted history (weight ``prior``) so that a task with no close
    neighbour falls back to the recent median.

    >>> m = KnnMedian(k=3, max_df=1.0)
    >>> for t, y in [("login page crash", 8.0), ("login page typo", 1.0),
    ...              ("crash on login", 8.0), ("docs typo", 1.0)] * 3:
    ...     m.learn_one({"project": "a", "title": t, "description": ""}, y)
    >>> m.predict_one({"project": "a", "title": "crash after login", "description": ""})
    8.0
    """

    name: ClassVar[str] = "knn_median"

    def __init__(
        self,
        k: int = 15,
        window: int = 1500,
        prior: float = 0.5,
        half_life: float = 40.0,
        max_df: float = 0.1,
        default: float = 4.0,
    ) -> None:
        self.k = int(k)
        self.window = int(window)
        self.prior = float(prior)
        self.half_life = float(half_life)
        self.max_df = float(max_df)
        self.default = float(default)
        # per project, a ring of the last `window` issues: their tokens, target and
        # 1/sqrt(#tokens); `first` is the id of the oldest, postings hold ids.
        self.toks: dict[str, list[list[str]]] = {}
        self.ys: dict[str, list[float]] = {}
        self.inv: dict[str, list[float]] = {}
        self.first: dict[str, int] = {}
        self.postings: dict[str, dict[str, list[int]]] = {}
        self.recent: dict[str, dict[str, float]] = {}
        self.scale: dict[str, float] = {}

    def _neighbours(self, project: str, toks: tuple[str, ...]) -> list[tuple[float, int]]:
        """Top-k (similarity, offset in the ring) of the indexed issues, best first.

        Scores are summed in numpy (``bincount`` adds each issue's idf weights
        in token order, as a Python loop would, so the sums are bit-identical
        and recorded decisions audit exactly); ties rank the newer issue first.
        """
        postings = self.postings[project]
        inv = self.inv[project]
        n = len(inv)
        limit = max(5.0, self.max_df * n)
        lists: list[list[int]] = []
        idfs: list[float] = []
        sizes: list[int] = []
        for tok in toks:
            ids = postings.get(tok)
            if not ids or len(ids) > limit:
                continue
            lists.append(ids)
            sizes.append(len(ids))
            idfs.append(math.log((n + 1.0) / len(ids)))
        if not lists:
            return []
        offsets = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=sum(sizes))
        offsets -= self.first[project]
        summed = np.bincount(offsets, weights=np.repeat(idfs, sizes), minlength=n)
        found = np.flatnonzero(summed)  # every idf is > 0: a found issue scores > 0
        scores = summed[found] * np.array(inv)[found]
        if len(found) > self.k:
            kth = scores[np.argpartition(scores, len(found) - self.k)[len(found) - self.k]]
            keep = np.flatnonzero(scores >= kth)  # all issues tied with the k-th
            scores, found = scores[keep], found[keep]
        best = np.lexsort((found, scores))[::-1][: self.k]
        nq = 1.0 / math.sqrt(max(len(toks), 1))
        return [(s * nq, off) for s, off in zip(scores[best].tolist(), found[best].tolist(),
                                                strict=True)]

    def predict_one(self, x: dict[str, Any]) -> float:
        project = project_of(x)
        if not self.ys.get(project):
            return self.default
        sims = self._neighbours(project, tokens(x))
        ys = self.ys[project]
        share = self.prior if sims else 1.0
        total = sum(s for s, _ in sims)
        weights: dict[str, float] = {}
        for s, off in sims:
            key = repr(ys[off])
            weights[key] = weights.get(key, 0.0) + (1.0 - share) * s / total
        recent = self.recent[project]
        mass = sum(recent.values())
        for key, w in recent.items():
            weights[key] = weights.get(key, 0.0) + share * w / mass
        return weighted_median(weights, self.default)

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        project = project_of(x)
        if project not in self.ys:
            for ring in (self.toks, self.ys, self.inv):
                ring[project] = []
            self.first[project] = 0
            self.postings[project] = {}
        toks, ys, inv = self.toks[project], self.ys[project], self.inv[project]
        postings = self.postings[project]
        # Whose text each ring entry came from, so forget() can drop it (privacy).
        owners = self.__dict__.setdefault("owners", {}).setdefault(project, [""] * len(ys))
        owners.append(str(x.get("subject_id") or ""))
        doc_id = self.first[project] + len(ys)
        new = list(tokens(x))
        toks.append(new)
        ys.append(float(y))
        inv.append(1.0 / math.sqrt(max(len(new), 1)))
        for tok in new:
            postings.setdefault(tok, []).append(doc_id)
        if len(ys) > self.window:
            for tok in toks.pop(0):
                ids = postings[tok]
                ids.pop(0)
                if not ids:
                    del postings[tok]
            ys.pop(0)
            inv.pop(0)
            owners.pop(0)
            self.first[project] += 1
        self.scale[project] = decayed_add(
            self.recent.setdefault(project, {}), self.scale.get(project, 1.0), y, self.half_life
        )

    def forget(self, subject_id: str) -> int:
        """Drop the tokens of every stored issue of ``subject_id``; returns how many.

        The issue's points stay (a number, not the subject's text); it can no
        longer be found as a neighbour.

        >>> m = KnnMedian(max_df=1.0)
        >>> m.learn_one({"project": "a", "title": "crash", "subject_id": "s1"}, 8.0)
        >>> m.forget("s1"), m.toks["a"], m.postings["a"]
        (1, [[]], {})
        """
        dropped = 0
        for project, owners in self.__dict__.get("owners", {}).items():
            first, postings = self.first[project], self.postings[project]
            for off, owner in enumerate(owners):
                toks = self.toks[project][off]
                if owner != subject_id or not toks:
                    continue
                for tok in toks:
                    ids = postings[tok]
                    ids.remove(first + off)
                    if not ids:
                        del postings[tok]
                self.toks[project][off] = []
                dropped += 1
        return dropped
