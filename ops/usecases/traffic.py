"""Steady, bounded traffic of agents, and every envelope it sent (for the checker).

Shared by the reliability suite and ``selflearn bench soak``: a mix of
outcomes (features), requests and estimates (short-term memory), and
decisions (learning), from any number of SDK clients on one thread.
"""

from __future__ import annotations

import random
import threading
import time

from agents.client import AgentClient
from schemas import Envelope


def event_for(i: int, agent: str) -> tuple[str, dict[str, object]]:
    """The ``i``-th event of a steady mix: outcomes (features), requests, estimates (memory)."""
    k = i % 4
    if k == 0:
        return "task.completed", {"task_id": f"{agent}-t{i}", "project": "mule",
                                  "actual_points": float(i % 8 + 1),
                                  "duration_s": 30.0 + i % 50, "success": i % 3 != 0}
    if k == 1:
        return "review.completed", {"change_id": f"{agent}-c{i}", "project": "Ant",
                                    "passed_first_try": i % 2 == 0}
    if k == 2:
        return "review.requested", {"change_id": f"{agent}-c{i}", "project": "Ant",
                                    "metrics": {"la": 0.1 * (i % 7), "lt": 10.0 + i % 90,
                                                "nf": 1 + i % 5}}
    return "task.estimated", {"task_id": f"{agent}-t{i}", "project": "mule",
                              "title": f"task number {i}", "description": "",
                              "estimate": float(i % 13)}


REVIEW_CONTEXT = {"change_id": "c", "project": "Ant", "la": 0.4, "lt": 120.0, "nf": 3}


def recorded(client: AgentClient, into: list[Envelope]) -> AgentClient:
    """Make ``client`` append every envelope it emits (``decide`` emits two) to ``into``."""
    emit = client.emit

    def recording(*args: object, **kw: object) -> object:
        ev = emit(*args, **kw)  # type: ignore[arg-type]
        assert isinstance(ev, Envelope), ev
        into.append(ev)
        return ev

    client.emit = recording  # type: ignore[method-assign,assignment]
    return client


class Traffic:
    """Emits a steady, bounded mix of events from ``clients`` on a thread; keeps what was sent.

    ``rate`` is events per second over all clients, ``limit`` the most it sends;
    a client made with a ``decision_kind`` (``review_risk``) decides instead of
    emitting, which also makes the worker publish shadow predictions and
    policies. :meth:`stop` returns every envelope the clients emitted.
    """

    def __init__(self, clients: list[AgentClient], *, rate: float, limit: int,
                 seed: int = 0) -> None:
        self.clients = clients
        self.rate = rate
        self.limit = limit
        self.sent: list[Envelope] = []
        for c in clients:
            recorded(c, self.sent)
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.limit):
            if self._halt.is_set():
                return
            client = self.clients[self._rng.randrange(len(self.clients))]
            if client.engine is not None:
                client.decide({**REVIEW_CONTEXT, "change_id": f"c{i}", "nf": i % 9})
            else:
                client.emit(*event_for(i, client.agent_id))
            ahead = started + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def stop(self, flush_s: float = 120.0) -> list[Envelope]:
        """Stop emitting, wait until every client delivered; returns what was sent."""
        self._halt.set()
        self._thread.join(30)
        for c in self.clients:
            assert c.flush(flush_s), f"{c.agent_id}: events not delivered"
        return list(self.sent)

    def wait(self, n: int, timeout: float = 60.0) -> None:
        """Until at least ``n`` events were emitted."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < n:
            assert time.monotonic() < deadline and self._thread.is_alive(), "traffic stalled"
            time.sleep(0.05)
