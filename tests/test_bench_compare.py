"""``bench compare`` is registered, and a missing Quix Streams venv is not fatal.

Nothing here is timed: the bench itself is run by hand (README, Benchmarks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ops.benches.compare import VENV, _Clock, _quix_python

ROOT = Path(__file__).resolve().parents[1]


def test_cli_lists_the_compare_bench(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from ops.cli import main; main()", "bench", "list"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120, check=True)
    assert "compare" in done.stdout.split()


def test_no_quix_venv_gives_none_not_an_error(tmp_path: Path) -> None:
    # A file where the venv's folder would go: `python -m venv` fails at once,
    # as it would without PyPI; the bench then reports quix_available 0.
    blocked = tmp_path / "data"
    blocked.mkdir()
    (blocked / VENV).write_text("not a folder")
    assert _quix_python(blocked) is None


def test_reading_rates_leave_out_the_first_sample() -> None:
    clock = _Clock(100)
    assert not clock.saw(0)  # nothing yet: the clock has not started
    assert not clock.saw(40)  # first sample: starts the clock, not counted
    clock.start -= 1.0  # as if the remaining 60 took one second
    assert clock.saw(100)
    assert 50 < clock.per_s <= 60
