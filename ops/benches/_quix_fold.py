"""Quix Streams folding per-agent counters: the script ``bench compare`` runs in its own venv.

Quix Streams 3.28 needs ``confluent-kafka<2.13`` and the project's venv has
2.16, so this file imports nothing from the project and runs under the
venv ``bench compare`` makes for it::

    <venv>/bin/python _quix_fold.py BOOTSTRAP TOPIC N STATE_DIR

It folds the counters of the agent feature view (``projections/features.py``:
completed tasks, summed duration, outcomes, successes, complexity) per
message key (the agent) in Quix's RocksDB state, stops after ``N`` messages
and prints one JSON object: ``events_per_s`` from the first message folded to
the ``N``-th (start-up, group join and the final state commit are not
timed), and ``events``, how many messages were folded after the clock started.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any


def main(bootstrap: str, topic: str, n: int, state_dir: str) -> dict[str, float]:
    from quixstreams import Application, State  # only in the bench's own venv

    app = Application(broker_address=bootstrap, consumer_group=f"bench-quix-{uuid.uuid4().hex}",
                      auto_offset_reset="earliest", processing_guarantee="at-least-once",
                      use_changelog_topics=False, state_dir=state_dir, loglevel="WARNING")
    seen = {"n": 0, "start_n": 0}
    clock = {"start": 0.0, "end": 0.0}

    def fold(value: dict[str, Any], state: State) -> dict[str, float]:
        p = value["payload"]
        c: dict[str, float] = state.get("counters", None) or {}
        for name, inc in (("n_completed", 1.0), ("sum_duration", float(p["duration_s"])),
                          ("n_outcomes", 1.0), ("n_success", 1.0 if p["success"] else 0.0),
                          ("n_complexity", 1.0), ("sum_complexity", float(p["actual_points"]))):
            c[name] = c.get(name, 0.0) + inc
        state.set("counters", c)
        seen["n"] += 1
        now = time.perf_counter()
        if not clock["start"]:
            clock["start"] = now
            seen["start_n"] = seen["n"]
        if seen["n"] >= n:
            clock["end"] = now
            app.stop()
        return c

    sdf = app.dataframe(app.topic(topic, value_deserializer="json", key_deserializer="str"))
    sdf.apply(fold, stateful=True)  # registered in place (Quix 3.x)
    app.run()
    timed = seen["n"] - seen["start_n"]
    return {"events_per_s": timed / (clock["end"] - clock["start"]), "events": float(timed)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))
