"""Learning at full speed, forever: ``python -m ops.benches.learn_load``.

Replays the shipped story-point data through the default task challengers
(predict, then learn) in an endless loop until the process is killed; used by
a benchmark as "a learner busy in another process". Prints events/s per pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ops.data import data_path
from projections.datasets import StoryRow, iter_storypoints
from projections.learners import DEFAULT_TASK_CHALLENGERS, TASK_LEARNERS


def one_pass(rows: list[StoryRow], names: tuple[str, ...] = DEFAULT_TASK_CHALLENGERS) -> float:
    """Replay ``rows`` once through fresh learners; return events per second."""
    models = [TASK_LEARNERS[n]() for n in names]
    start = time.perf_counter()
    for row in rows:
        x = row.x
        for model in models:
            model.predict_one(x)
            model.learn_one(x, row.storypoint)
    return len(rows) / max(time.perf_counter() - start, 1e-9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="story-point directory")
    parser.add_argument("--passes", type=int, default=0, help="stop after N passes (0: never)")
    args = parser.parse_args(argv)
    rows = list(iter_storypoints(args.data or data_path("storypoints")))
    done = 0
    while args.passes == 0 or done < args.passes:
        rate = one_pass(rows)
        done += 1
        print(f"pass {done}: {rate:.0f} events/s", flush=True)


if __name__ == "__main__":
    main()
