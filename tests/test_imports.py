"""The module graph of hermes_fast: no import cycle anywhere, and no import of a hermes_fast module hidden inside
a function (where it would dodge a cycle) outside the CLI, whose lazy imports keep ``hermes-fast --help`` fast.

The graph is read from the sources with ``ast``, every import counted, those inside functions included:
``import a.b.c`` and ``from a.b import c`` (c a module) depend on ``a.b.c``; ``from a.b import name`` (name not a
module) on ``a.b``. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` unless the importer lives inside
``a.b`` (then that package is already being imported), so such an import depends on those packages too; a package
importing its children from its ``__init__`` is an ordinary edge, and a child importing names from its own
package's ``__init__`` closes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hermes_fast

ROOT = Path(hermes_fast.__file__).parent
# modules (a package: every module in it) whose function-level imports of hermes_fast modules are lazy on purpose
# (start-up speed), with the reason
LAZY_IMPORTS_ALLOWED = {"hermes_fast.cli": "each command imports what it runs, so --help starts fast"}


def _lazy_allowed(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in LAZY_IMPORTS_ALLOWED)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, is_package: bool) -> list[tuple[str, str | None, bool, int]]:
    """(module, imported name or None, inside a function, line) for every import statement in ``path``, relative
    imports resolved against ``name``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_package else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((alias.name, None, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                out.extend((module, alias.name, in_function, child.lineno) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return out


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_graph(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module -> the package's modules it depends on, [(module, imported module, line) of imports inside
    functions]) for the package at ``root``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    lazy = []
    top = root.name
    for module, path in files.items():
        for target, name, in_function, line in _imports(path, module, path.name == "__init__.py"):
            if target != top and not target.startswith(top + "."):
                continue
            if name is not None and f"{target}.{name}" in files:
                target = f"{target}.{name}"
            deps = [target] + [a for a in _ancestors(target) if a not in _ancestors(module) and a != module]
            graph[module].update(d for d in deps if d in files and d != module)
            if in_function:
                lazy.append((module, target, line))
    return graph, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph, _ = module_graph(ROOT)
    assert len(graph) > 30 and "hermes_fast.resolve" in graph["hermes_fast.estimate"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_hermes_fast_import_hides_inside_a_function():
    _, lazy = module_graph(ROOT)
    assert any(m.startswith("hermes_fast.cli.") for m, _, _ in lazy)  # the allowance is in use
    hidden = [f"{m} line {line} imports {t}" for m, t, line in lazy if not _lazy_allowed(m)]
    assert not hidden, "imports inside functions: " + "; ".join(hidden)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # a cycle hidden by an import inside a function still counts
        (
            {"pkg/__init__.py": "", "pkg/a.py": "from .b import x\n", "pkg/b.py": "def f():\n    from . import a\n"},
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        # importing pkg.sub.low runs pkg/sub/__init__.py, which imports pkg.sub.high, which imports pkg.top
        (
            {
                "pkg/__init__.py": "",
                "pkg/top.py": "from .sub.low import y\n",
                "pkg/sub/__init__.py": "from .high import z\n",
                "pkg/sub/low.py": "y = 1\n",
                "pkg/sub/high.py": "from ..top import y as z\n",
            },
            ["pkg.sub", "pkg.sub.high", "pkg.top", "pkg.sub"],
        ),
        # a child reading a name from its own package's __init__, which imports the child
        (
            {"pkg/__init__.py": "from .a import f\nversion = 1\n", "pkg/a.py": "from . import version\n"},
            ["pkg", "pkg.a", "pkg"],
        ),
    ],
    ids=["hidden-in-function", "package-init", "child-reads-parent"],
)
def test_the_check_finds_cycles(tmp_path, files, cycle):
    graph, _ = module_graph(_write(tmp_path, files))
    assert find_cycle(graph) == cycle


def test_the_check_allows_siblings_and_names_lazy_imports(tmp_path):
    files = {
        "pkg/__init__.py": "from .a import f\nfrom .b import g\n",
        "pkg/a.py": "import numpy\nfrom .b import g\n\ndef f():\n    from .c import h\n    return g, h\n",
        "pkg/b.py": "def g():\n    import json\n",
        "pkg/c.py": "",
    }
    graph, lazy = module_graph(_write(tmp_path, files))
    assert find_cycle(graph) is None
    assert graph["pkg.a"] == {"pkg.b", "pkg.c"}  # its own package's __init__ is already running: no edge
    assert lazy == [("pkg.a", "pkg.c", 5)]  # json and numpy are not the package's
