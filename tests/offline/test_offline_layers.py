"""The offline package's dependency direction: data <- models <- training <- export/evaluation
<- command line, with no import cycle anywhere in ``model_export``.

Read from the source (every ``import`` statement, late imports inside functions included),
so the rule holds without importing torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "model_export"

# Layer of each subpackage; a module may import its own subpackage or a lower layer only.
# The modules directly in the package (the command line: cli, commands, __main__) are "".
LAYERS = {"data": 0, "models": 1, "training": 2, "export": 3, "evaluation": 3, "": 4}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``model_export`` modules a file imports (``from pkg import mod`` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("model_export"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("model_export"):
            module = str(node.module)
            submodules = {f"{module}.{a.name}" for a in node.names}
            known = {m for m in submodules if _exists(m)}
            found.update(known or {module})
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for module, imported in _graph().items():
        for target in imported:
            same_part = _part(target) == _part(module)
            if not same_part and LAYERS[_part(target)] >= LAYERS[_part(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_every_part_has_a_layer() -> None:
    assert {_part(m) for m in _graph()} <= set(LAYERS)
