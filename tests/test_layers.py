"""Folders depend one way: schemas → projections → streams → agents → ops.

A module may import its own layer and the layers below it, never above: the
SDK (agents) must not pull in the CLI, the worker (streams) must not pull in
the SDK's internals' users, and the pure projections never see Faust wiring.
Imports inside functions count too. Docstring examples do not (they run as
tests, like this folder).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "projections", "streams", "agents", "ops")


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Top-level project packages imported by ``path``, with the line of each import."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in LAYERS:
                found.add((top, node.lineno))
    return found


def violations(layer: str) -> list[str]:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    out = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for top, line in sorted(imported_packages(path)):
            if top not in allowed:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_itself_and_below(layer: str) -> None:
    assert violations(layer) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from ops.metrics import observe_batch\n")
    assert imported_packages(module) == {("ops", 2)}
