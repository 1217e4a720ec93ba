"""The floors and one-way imports of ARCHITECTURE.md, checked on the source (ast) and in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOORS = ("pipelines", "studio", "training")
METHOD_PACKAGES = ("garment", "tryon", "tryoff", "dressing")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for floor in FLOORS for p in (REPO / floor).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere (module level AND inside functions)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != me:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (importing a package imports its __init__: not a cycle)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if node.startswith(target + "."):  # a submodule "imports" its own package's __init__
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if state.get(target) is None:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_our_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_floors_import_one_way():
    wrong = []
    for module, targets in import_graph().items():
        floor = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if floor == "pipelines" and other in ("studio", "training"):
                wrong.append(f"{module} -> {target}")
            if floor == "training" and other == "studio":
                wrong.append(f"{module} -> {target}")
            if floor == "studio" and other == "training" and target != "training.api":
                wrong.append(f"{module} -> {target} (the studio uses training.api only)")
            if floor == "studio" and other == "pipelines" and not (
                target in ("pipelines", "pipelines.service", "pipelines.types")
                or target.startswith(("pipelines.preprocess.images", "pipelines.preprocess.colors"))
            ):
                wrong.append(f"{module} -> {target} (the studio uses pipelines.service / types only)")
    assert not wrong, "\n".join(wrong)


def test_a_method_package_imports_no_other_method():
    wrong = []
    for module, targets in import_graph().items():
        parts = module.split(".")
        if parts[0] != "pipelines" or len(parts) < 2 or parts[1] not in METHOD_PACKAGES:
            continue
        for target in targets:
            tparts = target.split(".")
            if len(tparts) > 1 and tparts[0] == "pipelines" and tparts[1] in METHOD_PACKAGES and tparts[1] != parts[1]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("modules", [
    "pipelines, pipelines.types, pipelines.core.presets, pipelines.preprocess.images, pipelines.preprocess.colors, "
    "pipelines.garment, pipelines.tryon, pipelines.tryoff, pipelines.dressing",
    "studio, studio.ui, studio.components, studio.tabs, studio.tabs.design, studio.tabs.dressing, studio.tabs.tryon, "
    "studio.tabs.tryoff, studio.tabs.training, studio.tabs.gallery, studio.tabs.settings",
    "training.api, training.config, training.runner, training.jobstore, training.models, training.datasets",
])
def test_these_imports_do_not_load_torch(modules):
    code = f"import sys; import {modules}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
