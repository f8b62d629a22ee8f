"""``ops`` is split by role, and the CLI registers its commands explicitly.

* Every module under ``ops/`` imports alone in a fresh interpreter (nothing
  relies on another module having been imported first).
* A command module imported alone does not load the root app: commands are
  registered by :mod:`ops.cli.root`, never by import side effect.
* The import graph of ``ops`` (imports inside functions count) has no cycle,
  and only the CLI imports the CLI.
* ``selflearn --help`` stays fast: the root app loads no heavy library.

Each check runs on a deliberately broken package too, so it is known to fail
when someone re-introduces a module that imports the root app back.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOT_APP = "ops.cli.root"
EXPECTED_COMMANDS = ["up", "down", "status", "worker", "bench", "evaluate", "vision", "demo",
                     "fleet", "replay", "audit", "promote", "rollback", "report", "export",
                     "lineage", "erase", "rotate-keys", "role", "audit-log"]
# What `selflearn --help` must not pay for (each takes from 0.1 s to seconds to import).
HEAVY = ("faust", "mlflow", "cv2", "matplotlib", "psycopg", "aiokafka", "redis", "river",
         "numpy", "presidio_analyzer")


def module_names(root: Path, package: str) -> list[str]:
    """Every module of ``package`` (a folder under ``root``), found on disk, sorted."""
    names = []
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def import_alone(module: str, root: Path = ROOT, absent: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh interpreter; with ``absent``, fail if that got loaded."""
    code = f"import sys\nimport {module}\n"
    if absent is not None:
        code += f"assert {absent!r} not in sys.modules, '{module} loads {absent}'\n"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` (file ``path``) imports, anywhere in it.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != module)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports."""
    names = module_names(root, package)
    known = set(names)
    graph = {}
    for name in names:
        path = root / name.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        graph[name] = imports_of(path, name, known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


OPS_MODULES = module_names(ROOT, "ops")
CLI_MODULES = module_names(ROOT, "ops.cli")


@pytest.mark.parametrize("module", OPS_MODULES)
def test_each_ops_module_imports_alone(module: str) -> None:
    done = import_alone(module)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("module", [m for m in CLI_MODULES if m != ROOT_APP])
def test_each_cli_module_imports_without_the_root_app(module: str) -> None:
    done = import_alone(module, absent=ROOT_APP)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ops_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, "ops")
    assert ROOT_APP in graph and graph[ROOT_APP] >= {"ops.cli.stack", "ops.cli.run"}
    assert cycles(graph) == []


def test_only_the_entry_point_imports_the_root_app_and_only_the_cli_imports_the_cli() -> None:
    graph = import_graph(ROOT, "ops")
    assert {m for m, deps in graph.items() if ROOT_APP in deps} == {"ops.cli"}
    outside = {m: sorted(d for d in deps if d == "ops.cli" or d.startswith("ops.cli."))
               for m, deps in graph.items() if not m.startswith("ops.cli")}
    assert {m: d for m, d in outside.items() if d} == {}


def test_the_commands_are_registered_explicitly_in_help_order() -> None:
    import typer.main

    from ops.cli.root import build_app

    command = typer.main.get_command(build_app())
    assert list(command.commands) == EXPECTED_COMMANDS  # type: ignore[attr-defined]


def test_help_runs_and_loads_no_heavy_library() -> None:
    code = ("import sys\nfrom ops.cli.root import app\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "ops.cli", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert helped.returncode == 0, helped.stderr
    listed = [line.split()[1] for line in helped.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2]
    assert [c for c in listed if c in EXPECTED_COMMANDS] == EXPECTED_COMMANDS


def test_the_console_script_target_exists() -> None:
    from ops.cli import main

    assert callable(main)


# --- the checks catch what they are for ------------------------------------------------------

def _broken_cli(tmp: Path) -> None:
    """A CLI whose command module imports the root app back (the old registration style)."""
    cli = tmp / "pkg" / "cli"
    cli.mkdir(parents=True)
    (tmp / "pkg" / "__init__.py").write_text("")
    (cli / "__init__.py").write_text("")
    (cli / "root.py").write_text("APP = []\nfrom pkg.cli import cmd  # noqa: E402\n")
    (cli / "cmd.py").write_text("from pkg.cli.root import APP\nAPP.append('cmd')\n")


def test_the_cycle_check_catches_a_command_module_that_imports_the_root(tmp_path: Path) -> None:
    _broken_cli(tmp_path)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.cli.cmd"] == {"pkg.cli.root"}
    assert cycles(graph) == [["pkg.cli.cmd", "pkg.cli.root"]]


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n")
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]


def test_the_import_alone_check_catches_a_command_module_that_loads_the_root(
        tmp_path: Path) -> None:
    _broken_cli(tmp_path)
    done = import_alone("pkg.cli.cmd", root=tmp_path, absent="pkg.cli.root")
    assert done.returncode != 0 and "loads pkg.cli.root" in done.stderr
