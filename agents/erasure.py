"""An agent process reacts to erasures: its cached keys and text of the subject go.

What an agent process may hold of a data subject, and what happens to it when
the subject is erased (``selflearn erase``; docs/privacy.md, "Agents"):

* the subject's **unwrapped data keys**, cached by the key store of the SDK's
  protector — dropped (:meth:`schemas.keys.KeyStore.forget`), so the next event
  of the subject that the producer thread seals finds only the tombstone and
  is written ``[erased]`` instead of being sealed under the destroyed key;
* **plaintext text in the tokenisation caches** the decision engine's learners
  fill on every ``decide`` (keyed by title/description) — emptied whole
  (:func:`projections.learners.base.clear_text_caches`).

The served models are left as their registered version (see docs/privacy.md:
a model version is immutable so that audit recomputes it bit for bit; the
workers' learners forget at once, so the next version holds nothing of the
subject).

:class:`ErasureFollower` polls the Redis list of erased subjects
(:mod:`projections.erasures`) from its own daemon thread: ``emit`` and
``decide`` never wait for it, and a Redis outage only delays the forgetting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from projections.erasures import ErasedSubjects
from projections.learners.base import clear_text_caches

log = logging.getLogger(__name__)


class ErasureFollower:
    """Calls every ``forgetter`` for each newly erased subject, from a background thread.

    Parameters
    ----------
    r
        A redis-py client (the agent's Redis, TLS options in its URL).
    prefix
        Topic and key namespace.
    forgetters
        Called with the subject id, in this thread (e.g. a key store's ``forget``).
    every_s
        Seconds between two polls (one ``LLEN`` each).
    """

    def __init__(self, r: Any, prefix: str, forgetters: Sequence[Callable[[str], object]],
                 *, every_s: float = 1.0, name: str = "erasures") -> None:
        self._subjects = ErasedSubjects(r, prefix)
        self._forgetters = list(forgetters)
        self.forgotten = 0  # subjects handled (every erasure ever announced, once each)
        self.failures = 0  # polls that failed (Redis unreachable)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every_s,),
                                        name=f"erasures-{name}", daemon=True)
        self._thread.start()

    def poll(self) -> list[str]:
        """Handle the subjects erased since the last poll; returns them."""
        subjects = self._subjects.new()
        if subjects:
            clear_text_caches()
        for subject in subjects:
            for forget in self._forgetters:
                forget(subject)
            self.forgotten += 1
        if subjects:
            log.info("%d erased subject(s): cached keys and text dropped", len(subjects))
        return subjects

    def _loop(self, every_s: float) -> None:
        delay = every_s
        while not self._stop.wait(delay):
            try:
                self.poll()
                delay = every_s
            except Exception as exc:  # Redis down: try again later, nothing waits on this
                self.failures += 1
                log.debug("erasure poll failed: %s", type(exc).__name__)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._stop.set()
