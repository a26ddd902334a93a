"""The import graph of src/kabigate, read with `ast`: no circles, nothing below the edges (cli,
web, workers) imports them, web and workers never import each other, the parsers in formats/
depend on nothing of kabigate's but errors and the model's dataclasses, and the install-time tools
in host/ import no store.

Every kabigate import counts, at module top level or inside a function, and so do the command
modules the CLI's LazyGroup imports by name when a command is used (for start-up time): those
imports must run downward like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kabigate
from kabigate.cli import COMMAND_MODULES

SRC = Path(kabigate.__file__).parent
EDGES = ("kabigate.cli", "kabigate.web", "kabigate.workers")
# The CLI is the program's entry point: `serve`, `worker`, `listen` start the other edges, and
# `ingest --queue` / `gate --queue` make the workers' requests. No other module may import an edge.
LAUNCHERS = ("kabigate.__main__", "kabigate.cli")
# The parsers build the model's dataclasses (Export, Module, ...) and name its vocabulary (gate categories);
# model.py, vocabulary.py and errors.py import nothing of kabigate's.
FORMATS_MAY_IMPORT = ("kabigate.formats", "kabigate.errors", "kabigate.model", "kabigate.vocabulary")
# The install-time tools work on a system's files: a store, if any, is handed to them, never imported.
HOST_MAY_NOT_IMPORT = ("kabigate.store", "kabigate.services")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from package import submodule` depends on the submodule, not on the package's __init__
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    graph["kabigate.cli"].update(f"kabigate.cli.{spec.partition(':')[0]}" for spec in COMMAND_MODULES.values())
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules in import order), None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read():
    graph = _import_graph()
    assert "kabigate.inputs.stablelists" in graph["kabigate.workers.gating"]  # top level
    assert "kabigate.explain.sources" in graph["kabigate.cli.abi"]  # inside a function
    assert "kabigate.web.api" in graph["kabigate.web.app"]  # `from package import submodule`
    assert "kabigate.cli.boot" in graph["kabigate.cli"]  # LazyGroup's


def test_no_import_circles():
    circle = _cycle(_import_graph())
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_nothing_imports_an_edge_but_itself_and_the_cli():
    wrong = sorted(f"{module} -> {target}" for module, targets in _import_graph().items() for target in targets
                   for edge in EDGES if _within(target, edge) and not _within(module, edge)
                   and not any(_within(module, launcher) for launcher in LAUNCHERS))
    assert wrong == []


def test_formats_import_only_errors_formats_the_model_and_the_vocabulary():
    graph = _import_graph()
    wrong = sorted(f"{module} -> {target}" for module, targets in graph.items()
                   if _within(module, "kabigate.formats") for target in targets
                   if not any(_within(target, allowed) for allowed in FORMATS_MAY_IMPORT))
    assert wrong == []
    assert graph["kabigate.model"] == graph["kabigate.errors"] == graph["kabigate.vocabulary"] == set()


def test_host_imports_no_store_and_no_service():
    wrong = sorted(f"{module} -> {target}" for module, targets in _import_graph().items()
                   if _within(module, "kabigate.host") for target in targets
                   if any(_within(target, banned) for banned in HOST_MAY_NOT_IMPORT))
    assert wrong == []


def test_a_circle_is_found():
    """The checker itself: a made-up circle of three modules is reported."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
