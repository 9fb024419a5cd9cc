"""A whole node as one sans-IO core: dht, gossip, exchange and capsule cores composed.

The driver (trio) and the simulator each run exactly one core per node; this module
makes the node's several protocol cores look like one:

- Inputs are routed by type: `Received(peer, msg)` goes to the part registered for
  `type(msg)`, commands to the part registered for the command's type, and
  `PeerUnreachable` to every part.
- Timer ids are namespaced `(part name, inner id)`, so parts cannot collide.
- Events a part emits can be *wired* to other parts: a wiring function turns an
  event into commands for another part (gossip's member-joined → dht's add-peer),
  and the event is also emitted upwards for the node's owner (API, metrics, sim).

Keeping the wiring here, as data, is what lets every core stay ignorant of the others.
Wiring runs to a fixed depth (`MAX_CASCADE`), so two parts cannot loop forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId

MAX_CASCADE = 4


class Part(Protocol):
    def handle(self, inp: Any, now: float) -> list[Effect]: ...


Wiring = Callable[[Any], Iterable[tuple[str, Any]]]


class Node:
    def __init__(self, me: PeerId) -> None:
        self.me = me
        self.parts: dict[str, Part] = {}
        self._msg_route: dict[type, str] = {}
        self._cmd_route: dict[type, str] = {}
        self._wiring: dict[type, list[Wiring]] = {}
        self.unrouted = 0

    # ------------------------------------------------------------ assembly

    def add_part(
        self,
        name: str,
        part: Part,
        *,
        messages: Iterable[type] = (),
        commands: Iterable[type] = (),
    ) -> None:
        if name in self.parts:
            raise LocalProtocolError(f"part {name!r} added twice")
        self.parts[name] = part
        for t in messages:
            self._register(self._msg_route, t, name, "message")
        for t in commands:
            self._register(self._cmd_route, t, name, "command")

    @staticmethod
    def _register(table: dict[type, str], t: type, name: str, what: str) -> None:
        if t in table:
            raise LocalProtocolError(f"{what} type {t.__name__} routed to two parts")
        table[t] = name

    def wire(self, event_type: type, fn: Wiring) -> None:
        """On `event_type` from any part, feed `fn(event)`'s (part, command) pairs."""
        self._wiring.setdefault(event_type, []).append(fn)

    def part_for_message(self, msg: Any) -> str | None:
        return self._msg_route.get(type(msg))

    # ------------------------------------------------------------ core contract

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(inp, Received):
            name = self._msg_route.get(type(inp.msg))
            if name is None:
                self.unrouted += 1
                return out
            self._run(name, inp, now, out, 0)
        elif isinstance(inp, TimerFired):
            timer = inp.timer
            if not (isinstance(timer, tuple) and len(timer) == 2 and timer[0] in self.parts):
                self.unrouted += 1
                return out
            self._run(timer[0], TimerFired(timer[1]), now, out, 0)
        elif isinstance(inp, PeerUnreachable):
            for name in self.parts:
                self._run(name, inp, now, out, 0)
        else:
            name = self._cmd_route.get(type(inp))
            if name is None:
                raise LocalProtocolError(f"no part takes command {type(inp).__name__}")
            self._run(name, inp, now, out, 0)
        return out

    def _run(self, name: str, inp: Any, now: float, out: list[Effect], depth: int) -> None:
        for eff in self.parts[name].handle(inp, now):
            if isinstance(eff, SetTimer):
                out.append(SetTimer((name, eff.timer), eff.at))
            elif isinstance(eff, CancelTimer):
                out.append(CancelTimer((name, eff.timer)))
            elif isinstance(eff, Emit):
                out.append(eff)
                self._cascade(eff.event, now, out, depth)
            else:
                out.append(eff)

    def _cascade(self, event: Any, now: float, out: list[Effect], depth: int) -> None:
        fns = self._wiring.get(type(event))
        if not fns:
            return
        if depth >= MAX_CASCADE:
            raise LocalProtocolError(f"event wiring deeper than {MAX_CASCADE} at {event!r}")
        for fn in fns:
            for target, command in fn(event):
                self._run(target, command, now, out, depth + 1)
