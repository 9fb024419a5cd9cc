"""Trigger filters: a small, safe expression language over one event.

A filter is a Python-syntax expression parsed with `ast` and evaluated by our own
interpreter over a whitelist of node types, so a filter can compare and combine but
never call, import, index arbitrary objects or loop:

    name == "deploy" and json.version >= 2
    "error" in payload or sender == "12D3KooW…"
    not (lamport < 100)

Names: `name`, `payload` (the payload as UTF-8 text, invalid bytes replaced),
`sender`, `lamport`, `seq`, and `json` (the payload parsed as JSON; `json.a.b` reads
nested keys, `json["a b"]` too; a missing key or a payload that is not JSON reads as
`None`). Operators: `and`, `or`, `not`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`,
`not in`; literals: strings, numbers, `True`, `False`, `None`. Comparisons between
values of different types (a string and a number) are false, never an error, so a
filter cannot fail at run time: it matches or it does not.

Bounds: at most `MAX_FILTER_CHARS` characters and `MAX_NODES` syntax nodes.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_FILTER_CHARS = 1024
MAX_NODES = 200
NAMES = ("name", "payload", "sender", "lamport", "seq", "json")

_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: _contains(b, a), ast.NotIn: lambda a, b: not _contains(b, a),
}  # fmt: skip


class FilterError(ValueError):
    """A filter that does not parse or uses something the language does not have."""


def _contains(container: object, item: object) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | dict):
        try:
            return item in container
        except TypeError:
            return False
    return False


@dataclass(frozen=True, slots=True)
class EventFields:
    """What a filter sees of one event."""

    name: str
    payload: bytes
    sender: str
    lamport: int
    seq: int

    def values(self) -> dict[str, object]:
        try:
            parsed: object = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        return {"name": self.name, "payload": self.payload.decode(errors="replace"),
                "sender": self.sender, "lamport": self.lamport, "seq": self.seq,
                "json": parsed}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter; `Filter.parse("")` matches every event."""

    text: str
    tree: ast.expr | None

    @classmethod
    def parse(cls, text: str) -> Filter:
        if not text.strip():
            return cls("", None)
        if len(text) > MAX_FILTER_CHARS:
            raise FilterError(f"filter longer than {MAX_FILTER_CHARS} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as e:
            raise FilterError(f"filter does not parse: {e.msg} (column {e.offset})") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise FilterError(f"filter has more than {MAX_NODES} parts")
        for node in nodes:
            _check(node)
        return cls(text.strip(), tree)

    def matches(self, ev: EventFields) -> bool:
        if self.tree is None:
            return True
        return bool(_eval(self.tree, ev.values()))


_ALLOWED = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Name,
            ast.Load, ast.Attribute, ast.Subscript, ast.Constant, ast.USub, *_CMP)


def _check(node: ast.AST) -> None:
    if not isinstance(node, _ALLOWED):
        raise FilterError(f"filter cannot use {type(node).__name__.lower()} "
                          f"(only comparisons, and/or/not, names and literals)")
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not | ast.USub):
        raise FilterError("filter cannot use that operator")
    if isinstance(node, ast.Name) and node.id not in NAMES:
        raise FilterError(f"filter names unknown field {node.id!r}; known: {', '.join(NAMES)}")
    if isinstance(node, ast.Attribute) and not _is_json_path(node.value):
        raise FilterError("only json.<key> may use a dot")
    if isinstance(node, ast.Subscript):
        if not _is_json_path(node.value):
            raise FilterError("only json[...] may be indexed")
        if not (isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str | int)):
            raise FilterError("json[...] takes a string or an integer")
    if isinstance(node, ast.Constant) and not isinstance(
            node.value, str | int | float | bool | type(None)):
        raise FilterError("filter literals are strings, numbers, True, False or None")


def _is_json_path(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "json"


def _eval(node: ast.expr, env: Mapping[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.Attribute):
        return _get(_eval(node.value, env), node.attr)
    if isinstance(node, ast.Subscript):
        assert isinstance(node.slice, ast.Constant)
        return _get(_eval(node.value, env), node.slice.value)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not v
        return -v if isinstance(v, int | float) and not isinstance(v, bool) else None
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, env) for v in node.values)
        return any(_eval(v, env) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            if not _compare(type(op), left, right):
                return False
            left = right
        return True
    raise FilterError(f"cannot evaluate {type(node).__name__}")  # _check keeps us out


def _compare(op: type, a: object, b: object) -> bool:
    if op in (ast.Lt, ast.LtE, ast.Gt, ast.GtE) and not _same_kind(a, b):
        return False  # "2" < 3: false, not a TypeError
    try:
        return _CMP[op](a, b)
    except TypeError:
        return False


def _same_kind(a: object, b: object) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, num) and isinstance(b, num)) or (
        isinstance(a, str) and isinstance(b, str))


def _get(v: object, key: object) -> object:
    if isinstance(v, dict) and isinstance(key, str):
        return v.get(key)
    if isinstance(v, list) and isinstance(key, int) and -len(v) <= key < len(v):
        return v[key]
    return None
