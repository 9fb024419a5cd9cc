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
from dataclasses import dataclass
from typing import Any

from overlay.core.ids import PeerId

TimerId = Hashable


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message from `peer`."""

    peer: PeerId
    msg: Any


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: TimerId


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


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver `msg` to `peer`. The driver resolves the peer to a connection."""

    peer: PeerId
    msg: Any


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: TimerId
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerId


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
