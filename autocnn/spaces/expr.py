"""Derived values: a tiny, safe expression language evaluated over already-sampled values.

`${beta ** phi}`, `${round(base_resolution * gamma ** phi)}`, `${[w, w * 2, w * 4]}`,
`${expansion if block == 'bottleneck' else 1.0}`. Python syntax parsed with `ast`, but only these
nodes are accepted: numbers, strings, True/False/None, names of sampled values, + - * / // % **,
comparisons, and/or/not, `a if c else b`, list/tuple literals, indexing and slicing, `x.key` on
mappings, and calls of the functions in FUNCTIONS (`make_divisible` is
autocnn.scaling's width rounding). Nothing is looked up on Python objects, so no
attribute, import or builtin is reachable. Sizes are bounded so no expression can exhaust memory.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Mapping

from autocnn.scaling import make_divisible

MAX_LENGTH = 500
MAX_INT = 10 ** 18
MAX_ITEMS = 1000


class ExprError(ValueError):
    """A rejected or failing expression; the message says what went wrong."""


def _clip(x, lo, hi):
    return min(max(x, lo), hi)


FUNCTIONS = {
    "abs": abs, "ceil": math.ceil, "floor": math.floor, "round": round, "min": min, "max": max,
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "clip": _clip, "int": int,
    "float": float, "len": len, "sum": sum, "make_divisible": make_divisible,
}

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ALLOWED = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.IfExp, ast.Call, ast.List, ast.Tuple, ast.Subscript, ast.Slice, ast.Attribute,
    ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, *_BINOPS, *_CMPOPS,
)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Expr:
    """A parsed expression; `names` are the free variables it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        if len(source) > MAX_LENGTH:
            raise ExprError(f"expression longer than {MAX_LENGTH} characters")
        try:
            self.tree = ast.parse(source.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
            raise ExprError(f"cannot parse expression {source!r} ({getattr(err, 'msg', err)})") from None
        self.names: set[str] = set()
        for node in ast.walk(self.tree):
            if not isinstance(node, _ALLOWED):
                raise ExprError(f"{type(node).__name__} is not allowed in expression {source!r}")
            if isinstance(node, ast.Constant) and not (node.value is None or isinstance(node.value, (bool, int, float, str))):
                raise ExprError(f"constant {node.value!r} is not allowed in expression {source!r}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise ExprError(f"attribute {node.attr!r} is not allowed in expression {source!r}")
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                    raise ExprError(f"only the functions {', '.join(sorted(FUNCTIONS))} can be called "
                                    f"in expression {source!r}")
                if node.keywords:
                    raise ExprError(f"keyword arguments are not allowed in expression {source!r}")
        calls = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        self.names = {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in calls}

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        try:
            return _Evaluator(scope).visit(self.tree.body)
        except ExprError:
            raise
        except (ArithmeticError, TypeError, ValueError, KeyError, IndexError, RecursionError) as err:
            raise ExprError(f"{self.source!r} failed: {type(err).__name__}: {err}") from None

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope = scope

    def visit(self, node: ast.AST) -> Any:
        return _check_size(getattr(self, f"_{type(node).__name__}")(node))

    def _Constant(self, node):
        return node.value

    def _Name(self, node):
        if node.id not in self.scope:
            raise ExprError(f"{node.id!r} has no value here (not sampled on this branch?)")
        return self.scope[node.id]

    def _BinOp(self, node):
        a, b = self.visit(node.left), self.visit(node.right)
        op = type(node.op)
        if op is ast.Add and type(a) is type(b) and isinstance(a, (list, tuple, str)):
            return a + b
        if not (_is_number(a) and _is_number(b)):
            raise ExprError(f"{_BINOPS[op].__name__} needs numbers, got {a!r} and {b!r}")
        if op is ast.Pow and isinstance(a, int) and isinstance(b, int) and abs(b) > 64 and abs(a) > 1:
            raise ExprError(f"exponent {b} is too large")
        return _BINOPS[op](a, b)

    def _UnaryOp(self, node):
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if not _is_number(value):
            raise ExprError(f"unary minus needs a number, got {value!r}")
        return -value if isinstance(node.op, ast.USub) else +value

    def _BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for item in node.values:  # short-circuit, as Python does
            value = self.visit(item)
            if bool(value) != is_and:
                return value
        return value

    def _Compare(self, node):
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            right = self.visit(comparator)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, node):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def _Call(self, node):
        return FUNCTIONS[node.func.id](*[self.visit(a) for a in node.args])

    def _List(self, node):
        return [self.visit(e) for e in node.elts]

    def _Tuple(self, node):
        return [self.visit(e) for e in node.elts]  # one sequence type: lists, as YAML has

    def _Subscript(self, node):
        value = self.visit(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [self.visit(p) if p is not None else None
                     for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or isinstance(p, int) for p in parts) or not isinstance(value, (list, str)):
                raise ExprError("slices take integer bounds on lists or strings")
            return value[slice(*parts)]
        index = self.visit(node.slice)
        if isinstance(value, dict):
            return value[index]
        if isinstance(value, (list, str)) and isinstance(index, int) and not isinstance(index, bool):
            return value[index]
        raise ExprError(f"cannot index {type(value).__name__} with {index!r}")

    def _Attribute(self, node):
        value = self.visit(node.value)
        if not isinstance(value, dict) or node.attr not in value:
            raise ExprError(f"no key {node.attr!r} in {value!r}")
        return value[node.attr]

    def _Slice(self, node):  # pragma: no cover - handled by _Subscript
        raise ExprError("unexpected slice")


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExprError(f"integer {value} is out of range")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError(f"result {value} is not a finite number")
    if isinstance(value, (list, str)) and len(value) > MAX_ITEMS:
        raise ExprError(f"result has more than {MAX_ITEMS} items")
    return value
