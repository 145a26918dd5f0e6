"""Command help read from the command modules' source, so `autocnn --help` lists every command without
importing what they import (torch, optuna: seconds)."""
from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

import click


def _command_name(decorator: ast.expr, function: str) -> str | None:
    """The name `@cli.command(...)` (or `@cli.group(...)`) gives `function` (its own name unless `name=` says otherwise)."""
    call = decorator if isinstance(decorator, ast.Call) else None
    target = call.func if call else decorator
    if not (isinstance(target, ast.Attribute) and target.attr in ("command", "group")):
        return None
    for keyword in call.keywords if call else ():
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    if call and call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value
    return function.replace("_", "-")


@lru_cache(maxsize=None)
def _docstrings(module: str) -> dict[str, str]:
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                name = _command_name(decorator, node.name)
                if name is not None:
                    found[name] = ast.get_docstring(node) or ""
    return found


def short_help(module: str, command: str, limit: int = 45) -> str:
    """The first sentence of `command`'s docstring in `module`, cut to `limit` as click cuts it."""
    return click.Command(command, help=_docstrings(module).get(command, "")).get_short_help_str(limit)
