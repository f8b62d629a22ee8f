"""Worker ``kill -9`` at seeded random points: mid-batch, mid-checkpoint, mid-rebalance.

A killed worker neither checkpoints, commits nor leaves its group: the next
owner of its partitions restores the last checkpoint and the broker
re-delivers everything after the last commit. The projections must skip what
they already applied and apply the rest exactly once.

``FAULT_SEED`` repeats a failing schedule; ``FAULT_KILLS``
(default 3) sets how many kills each test makes.
"""

from __future__ import annotations

import os
import random
import time

from ops.stack.processes import Spawned
from tests.reliability.harness import Lab, check, explain
from tests.reliability.private import Traffic, blocked_at, kill9

SEED = int(os.environ.get("FAULT_SEED", "1515"))
KILLS = int(os.environ.get("FAULT_KILLS", "3"))
STEPS = {"batch": "events", "checkpoint": "projection_checkpoints"}  # table that traps it


def _until_in_log(worker: Spawned, marker: bytes, after: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while marker not in worker.log.read_bytes()[after:]:
        assert time.monotonic() < deadline, f"{marker!r} not in {worker.log}"
        time.sleep(0.05)


def test_kill_9_mid_batch_and_mid_checkpoint_loses_nothing(lab: Lab) -> None:
    rng = random.Random(SEED)
    clients = [lab.client(f"agent-{i}") for i in range(6)]
    worker = lab.worker("w0")
    traffic = Traffic(clients, rate=400, limit=40_000, seed=SEED).start()
    # Every step at least once, then seeded choices; "any" is a plain random moment.
    steps = ["batch", "checkpoint", "any"][: max(KILLS, 1)]
    steps += [rng.choice(["batch", "checkpoint", "any"]) for _ in range(KILLS - len(steps))]
    rng.shuffle(steps)
    for n, step in enumerate(steps, 1):
        time.sleep(rng.uniform(0.5, 2.5))
        if step == "any":
            kill9(worker)
        else:
            with blocked_at(lab.addresses.database_url, STEPS[step]):
                kill9(worker)
        worker = lab.worker(f"w{n}")
    time.sleep(2)  # the last worker sees traffic too, undisturbed
    sent = traffic.stop()
    verdict = check(lab, sent, timeout=90)
    assert verdict.clean(), (steps, verdict, explain(lab, sent))


def test_kill_9_mid_rebalance_with_two_workers_loses_nothing(lab: Lab) -> None:
    rng = random.Random(SEED + 1)
    clients = [lab.client(f"agent-{i}") for i in range(6)]
    old = lab.worker("a0")
    traffic = Traffic(clients, rate=400, limit=40_000, seed=SEED).start()
    victims = []
    _until_in_log(old, b"assigned 40 partitions", 0)
    for n in range(1, KILLS + 1):
        mark = old.log.stat().st_size
        new = lab.worker(f"b{n}", ready=False)
        # The running worker hears of the newcomer at its next heartbeat and rejoins.
        _until_in_log(old, b"(Re-)joining group " + lab.prefix.encode() + b"-projections", mark)
        time.sleep(rng.uniform(0.0, 2.0))
        victim = rng.choice(["old", "new"])
        victims.append(victim)
        kill9(old if victim == "old" else new)
        survivor = new if victim == "old" else old
        # The survivor takes every partition once the victim's session times out.
        mark_s = 0 if survivor is new else mark
        _until_in_log(survivor, b"assigned 40 partitions", mark_s)
        old = survivor
    time.sleep(2)
    sent = traffic.stop()
    verdict = check(lab, sent, timeout=90)
    assert verdict.clean(), (victims, verdict, explain(lab, sent))
