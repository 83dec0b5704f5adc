"""The layout a maintainer relies on: small modules, no import cycles, every module mapped.

A newcomer finds a concern through ``docs/ARCHITECTURE.md``'s table (concern → module → thread),
so a module missing from it is a module nobody can find. A long module or an import cycle is how
a layer boundary erodes without anyone deciding it: these checks make that a decision.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("perso_sync", "mock_server")
MAX_LINES = 800
# The command line is one cohesive concern (argument parsing, one function per subcommand, the
# rich rendering they share); splitting it would scatter each subcommand over several files.
LONG_ALLOWED = {"perso_sync/cli.py"}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(id(inner) for inner in ast.walk(child))
    return hidden


def _imported(module: str, path: Path, tree: ast.AST) -> Iterator[str]:
    """Every module ``module`` imports when it runs, function-level imports included.

    ``from pkg import name`` imports ``pkg`` (its ``__init__`` runs) and, when ``name`` is a
    submodule, that submodule too; imports under ``if TYPE_CHECKING:`` never run.
    """
    hidden = _type_checking_nodes(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {
            target for target in _imported(name, path, tree) if target in modules and target != name
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle_and_its_members() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count_and_type_checking_ones_do_not() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import hidden\n"
        "def f():\n    from pkg.deferred import thing\n"
        "from . import sibling\n"
    )
    path = Path("pkg/mod.py")
    imported = set(_imported("pkg.mod", path, ast.parse(source)))
    assert {"pkg.deferred", "pkg.sibling", "pkg"} <= imported
    assert "pkg.hidden" not in imported


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    graph = {
        name: {target for target in targets if target.split(".")[0] == package}
        for name, targets in _import_graph().items()
        if name.split(".")[0] == package
    }
    cycles = _cycles(graph)
    details = [
        " / ".join(f"{m} -> {sorted(graph[m] & set(cycle))}" for m in cycle) for cycle in cycles
    ]
    assert not cycles, "import cycles: " + "; ".join(details)


def test_no_module_is_longer_than_the_limit() -> None:
    too_long = {
        str(path.relative_to(REPO)): lines
        for path in _modules().values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(REPO)) not in LONG_ALLOWED
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concern): {too_long}"


def test_every_module_is_on_the_architecture_map() -> None:
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [
        str(path.relative_to(REPO))
        for path in _modules().values()
        if path.name not in architecture and str(path.relative_to(REPO)) not in architecture
    ]
    assert not missing, f"docs/ARCHITECTURE.md does not say where these live: {missing}"
