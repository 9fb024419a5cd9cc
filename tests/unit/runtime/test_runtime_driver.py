"""The trio driver on virtual time (MockClock): inputs, timers, effects, robustness."""

from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from overlay.core.crypto import KeyPair
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.runtime.driver import Driver

A = KeyPair(b"\x01" * 32).peer_id
B = KeyPair(b"\x02" * 32).peer_id


@dataclass(frozen=True)
class Start:
    peer: Any


@dataclass(frozen=True)
class Boom:
    pass


class PingCore:
    """Pings a peer, answers pings, and re-arms/cancels timers on command."""

    def __init__(self) -> None:
        self.log: list[tuple[float, Any]] = []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.log.append((now, inp))
        if isinstance(inp, Start):
            return [Send(inp.peer, "ping"), SetTimer("t", now + 5), SetTimer("t", now + 10)]
        if isinstance(inp, Received) and inp.msg == "ping":
            return [Send(inp.peer, "pong"), SetTimer("x", now + 1), CancelTimer("x")]
        if isinstance(inp, Received) and inp.msg == "pong":
            return [Emit(("pong", now))]
        if isinstance(inp, TimerFired):
            return [Emit(("fired", inp.timer, now))]
        if isinstance(inp, Boom):
            raise RuntimeError("bug in core")
        return []


def test_two_drivers_exchange_messages_and_fire_latest_timer() -> None:
    async def main() -> None:
        ca, cb = PingCore(), PingCore()
        events: list[Any] = []
        drivers: dict[Any, Driver] = {}

        def sender(me: Any) -> Any:
            return lambda peer, msg: drivers[peer].submit(Received(me, msg))

        drivers[A] = Driver(ca, send=sender(A), emit=events.append, wall_offset=1000.0)
        drivers[B] = Driver(cb, send=sender(B), emit=events.append, wall_offset=1000.0)
        async with trio.open_nursery() as n:
            await n.start(drivers[A].run)
            await n.start(drivers[B].run)
            drivers[A].submit(Start(B))
            await trio.sleep(30)
            n.cancel_scope.cancel()
        assert events[0] == ("pong", 1000.0)
        # "t" was set twice; only the later deadline fires, once.
        assert events[1:] == [("fired", "t", 1010.0)]
        # B's timer "x" was cancelled in the same batch; it never fired.
        assert not any(isinstance(i, TimerFired) for _, i in cb.log)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_core_exception_costs_the_input_not_the_loop() -> None:
    async def main() -> None:
        core = PingCore()
        events: list[Any] = []
        d = Driver(core, send=lambda p, m: None, emit=events.append, wall_offset=0.0)
        async with trio.open_nursery() as n:
            await n.start(d.run)
            d.submit(Boom())
            d.submit(Start(B))
            await trio.sleep(11)
            n.cancel_scope.cancel()
        assert d.stats.handler_errors == 1
        assert events == [("fired", "t", 10.0)]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_full_inbox_drops_and_counts() -> None:
    async def main() -> None:
        d = Driver(PingCore(), send=lambda p, m: None, inbox_size=3)
        accepted = [d.submit(Start(B)) for _ in range(5)]
        assert accepted == [True, True, True, False, False]
        assert d.stats.inputs_dropped == 2

    trio.run(main)
