"""What a worker does with one batch: decode, dead-letter the bad, project the good.

Kept free of Faust so it can be tested without a worker and reused by replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from projections.base import Sourced
from schemas import EventValidationError, decode
from schemas.deadletter import dead_letter
from streams.sensor import Sensor

Raw = tuple[str, int, int, bytes | None]  # (topic, partition, offset, value)


@dataclass
class BatchResult:
    """Valid events (with their source position) and dead-letter records to publish."""

    events: list[Sourced] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)


def split(batch: Sequence[Raw], sensor: Sensor | None = None) -> BatchResult:
    """Decode a batch; anything that fails validation becomes a dead-letter record."""
    out = BatchResult()
    for topic, partition, offset, value in batch:
        try:
            out.events.append((topic, partition, offset, decode(value)))
        except EventValidationError as exc:
            if sensor is not None:
                sensor.on_dead_letter(exc.reason.value)
            out.dead.append(dead_letter(
                value, reason=exc.reason.value, error=exc.message, source="worker",
                topic=topic, partition=partition, offset=offset,
            ))
    return out
