"""The archive as a worker's projection (see :mod:`projections.archive`).

It persists in PostgreSQL, and the store is its own watermark: an event's key
``(occurred_at, event_id)`` is unique, so a redelivered event (same id, at
the same or another position) is skipped by ``ON CONFLICT DO NOTHING`` in the
same transaction that stores the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from projections.archive import ArchiveUnavailable, EventArchive
from projections.base import Sourced

log = logging.getLogger(__name__)


class ArchiveProjection:
    """Every event, exactly once, in the archive: :meth:`apply` returns only once stored.

    During a PostgreSQL outage :meth:`apply` stalls, retrying the same batch
    with exponential back-off, and catches up when the server answers again;
    the worker commits its offsets after :meth:`apply` returns, so nothing is
    lost and (thanks to the idempotent write) nothing is stored twice.

    Parameters
    ----------
    archive
        The archive to write to.
    sleep
        Called with the back-off delay between attempts (tests inject one).
    max_delay
        Longest back-off, seconds.
    """

    def __init__(self, archive: EventArchive, *, sleep: Callable[[float], None] = time.sleep,
                 max_delay: float = 5.0) -> None:
        self.archive = archive
        self._sleep = sleep
        self.max_delay = max_delay
        self.retries = 0

    def apply(self, batch: Sequence[Sourced]) -> int:
        """Store ``batch``; returns newly stored events (0 for a full redelivery)."""
        delay = 0.05
        while True:
            try:
                return self.archive.write(batch)
            except ArchiveUnavailable as exc:
                self.retries += 1
                log.warning("archive unavailable (%s); retrying in %.2fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.max_delay)

    def forget(self, subject_id: str) -> int:
        """The archive is the log itself, not state derived from it: returns 0.

        Its rows stay so that replay and audit keep working on erased data; the
        subject's personal fields become unreadable when their key is destroyed
        (crypto-shredding, privacy issue), in the hot table and the cold files alike.
        """
        return 0
