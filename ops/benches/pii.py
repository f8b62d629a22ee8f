"""``selflearn bench pii``: cost of one ``analyze()`` per PII detector mode.

Texts: real story-point issues of 250–350 characters (title and description),
the size the brief's 300-character figure refers to. Each mode analyses the
same texts after one warm-up pass; the per-call times of each run give a
median and a p99, and the reported figure is the median over ``RUNS`` runs.
Modes: ``scanner`` (the SDK's scrubber today), ``pattern``, ``presidio``
(Presidio, no NLP model), ``ner`` (Presidio + spaCy). ``*_load_s`` is the
time to build the detector (spaCy model load for ``ner``).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from ops.benches._common import percentile
from ops.data import data_path
from ops.usecases.privacy import MODES, detector
from projections.datasets import iter_storypoints

N_TEXTS = 200
RUNS = 3


def texts(n: int = N_TEXTS) -> list[str]:
    """``n`` issue texts of 250–350 characters, in file order."""
    out = []
    for row in iter_storypoints(data_path("storypoints")):
        text = f"{row.title}\n{row.description}"
        if 250 <= len(text) <= 350:
            out.append(text)
            if len(out) == n:
                break
    return out


def run(runs: int = RUNS) -> dict[str, Any]:
    """Median and p99 microseconds of one analyze() call per mode."""
    sample = texts()
    result: dict[str, Any] = {"texts": len(sample),
                              "chars_median": statistics.median(len(t) for t in sample),
                              "runs": runs}
    for mode in MODES:
        began = time.perf_counter()
        found = detector(mode)
        result[f"{mode}_load_s"] = round(time.perf_counter() - began, 3)
        for text in sample:
            found.analyze(text)
        medians, p99s = [], []
        for _ in range(runs):
            times = []
            for text in sample:
                t0 = time.perf_counter()
                found.analyze(text)
                times.append((time.perf_counter() - t0) * 1e6)
            medians.append(statistics.median(times))
            p99s.append(percentile(times, 99))
        result[f"{mode}_median_us"] = round(statistics.median(medians), 1)
        result[f"{mode}_p99_us"] = round(statistics.median(p99s), 1)
    return result


if __name__ == "__main__":
    print(json.dumps(run()))
