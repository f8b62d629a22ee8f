"""The list of erased data subjects in Redis, which every agent process follows.

``selflearn erase`` destroys a subject's keys and announces ``subject.erased``
on the control topic, which the workers consume. Agent processes (the SDK) do
not consume topics; they already poll Redis for their live policy. So the
subject id is also appended to the Redis list ``<prefix>:erased`` — by
``erase`` right after the keys are gone, and by each worker the first time it
handles the event (so an erasure announced by another tool reaches the agents
too) — and each agent process follows that list from a background thread
(:class:`agents.erasure.ErasureFollower`) and drops what it caches of the
subject. Subject ids are pseudonyms: the list holds no personal data.
"""

from __future__ import annotations

from typing import Any


def erased_key(prefix: str) -> str:
    """The Redis list of erased subject ids (in order of announcement, duplicates allowed)."""
    return f"{prefix}:erased"


def announce(r: Any, prefix: str, subject_id: str) -> None:
    """Append ``subject_id`` to the erased list (idempotent for readers: they de-duplicate)."""
    r.rpush(erased_key(prefix), subject_id)


class ErasedSubjects:
    """A reader's cursor over the erased list: :meth:`new` gives the ids added since last time.

    A new reader starts at the beginning: forgetting a subject this process never
    cached costs nothing, and a process that started before the erasure must not
    miss it. If the list is shorter than the cursor (Redis restarted empty), the
    reader starts again from the beginning.
    """

    def __init__(self, r: Any, prefix: str) -> None:
        self.r = r
        self.key = erased_key(prefix)
        self.seen = 0

    def new(self) -> list[str]:
        """Subject ids appended since the last call, each once (raises on a Redis error)."""
        n = int(self.r.llen(self.key))
        if n < self.seen:
            self.seen = 0
        if n == self.seen:
            return []
        raw = self.r.lrange(self.key, self.seen, n - 1)
        self.seen = n
        out: dict[str, None] = {}
        for item in raw:
            out[item.decode() if isinstance(item, bytes) else str(item)] = None
        return list(out)
