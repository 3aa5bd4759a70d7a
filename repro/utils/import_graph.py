"""The static import graph of the ``repro`` package (every ``import`` statement, top-level or inside a function),
read from the source with :mod:`ast`: module cycles, layering checks, and the files a pipeline stage depends on."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "repro"


def package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def module_files(root: Path | None = None) -> dict[str, Path]:
    """``{module name: source file}`` of every module of the package (packages by their ``__init__.py``)."""
    root = root or package_root()
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` reads the package's namespace
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name, modules)
                if target and target != module:
                    found.add(target)
    return found


@lru_cache(maxsize=4)
def _graph(root: Path) -> dict[str, frozenset[str]]:
    modules = module_files(root)
    return {m: frozenset(_imports(m, p, modules)) for m, p in modules.items()}


def import_graph(root: Path | None = None) -> dict[str, frozenset[str]]:
    """``{module: modules it imports}``; importing ``a.b.c`` also runs ``a`` and ``a.b``, which are added."""
    graph = _graph((root or package_root()).resolve())
    full: dict[str, frozenset[str]] = {}
    for module, targets in graph.items():
        with_parents = set(targets)
        for target in targets:
            parts = target.split(".")
            with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
        with_parents.discard(module)
        full[module] = frozenset(t for t in with_parents if t in graph)
    return full


def closure(start: Iterable[str], graph: dict[str, frozenset[str]] | None = None) -> set[str]:
    """Every module that importing ``start`` can run (their packages' ``__init__`` included)."""
    graph = graph or import_graph()
    todo = list(start)
    for name in list(todo):
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module not in graph:
            continue
        seen.add(module)
        todo.extend(graph[module])
    return seen


def cycles(graph: dict[str, frozenset[str]] | None = None, *, parents: bool = False) -> list[list[str]]:
    """Strongly connected components of more than one module (each a cycle of imports). ``parents=False`` uses
    the import statements alone (a submodule importing its package's ``__init__`` is not a cycle by itself)."""
    graph = graph or (import_graph() if parents else _graph(package_root().resolve()))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's algorithm, iterative over an explicit stack of iterators
        nonlocal counter
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
