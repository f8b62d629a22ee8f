"""Hooks the worker calls as it processes, so metrics stay out of the lower layers.

Faust's ``Sensor`` pattern: the pipeline calls a sensor at each step, and the
base class records nothing. ``ops.metrics.PrometheusSensor`` exports the same
calls to Prometheus; a test can count them.

>>> class Counting(Sensor):
...     def __init__(self) -> None:
...         self.dead = 0
...     def on_dead_letter(self, reason: str, n: int = 1) -> None:
...         self.dead += n
>>> s = Counting()
>>> s.on_dead_letter("invalid_json"); s.on_batch("selflearn.agent", 3); s.dead
1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Sensor:
    """Observer of the worker; every hook is cheap and must never raise."""

    def on_batch(self, topic: str, n: int) -> None:
        """``n`` records of ``topic`` were taken for processing."""

    def on_dead_letter(self, reason: str, n: int = 1) -> None:
        """``n`` records were rejected to the dead-letter topic for ``reason``."""

    def on_learner(self, agent: str, model: str, metrics: Mapping[str, Any]) -> None:
        """A learner's running metrics after a checkpoint."""

    def on_transition(self, agent: str, event_type: str, canary_percent: float | None) -> None:
        """A new live policy was published."""

    def on_gaps(self, gaps: Mapping[int, int]) -> None:
        """Sequence numbers still missing per partition (lost events), after a checkpoint."""

    def on_lag(self, topic: str, partition: int, lag: float) -> None:
        """Consumer lag of a partition this worker owns."""
