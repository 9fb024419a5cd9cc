"""Shared field validators for decoding untrusted values (sans-IO, no state).

`from_wire()` and `from_dict()` check every field of what they decode (DESIGN §2): a
value of the wrong type, out of range or too long raises a typed error naming the
field, never KeyError or TypeError. These functions are those checks, once.

Each takes the value, `what` (the field's name as the message shows it), its limits,
`error` (the exception class to raise: `MalformedFrame` for wire and disk input by
default, `SpecError` for specs a user wrote, …) and `message`, a `str.format` template
over `what` and the limits (`{limit}`, `{lo}`, `{hi}`, `{max_items}`), so every caller
keeps the exact text it has always produced. Booleans are never accepted as numbers
(`True` is an `int` in Python, not in CBOR). On success the value comes back as the
type the caller stores (a tuple for `strings`, a float for `number`).

Counters a peer can influence (incarnations, Lamport times, record versions, fencing
tokens) travel as unsigned 63-bit integers (`U63`) but are *accepted* only below
`COUNTER_LIMIT` = 2^62 and, where a previous value is known, at most
`MAX_COUNTER_JUMP` above it (`counter_step_ok`). A value derived from an accepted one
(`+ 1`, `max(…) + 1`) therefore always fits the wire format, and pushing one of our
counters to the edge takes 2^30 accepted messages instead of one.

Invariants: no I/O, no clocks, no randomness; a check either returns the value or
raises `error(message)`; nothing else escapes (an integer too large for a float is
refused by `number`, not an `OverflowError`).
"""

from __future__ import annotations

import math
from typing import Any

from overlay.core.errors import MalformedFrame

ErrorType = type[Exception]

U63 = 1 << 63
#: Peer-influenced counters are accepted only below this (see the module docstring).
COUNTER_LIMIT = 1 << 62
#: …and at most this far above the value already known for the same subject.
MAX_COUNTER_JUMP = 1 << 32


def counter_step_ok(new: int, known: int | None) -> bool:
    """May a peer move a counter from `known` (None: first sight) to `new`?"""
    if not 0 <= new < COUNTER_LIMIT:
        return False
    return known is None or new <= known + MAX_COUNTER_JUMP


def uint(
    v: Any,
    what: str,
    *,
    limit: int = U63,
    exact: bool = False,
    error: ErrorType = MalformedFrame,
    message: str = "{what} must be a non-negative integer",
) -> int:
    """An int in [0, limit). `exact`: the type must be `int` itself (no subclasses)."""
    ok = type(v) is int if exact else isinstance(v, int) and not isinstance(v, bool)
    if not ok or not 0 <= v < limit:
        raise error(message.format(what=what, limit=limit))
    n: int = v
    return n


def integer(
    v: Any,
    what: str,
    lo: int,
    hi: int,
    *,
    error: ErrorType = MalformedFrame,
    message: str = "{what} must be an integer in [{lo}, {hi}]",
) -> int:
    """An int in [lo, hi] (both ends included)."""
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise error(message.format(what=what, lo=lo, hi=hi))
    return v


def number(
    v: Any,
    what: str,
    *,
    lo: float = 0.0,
    above: bool = False,
    error: ErrorType = MalformedFrame,
    message: str = "{what} must be a finite number ≥ {lo:g}",
) -> float:
    """A finite int or float ≥ lo (> lo when `above`), returned as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v):
        raise error(message.format(what=what, lo=lo))
    if v <= lo if above else v < lo:
        raise error(message.format(what=what, lo=lo))
    return float(v)


def finite(v: int | float) -> bool:
    """`math.isfinite` that answers False, not OverflowError, for a huge integer."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def flag(
    v: Any,
    what: str,
    *,
    error: ErrorType = MalformedFrame,
    message: str = "{what} must be a bool",
) -> bool:
    if not isinstance(v, bool):
        raise error(message.format(what=what))
    return v


def string(
    v: Any,
    what: str,
    *,
    limit: int,
    empty: bool = True,
    error: ErrorType = MalformedFrame,
    message: str | None = None,
) -> str:
    """A str of at most `limit` characters; non-empty unless `empty`.

    Default message: "{what} must be a string" ("… a non-empty string" if not `empty`).
    """
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        if message is None:
            message = "{what} must be a string" if empty else "{what} must be a non-empty string"
        raise error(message.format(what=what, limit=limit))
    return v


def strings(
    v: Any,
    what: str,
    *,
    max_items: int,
    limit: int,
    item_what: str | None = None,
    tuples: bool = True,
    error: ErrorType = MalformedFrame,
    message: str = "{what} must be a list of at most {max_items} strings",
    item_message: str | None = None,
) -> tuple[str, ...]:
    """A list (or a tuple, when `tuples`) of at most `max_items` `string`s.

    Each item is checked by `string(limit=limit)` under the name `item_what`
    (default: `what` + "[]") with `item_message`.
    """
    kinds = (list, tuple) if tuples else list
    if not isinstance(v, kinds) or len(v) > max_items:
        raise error(message.format(what=what, max_items=max_items))
    name = f"{what}[]" if item_what is None else item_what
    return tuple(string(x, name, limit=limit, error=error, message=item_message) for x in v)
