"""A separate agent process for the reliability tests: emits N events as one agent id.

    python -m tests.reliability.emitter AGENT N BOOTSTRAP PREFIX OUTBOX SENT [CLOCK_OFFSET_S]

``BOOTSTRAP`` ``-`` means no broker (events wait in the outbox). Every event
``emit`` accepted is appended to ``SENT`` (one wire record per line) after it
returns. ``CLOCK_OFFSET_S`` shifts this process's clock (e.g. -60: an NTP step
back, or a host whose clock is behind) for the SDK's event ids.
"""

from __future__ import annotations

import sys
import time

import schemas.ids
from agents.client import AgentClient
from schemas import Envelope, encode


class _SteppedClock:
    def __init__(self, offset_s: float) -> None:
        self.offset_ns = int(offset_s * 1e9)

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns


def main(argv: list[str]) -> None:
    agent, n, bootstrap, prefix, outbox, sent_path = argv[:6]
    if len(argv) > 6:
        schemas.ids.time = _SteppedClock(float(argv[6]))  # type: ignore[assignment]
    client = AgentClient(agent, bootstrap=None if bootstrap == "-" else bootstrap,
                         topic_prefix=prefix, outbox_path=outbox)
    with open(sent_path, "ab", buffering=0) as sent:
        for i in range(int(n)):
            ev = client.emit("task.completed", {
                "task_id": f"{agent}-{client.producer_id[:6]}-{i}", "project": "mule",
                "actual_points": float(i % 8 + 1), "duration_s": 60.0 + i % 7,
                "success": i % 3 != 0})
            assert isinstance(ev, Envelope)
            sent.write(encode(ev) + b"\n")
    if bootstrap != "-":
        assert client.flush(120), "events not delivered"
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
