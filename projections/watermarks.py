"""Exactly-once bookkeeping shared by the stateful projections.

The broker gives at-least-once delivery; a projection that records, in its
own state, the last applied offset per ``topic:partition`` and the highest
event id per ``producer|stream`` (UUIDv7 ids of one producer increase within
one stream) turns it into exactly-once effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import CATALOG, Envelope


class Watermarks:
    """Applied offsets per ``topic:partition`` and highest event id per ``producer|stream``."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.ids: dict[str, str] = {}

    def fresh(self, event: Envelope, topic: str, partition: int, offset: int) -> bool:
        """True (and recorded) if the event was not applied yet."""
        spec = CATALOG.get(event.type)
        id_key = f"{event.producer}|{spec.stream if spec else event.type}"
        eid = event.event_id.hex  # fixed width: string order is numeric order
        last = self.ids.get(id_key)
        if last is not None and eid <= last:
            return False
        pos = f"{topic}:{partition}"
        if offset >= 0 and offset <= self.offsets.get(pos, -1):
            return False
        self.ids[id_key] = eid
        if offset >= 0:
            self.offsets[pos] = offset
        return True

    def state(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "ids": self.ids}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> Watermarks:
        w = cls()
        w.offsets, w.ids = dict(raw["offsets"]), dict(raw["ids"])
        return w
