"""The package's import structure: no import cycles among vitsq modules (counting every import
statement that can run, lazy ones inside functions included; ``if TYPE_CHECKING:`` blocks are
annotations only), and every module imports alone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import vitsq

SRC = Path(vitsq.__file__).resolve().parent.parent  # the folder holding the vitsq package


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "vitsq").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the vitsq modules its import statements name (relative imports resolved)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in mods and n != mod}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "vitsq.synth" in graph["vitsq.registry"]  # the graph is real
    assert strongly_connected(graph) == []


def test_every_module_imports_alone():
    """One fresh interpreter per subpackage, each importing its modules in turn; a module that
    only imports after another one (a hidden order dependency) fails in its own interpreter first."""
    mods = sorted(_modules())
    groups: dict[str, list[str]] = {}
    for m in mods:
        parts = m.split(".")
        groups.setdefault(".".join(parts[:2]) if len(parts) > 2 else m, []).append(m)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {}
    for key, members in groups.items():
        # the first module of each group is imported first, alone in the fresh interpreter
        code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\n" % sorted(members, key=len)
        procs[key] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
    failed = {}
    for key, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed[key] = err.strip().splitlines()[-1:]
    assert not failed


def test_import_vitsq_is_light_and_the_functions_win():
    code = ("import sys, vitsq\n"
            "assert 'torch' not in sys.modules, 'import vitsq imported torch'\n"
            "import vitsq.quantize.recipes, vitsq.export.onnx, vitsq.evaluate.table\n"
            "for name in ('quantize', 'export', 'evaluate'):\n"
            "    assert callable(getattr(vitsq, name)) and not isinstance(getattr(vitsq, name), type(sys)), name\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
