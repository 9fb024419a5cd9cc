"""Inputs and effects of every sans-IO core (STYLE.md, "The core contract").

A core is a plain object: `effects = core.handle(inp, now)`. It never sleeps, never
reads a clock and never does I/O; drivers (the trio runtime, the simulator) feed it
inputs and carry out the effects it returns.

Timers are effects with stable, hashable ids and *absolute* deadlines. Setting a
timer id that is already pending replaces it. A driver delivers `TimerFired` only for
the latest deadline of an id; cores still treat a stale `TimerFired` as a no-op
rather than an error, because drivers may race with cancellation.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from overlay.core.ids import PeerId

TimerId = Hashable

_T = TypeVar("_T")


def _quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen slots dataclass a faster `__init__`.

    The generated one stores each field with `object.__setattr__` (≈ 0.25 µs per field,
    it looks the attribute up by name); this one calls each slot's descriptor directly,
    about twice as fast. Same parameters (positional or keyword, the same plain
    defaults; no `default_factory`, no keyword-only fields, no `__post_init__`), same
    resulting object, still frozen afterwards (`__setattr__` still raises). Inputs,
    effects and the gossip messages are built for every message and timer by every
    driver and core, so this is on the simulator's hottest path (docs/simulation.md,
    "Speed-up")."""
    fs = fields(cls)  # type: ignore[arg-type]
    if (
        any(f.default_factory is not MISSING or f.kw_only is True for f in fs)
        or hasattr(cls, "__post_init__")
        or not all(f.init for f in fs)
    ):
        raise TypeError(f"{cls.__name__}: _quick_init takes plain init fields only")
    names = [f.name for f in fs]
    ns: dict[str, Any] = {f"_s{i}": cls.__dict__[n].__set__ for i, n in enumerate(names)}
    params = []
    for i, f in enumerate(fs):
        if f.default is MISSING:
            params.append(f.name)
        else:  # the very default object, as the generated __init__ uses
            ns[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
    body = "".join(f"    _s{i}(self, {n})\n" for i, n in enumerate(names))
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", ns)  # as dataclasses build theirs
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


#: Public name for the other sans-IO packages' hot message types (gossip/messages.py).
quick_init = _quick_init


# ---------------------------------------------------------------- inputs


@_quick_init
@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message from `peer`."""

    peer: PeerId
    msg: Any


@_quick_init
@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: TimerId


@_quick_init
@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """The driver could not deliver to `peer` (dial failed, stream reset)."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class Connected:
    """The driver holds a connection to `peer` now (its first one)."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The driver's last connection to `peer` closed."""

    peer: PeerId


# ---------------------------------------------------------------- effects


@_quick_init
@dataclass(frozen=True, slots=True)
class Send:
    """Deliver `msg` to `peer`. The driver resolves the peer to a connection."""

    peer: PeerId
    msg: Any


@_quick_init
@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: TimerId
    at: float


@_quick_init
@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerId


@_quick_init
@dataclass(frozen=True, slots=True)
class Emit:
    """Hand an event (a core-specific frozen dataclass) up to the node."""

    event: Any


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close connections to a misbehaving peer; `reason` is logged."""

    peer: PeerId
    reason: str


Effect = Send | SetTimer | CancelTimer | Emit | Disconnect
