"""Benchmarks: each public module here exposes ``run() -> dict`` (one flat JSON object).

``selflearn bench NAME`` finds them by listing this package, so a new
benchmark is a new module; names starting with ``_`` are helpers.

>>> "decide" in names() and "_common" not in names()
True
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def names() -> list[str]:
    """The benchmark modules of this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def run(name: str, **options: Any) -> dict[str, Any]:
    """Run benchmark ``name`` (one of :func:`names`) and return its result.

    ``options`` go to its ``run`` (``duration_s`` and ``rate`` for ``soak``).
    """
    result: dict[str, Any] = importlib.import_module(f"{__name__}.{name}").run(**options)
    return result
