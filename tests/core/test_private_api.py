"""Optuna's private internals are used in autocnn/storage.py only, Ray's in autocnn/search/ray/internals.py
only (each use names the public API that is missing there): a new use elsewhere fails here.

A private use is an import of a `_name` (or from a `_module`) of the library, an `obj._name` access
whose name autocnn defines nowhere itself, or an autocnn method that overrides a `_name` hook of a
library class.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "autocnn"
ALLOWED = {"optuna": "storage.py", "ray": "search/ray/internals.py"}
# private names of other libraries (the standard library, torch): not what this test guards
OTHER_LIBRARIES = {"os._exit", "nn.modules.batchnorm._BatchNorm", "torch._C", "torch._C._set_deterministic_algorithms"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def _defined_by_autocnn(trees) -> set[str]:
    """Every name autocnn binds itself: functions, classes, assigned names and attributes, arguments."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def _private_uses() -> dict[str, list[str]]:
    """module -> its private uses: 'optuna: ...', 'ray: ...' for imports, 'attr: ...' for accesses."""
    trees = _modules()
    ours = _defined_by_autocnn(trees.values())
    uses: dict[str, list[str]] = {}
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ALLOWED:
                names = [a.name for a in node.names]
                if any(_private(part) for part in node.module.split(".")) or any(map(_private, names)):
                    uses.setdefault(module, []).append(f"{node.module.split('.')[0]}: {node.module} {names}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ALLOWED and any(map(_private, alias.name.split("."))):
                        uses.setdefault(module, []).append(f"{alias.name.split('.')[0]}: {alias.name}")
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ours:
                if ast.unparse(node) not in OTHER_LIBRARIES:
                    uses.setdefault(module, []).append(f"attr: {ast.unparse(node)}")
    return uses


def test_private_internals_are_used_in_one_module_per_library():
    uses = _private_uses()
    assert set(uses) <= set(ALLOWED.values()), {m: u for m, u in uses.items() if m not in ALLOWED.values()}
    for library, module in ALLOWED.items():
        assert uses.get(module), f"{module} no longer uses {library}'s internals: update this test and CONTRIBUTING.md"
        imported = {use.split(":")[0] for use in uses[module] if not use.startswith("attr:")}
        assert imported <= {library}, (module, uses[module])


def test_only_the_internals_module_overrides_rays_private_hooks():
    pytest.importorskip("ray")
    allowed = "autocnn.search.ray.internals"
    hooks = []
    for path in sorted((PACKAGE / "search" / "ray").glob("*.py")):
        module = importlib.import_module(f"autocnn.search.ray.{path.stem}" if path.stem != "__init__" else
                                         "autocnn.search.ray")
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            library = [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in ALLOWED]
            hooks += [f"{cls.__module__}.{cls.__name__}.{name}" for name, value in vars(cls).items()
                      if _private(name) and (inspect.isfunction(value) or isinstance(value, property))
                      and any(hasattr(base, name) for base in library)]
    assert hooks and {hook.rsplit(".", 2)[0] for hook in hooks} == {allowed}, hooks
