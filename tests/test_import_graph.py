"""The packages import in one direction: no cycle, not even through a function-local import.

Read from the source (every ``import`` statement, late imports inside functions included),
so the rules hold without importing torch. ``model_export`` is in layers that import
downwards only: data <- models <- training <- export/evaluation <- the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("service", "model_export", "loadtest")

#: Layer of each part of ``model_export``; a module may import its own part or a lower layer.
#: The modules directly in the package (the command line: cli, commands, __main__) are "".
OFFLINE_LAYERS = {"data": 0, "models": 1, "training": 2, "export": 3, "evaluation": 3, "": 4}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body (the nearest known name)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        # a module may import its own package's __init__ (which holds nothing of its own)
        m: {d for d in _imports(p, known) if d != m and not m.startswith(d + ".")}
        for m, p in modules.items()
    }


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_serving_never_imports_the_offline_code() -> None:
    for name, imported in _graph().items():
        if name.startswith("service"):
            offline = {d for d in imported if not d.startswith("service")}
            assert not offline, f"{name} imports {offline}"


def _offline_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / "model_export" / parts[1]).is_dir() else ""


def test_offline_layers_import_downwards() -> None:
    offline = {m: d for m, d in _graph().items() if m.startswith("model_export")}
    assert {_offline_part(m) for m in offline} <= set(OFFLINE_LAYERS)
    wrong = []
    for module, imported in offline.items():
        for target in imported:
            if not target.startswith("model_export"):
                continue
            here, there = _offline_part(module), _offline_part(target)
            if here != there and OFFLINE_LAYERS[there] >= OFFLINE_LAYERS[here]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_the_entry_point_leaves_prometheus_client_unloaded() -> None:
    """``python -m service`` points PROMETHEUS_MULTIPROC_DIR at its directory before any
    metric exists; a module that creates the metrics (or loads prometheus-client) on the
    way in would keep them in process memory, and ``/metrics`` would answer an empty page."""
    import subprocess
    import sys

    code = (
        "import sys, service.__main__; print(sorted(m for m in sys.modules if 'prometheus' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
