"""The layering of the packages (docs/architecture.md), checked on the source itself.

- `training` never imports `explorer`; inside each package the import graph has no cycle (imports inside
  functions count too: deferring an import hides a cycle, it does not remove it);
- an import inside a function is kept for an optional or heavy dependency and says why in a comment;
- no module of `explorer/` is over 400 lines.
"""
from __future__ import annotations

import ast
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("training", "explorer")
MAX_EXPLORER_LINES = 400


def modules_of(package: str) -> dict:
    """Dotted module name -> file path for every .py file of the package."""
    found = {}
    for folder, _, files in os.walk(os.path.join(REPO_ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imported_names(module: str, path: str, node: ast.AST) -> list:
    """The absolute module names an import statement refers to (`from . import x` yields pkg.x too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    is_package = path.endswith("__init__.py")
    if node.level:
        parts = module.split(".")
        base = parts[:len(parts) - node.level + (1 if is_package else 0)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph() -> tuple[dict, list]:
    """(module -> set of project modules it imports, [(module, line, statement) of imports in functions])."""
    modules = {}
    for package in PACKAGES:
        modules.update(modules_of(package))
    graph, nested = {}, []
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
        lines = source.splitlines()
        edges = set()
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    nested.append((module, node.lineno, lines[node.lineno - 1], lines[node.lineno - 2]))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(name for name in imported_names(module, path, node) if name in modules)
        edges.discard(module)
        graph[module] = edges
    return graph, nested


def find_cycle(graph: dict):
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_training_never_imports_explorer():
    graph, _ = import_graph()
    wrong = sorted((m, t) for m, targets in graph.items() if m.startswith("training")
                   for t in targets if t.startswith("explorer"))
    assert not wrong, wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    graph, _ = import_graph()
    # Importing a submodule runs its package's __init__ first, which is not a cycle of the code's own making.
    inside = {m: {t for t in targets if t.startswith(package) and not m.startswith(t + ".")}
              for m, targets in graph.items() if m.startswith(package)}
    assert find_cycle(inside) is None, " -> ".join(find_cycle(inside))


def test_imports_inside_functions_say_why():
    _, nested = import_graph()
    silent = [f"{module}:{line} {text.strip()}" for module, line, text, before in nested
              if "#" not in text and not before.strip().startswith("#")]
    assert not silent, "\n".join(silent)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_explorer_modules_stay_small():
    long = {}
    for module, path in modules_of("explorer").items():
        with open(path, encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_EXPLORER_LINES:
            long[module] = count
    assert not long, long


def test_every_file_of_the_checkout_stays_under_10_mb():
    # Hugging Face Spaces refuse files over 10 MB without Xet; .git and ignored build outputs do not ship.
    ignored = {".git", "__pycache__", "test-artifacts", "runs", ".numba_cache"}
    large = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in ignored]
        large += [os.path.relpath(os.path.join(folder, f), REPO_ROOT) for f in files
                  if os.path.getsize(os.path.join(folder, f)) >= 10 * 1024 * 1024]
    assert not large, large
