"""Fixtures of the reliability suite: a Lab per test on the session's servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.addresses import Addresses
from schemas.settings import Settings
from tests.reliability.harness import Lab


@pytest.fixture
def lab(settings: Settings, stack: Addresses, tmp_path: Path) -> Iterator[Lab]:
    """A fresh topic prefix and data folder; workers and clients stopped afterwards."""
    world = Lab.create(settings, stack, tmp_path)
    yield world
    world.close()
