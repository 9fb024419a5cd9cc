"""Table tests for overlay/core/validate.py, including the exact texts callers produce."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import pytest

from overlay.capsule.spec import SpecError
from overlay.core.errors import MalformedFrame, RemoteProtocolError
from overlay.core.validate import flag, integer, number, string, strings, uint


class Small(IntEnum):
    ONE = 1


# The templates callers pass to keep their historical wording.
AD_UINT = "ad field {what} must be an unsigned integer"
AD_STR = "ad field {what} must be a string of at most {limit} chars"
AD_STRS = "ad field {what} must be a list of at most {max_items} strings"
U63_TEXT = "{what} must be an unsigned 63-bit integer"
LOG_TEXT = "log token and offset must be non-negative integers"
REASON = "{what} must be a string of at most {limit} characters"

Check = Callable[[Any], Any]
OK = object()  # expected: the value comes back unchanged

ROWS: list[tuple[str, Check, Any, Any]] = [
    # uint: the capsule-message default
    ("uint 0", lambda v: uint(v, "token"), 0, OK),
    ("uint max", lambda v: uint(v, "token"), (1 << 63) - 1, OK),
    ("uint 2^63", lambda v: uint(v, "token"), 1 << 63,
     (MalformedFrame, "token must be a non-negative integer")),
    ("uint -1", lambda v: uint(v, "token"), -1,
     (MalformedFrame, "token must be a non-negative integer")),
    ("uint bool", lambda v: uint(v, "token"), True,
     (MalformedFrame, "token must be a non-negative integer")),
    ("uint float", lambda v: uint(v, "token"), 1.0,
     (MalformedFrame, "token must be a non-negative integer")),
    ("uint IntEnum", lambda v: uint(v, "token"), Small.ONE, OK),
    # uint, exact type (gossip's copies): subclasses of int are refused
    ("exact IntEnum", lambda v: uint(v, "cpus", exact=True, message=AD_UINT), Small.ONE,
     (MalformedFrame, "ad field cpus must be an unsigned integer")),
    ("exact bool", lambda v: uint(v, "inc", exact=True, message=U63_TEXT), False,
     (MalformedFrame, "inc must be an unsigned 63-bit integer")),
    ("exact ok", lambda v: uint(v, "inc", exact=True, message=U63_TEXT), 7, OK),
    # uint with a lower bound and another error type (the log reader's copy)
    ("2^62", lambda v: uint(v, "x", limit=1 << 62, error=RemoteProtocolError, message=LOG_TEXT),
     1 << 62, (RemoteProtocolError, LOG_TEXT)),
    # integer
    ("int lo", lambda v: integer(v, "prio", -5, 5), -5, OK),
    ("int hi", lambda v: integer(v, "prio", -5, 5), 5, OK),
    ("int out", lambda v: integer(v, "prio", -5, 5, error=SpecError), 6,
     (SpecError, "prio must be an integer in [-5, 5]")),
    ("int bool", lambda v: integer(v, "gpu", 0, 1, error=SpecError), True,
     (SpecError, "gpu must be an integer in [0, 1]")),
    # number
    ("num int", lambda v: number(v, "cpu"), 2, 2.0),
    ("num zero", lambda v: number(v, "cpu"), 0.0, OK),
    ("num neg", lambda v: number(v, "cpu", error=SpecError), -0.5,
     (SpecError, "cpu must be a finite number ≥ 0")),
    ("num lo", lambda v: number(v, "t", lo=1.5), 1.0,
     (MalformedFrame, "t must be a finite number ≥ 1.5")),
    ("num nan", lambda v: number(v, "cpu"), math.nan,
     (MalformedFrame, "cpu must be a finite number ≥ 0")),
    ("num inf", lambda v: number(v, "cpu"), math.inf,
     (MalformedFrame, "cpu must be a finite number ≥ 0")),
    ("num str", lambda v: number(v, "cpu"), "1",
     (MalformedFrame, "cpu must be a finite number ≥ 0")),
    ("num bool", lambda v: number(v, "cpu"), True,
     (MalformedFrame, "cpu must be a finite number ≥ 0")),
    ("pos ok", lambda v: number(v, "t", above=True), 0.25, OK),
    ("pos zero", lambda v: number(v, "t", above=True, message="{what} must be a positive number"),
     0, (MalformedFrame, "t must be a positive number")),
    # flag
    ("flag ok", lambda v: flag(v, "accepted"), False, OK),
    ("flag int", lambda v: flag(v, "accepted"), 1, (MalformedFrame, "accepted must be a bool")),
    # string
    ("str ok", lambda v: string(v, "name", limit=3), "abc", OK),
    ("str empty ok", lambda v: string(v, "name", limit=3), "", OK),
    ("str long", lambda v: string(v, "name", limit=3, error=SpecError), "abcd",
     (SpecError, "name must be a string")),
    ("str empty", lambda v: string(v, "name", limit=3, empty=False), "",
     (MalformedFrame, "name must be a non-empty string")),
    ("str bytes", lambda v: string(v, "name", limit=3), b"a",
     (MalformedFrame, "name must be a string")),
    ("str reason", lambda v: string(v, "reason", limit=2, message=REASON), "abc",
     (MalformedFrame, "reason must be a string of at most 2 characters")),
    ("str ad", lambda v: string(v, "arch", limit=9, message=AD_STR), 1,
     (MalformedFrame, "ad field arch must be a string of at most 9 chars")),
    # strings
    ("strs list", lambda v: strings(v, "cmd", max_items=2, limit=4), ["a", "b"], ("a", "b")),
    ("strs tuple", lambda v: strings(v, "cmd", max_items=2, limit=4), ("a",), ("a",)),
    ("strs many", lambda v: strings(v, "cmd", max_items=2, limit=4, error=SpecError),
     ["a", "b", "c"], (SpecError, "cmd must be a list of at most 2 strings")),
    ("strs str", lambda v: strings(v, "cmd", max_items=2, limit=4), "ab",
     (MalformedFrame, "cmd must be a list of at most 2 strings")),
    ("strs item", lambda v: strings(v, "cmd", max_items=2, limit=4, error=SpecError), ["a", 1],
     (SpecError, "cmd[] must be a string")),
    ("strs no tuple", lambda v: strings(v, "tags", max_items=2, limit=4, tuples=False,
                                        message=AD_STRS), ("a",),
     (MalformedFrame, "ad field tags must be a list of at most 2 strings")),
    ("strs ad item", lambda v: strings(v, "tags", max_items=2, limit=4, tuples=False,
                                       item_what="tags", item_message=AD_STR), ["abcde"],
     (MalformedFrame, "ad field tags must be a string of at most 4 chars")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("check", "value", "want"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_validate_table(check: Check, value: Any, want: Any) -> None:
    if isinstance(want, tuple) and len(want) == 2 and isinstance(want[0], type):
        error, text = want
        with pytest.raises(error) as info:
            check(value)
        assert type(info.value) is error
        assert str(info.value) == text
        return
    got = check(value)
    expected = value if want is OK else want
    assert got == expected
    assert type(got) is type(expected)


def test_spec_error_is_still_a_value_error() -> None:
    # spec callers catch ValueError; the shared validators raise the class they are given.
    with pytest.raises(ValueError):
        string(1, "x", limit=1, error=SpecError)
