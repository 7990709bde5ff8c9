"""The package layout: dependencies point one way (docs/README.md, "The package").

Every module under compose/ is read with `ast` (nothing is imported), and every import
statement in it is an edge, including imports inside functions and methods: a deferred import is
still a circle. Only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
Implicit imports of parent packages are not edges (importing compose.kernels.hmc runs
compose/__init__.py first, but that is Python's package machinery, not a dependency of hmc).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

PACKAGE = "compose"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
#: Modules allowed to import compose.experiments: the experiments themselves and the CLI on top.
ON_TOP = ("compose.experiments", "compose.cli", "compose.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Import statements anywhere in the tree, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module a `from X import ...` names (None if outside this package)."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = importer.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return base if base == PACKAGE or base.startswith(PACKAGE + ".") else None


def import_graph() -> Dict[str, Set[str]]:
    """{module: the compose modules it imports}, from the source of every module."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: Set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.add(alias.name)
                continue
            base = _resolve(name, is_package, node)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import sub` imports the submodule; `from mod import attr` the module.
                edges.add(submodule if submodule in modules else base)
        edges.discard(name)
        graph[name] = {e for e in edges if e in modules}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as a list of modules (first == last), or None."""
    state: Dict[str, int] = {}                    # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "compose.sampler" in graph and "compose.cli" in graph
    # a sanity check of the reader: the sampler imports the kernels, the CLI the experiments
    assert any(m.startswith("compose.kernels") for m in graph["compose.sampler"])
    assert any(m.startswith("compose.experiments") for m in graph["compose.cli"])


def test_no_import_cycle_among_compose_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_nothing_below_the_experiments_imports_them():
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not any(module == top or module.startswith(top + ".") for top in ON_TOP)
        for target in targets
        if target == "compose.experiments" or target.startswith("compose.experiments."))
    assert not offenders, "; ".join(offenders)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_find_cycle_finds_a_planted_cycle(graph, expected):
    assert find_cycle(graph) == expected


def test_a_deferred_import_inside_a_function_is_an_edge(tmp_path):
    source = "def f():\n    from .compiler import Target\n    return Target\n"
    nodes = list(_import_nodes(ast.parse(source)))
    assert len(nodes) == 1
    assert _resolve("compose.plan", False, nodes[0]) == "compose.compiler"
