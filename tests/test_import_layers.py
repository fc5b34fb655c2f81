"""The house's import graph, read from the source: no circle between files, no arrow up.

Every ``import`` of the project's own modules is read from the AST of every file of the
runtime packages, wherever it stands (module top, inside a function, under
``TYPE_CHECKING``), so a hidden dependency counts like any other. The layers follow the
pipeline: a module may import its own layer and the layers before it, never one after it.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("envs", "conf", "agent", "learner")
# The pipeline, first to last; a module belongs to the longest prefix that names it.
LAYERS = (
    "envs",
    "conf",
    "agent",
    "learner.nets",
    "learner.methods",
    "learner.data",
    "learner.evaluation",
    "learner.training",
    "learner.report",
    "learner",  # the console scripts at the door: train_app, eval_app, report_app
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_in(source: str, module: str, is_package: bool, modules: Collection[str]) -> set[str]:
    """The project modules the code ``source`` of ``module`` imports (``from a import b``
    counts as ``a.b`` where that is a module, else ``a``), wherever the import stands."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    found.discard(module)
    return found


def layer_of(module: str) -> int:
    matches = [i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    if not matches:
        raise AssertionError(f"module {module} is in no layer of {LAYERS}")
    return max(matches, key=lambda i: len(LAYERS[i]))


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_in(path.read_text(), name, path.name == "__init__.py", modules) for name, path in modules.items()}


def test_no_module_imports_a_layer_after_its_own():
    upward = [
        f"{module} ({LAYERS[layer_of(module)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module) and not module.startswith(target + ".")  # a package's own __init__
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle_between_files():
    graph = import_graph()
    # A package's __init__ is imported by every submodule's import; only real edges count.
    edges = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_scan_sees_imports_anywhere():
    """Imports inside functions and under TYPE_CHECKING count (the layer test would pass
    vacuously otherwise), and ``from package import module`` names the module."""
    modules = project_modules()
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from learner.training.learner import Learner\n"
        "def hidden():\n    from learner.methods import base\n    import envs\n"
    )  # fmt: skip
    found = imports_in(source, "learner.nets.probe", False, modules)
    assert found == {"learner.training.learner", "learner.methods.base", "envs"}
    assert layer_of("learner.nets.probe") < layer_of("learner.training.learner")  # an arrow up, as seen
