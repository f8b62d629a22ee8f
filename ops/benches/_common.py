"""What every benchmark shares: a stack it starts itself, and percentiles."""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas.addresses import Addresses
from schemas.settings import Settings

# Placeholder addresses for servers a benchmark does not use: configured, so not started.
_UNUSED = {"kafka": {"kafka_bootstrap": "unused:0"}, "redis": {"redis_url": "redis://unused:0/0"}}


@contextmanager
def running_stack(without: tuple[str, ...] = ()) -> Iterator[tuple[Settings, Addresses]]:
    """Servers from SELFLEARN_* variables, else a private embedded stack in a temp folder.

    ``without`` names servers the benchmark does not need (``"kafka"``, ``"redis"``);
    those are not started unless configured.
    """
    from ops.stack.lifecycle import down, up

    with tempfile.TemporaryDirectory(prefix="selflearn-bench-") as tmp:
        skip: dict[str, Any] = {k: v for name in without for k, v in _UNUSED[name].items()
                                if not Settings().configured(name)}
        settings = Settings(data_dir=Path(tmp), topic_prefix=f"bench-{uuid.uuid4().hex[:8]}",
                            **skip)
        try:
            yield settings, up(settings)
        finally:
            down(settings)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])
