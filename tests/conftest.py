"""Shared fixtures: one real stack (broker, PostgreSQL, Redis) per test session.

Servers configured by ``SELFLEARN_KAFKA_BOOTSTRAP`` / ``SELFLEARN_DATABASE_URL``
/ ``SELFLEARN_REDIS_URL`` are used as they are; the others are started from
the pip-installed binaries in a temporary data folder and stopped at the end.
Each session gets its own ``topic_prefix``, so two runs can share a broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.addresses import Addresses
from schemas.settings import Settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of this test session: a temporary data folder and a unique topic prefix.

    Server addresses still come from ``SELFLEARN_*`` variables when they are set.
    """
    from projections.sealing import use_settings

    data_dir: Path = tmp_path_factory.mktemp("selflearn-stack")
    settings = Settings(data_dir=data_dir, topic_prefix=f"test-{uuid.uuid4().hex[:10]}")
    use_settings(settings)  # seal with the key of this data folder, as its workers do
    return settings


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Addresses]:
    """Addresses of the running stack; started once per session, stopped afterwards."""
    from ops.stack.lifecycle import StackError, down, up

    try:
        addresses = up(settings)
    except (StackError, OSError, RuntimeError) as exc:
        down(settings)
        raise RuntimeError(
            f"could not start the test stack in {settings.data_dir}:\n{exc}\n"
            "Point SELFLEARN_KAFKA_BOOTSTRAP / SELFLEARN_DATABASE_URL / SELFLEARN_REDIS_URL "
            "at running servers to skip starting them."
        ) from exc
    try:
        yield addresses
    finally:
        down(settings)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only when asked: ``-m slow`` or ``FAULT_SLOW=1``."""
    if os.environ.get("FAULT_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or FAULT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
