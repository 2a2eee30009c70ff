"""The import direction ARCHITECTURE.md promises, checked from the source with `ast`.

Module-level imports only: an import under `if TYPE_CHECKING:` never runs, and an
import inside a function is a deliberate late binding (see ARCHITECTURE.md).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "build", "dist", "node_modules", "__pycache__"}

# Import cycles among router modules (module level) that exist today. This list may only
# shrink: a new cycle fails the test, and so does a listed one that is gone.
ALLOWED_ROUTER_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_imports(path: Path) -> set[str]:
    """Absolute names a module imports when it is loaded (`from a import b` gives a and a.b)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                found.add(origin)
                found.update(f"{origin}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)
    return found


def python_files(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py")
                  if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts))


def _top(name: str) -> str:
    return name.partition(".")[0]


def test_policies_import_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = {(str(p.relative_to(ROOT)), name) for p in python_files(ROOT / "policies")
           for name in module_imports(p) if _top(name) not in stdlib | {"policies"}}
    assert not bad, f"policies/ must stay pure (standard library only): {sorted(bad)}"


def test_geodata_never_imports_router():
    bad = {(str(p.relative_to(ROOT)), name) for p in python_files(ROOT / "geodata")
           for name in module_imports(p) if _top(name) == "router"}
    assert not bad, f"geodata/ sits below router/: {sorted(bad)}"


def test_only_router_tests_and_bench_import_router():
    allowed = {"router", "tests", "bench"}
    bad = {(str(p.relative_to(ROOT)), name) for p in python_files(ROOT)
           if p.relative_to(ROOT).parts[0] not in allowed
           for name in module_imports(p) if _top(name) == "router"}
    assert not bad, f"nothing outside router/, tests/ and bench/ imports router: {sorted(bad)}"


def test_the_product_never_imports_bench_or_tests():
    bad = {(str(p.relative_to(ROOT)), name) for top in ("router", "policies", "geodata")
           for p in python_files(ROOT / top)
           for name in module_imports(p) if _top(name) in ("bench", "tests")}
    assert not bad, f"bench/ and tests/ sit above the product: {sorted(bad)}"


def router_graph() -> dict[str, set[str]]:
    """router module -> the router modules it imports at module level."""
    modules = {_module_name(p): p for p in python_files(ROOT / "router")}
    return {name: {i for i in module_imports(path) if i in modules and i != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_router_has_no_new_import_cycles():
    found = cycles(router_graph())
    new = found - ALLOWED_ROUTER_CYCLES
    assert not new, f"new import cycle(s) in router/: {[sorted(c) for c in new]}"
    gone = ALLOWED_ROUTER_CYCLES - found
    assert not gone, f"cycle(s) fixed; remove them from ALLOWED_ROUTER_CYCLES: {[sorted(c) for c in gone]}"


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": set()}, set()),
    ({"a": {"b"}, "b": {"a"}}, {frozenset({"a", "b"})}),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, {frozenset({"a", "b", "c"})}),
])
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected


def test_type_checking_and_function_imports_are_not_load_time(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    mod = pkg / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nfrom . import a\n"
                   "if TYPE_CHECKING:\n    from .b import B\n"
                   "def f():\n    from .c import C\n"
                   "try:\n    import d\nexcept ImportError:\n    d = None\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert module_imports(mod) == {"typing", "typing.TYPE_CHECKING", "pkg", "pkg.a", "d"}
