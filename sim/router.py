"""In-memory router: delivers cores' `Send` effects to other cores through the engine.

This is the minimal network the dht/ and gossip/ tests need (fixed delay, optional
loss, killed nodes, one-way drops); sim/network.py builds the full latency, bandwidth
and partition model on the same interface. Each node is any object with
`handle(inp, now) -> list[Effect]`; the router keeps each node's timers (latest
deadline per timer id wins) and records emitted events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from overlay.core.effects import (
    CancelTimer,
    Disconnect,
    Effect,
    Emit,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.ids import PeerId
from sim.engine import Engine


class Core(Protocol):
    def handle(self, inp: Any, now: float) -> list[Effect]: ...


class Router:
    """Connects cores through an `Engine` with a fixed (or per-call) delay."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        delay_s: float = 0.01,
        loss: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine or Engine()
        self.delay_s = delay_s
        self.loss = loss
        self.rng = rng or random.Random(0)
        self.nodes: dict[PeerId, Core] = {}
        self.alive: set[PeerId] = set()
        self._timers: dict[PeerId, dict[Any, float]] = {}
        #: (time, peer, event) for every Emit, in order.
        self.emitted: list[tuple[float, PeerId, Any]] = []
        self.on_emit: Callable[[float, PeerId, Any], None] | None = None
        self.sent = 0
        self.dropped = 0
        #: Optional predicate (src, dst) -> bool; False drops the message (partitions).
        self.link_up: Callable[[PeerId, PeerId], bool] | None = None
        #: Optional per-link delay override (src, dst) -> seconds.
        self.link_delay: Callable[[PeerId, PeerId], float] | None = None
        #: Extra processing delay per node (a slow node's inputs wait this long).
        self.slowdown: dict[PeerId, float] = {}
        self.disconnects: list[tuple[float, PeerId, PeerId, str]] = []

    @property
    def now(self) -> float:
        return self.engine.now

    def add(self, peer: PeerId, core: Core) -> None:
        self.nodes[peer] = core
        self.alive.add(peer)
        self._timers[peer] = {}

    def kill(self, peer: PeerId) -> None:
        """Crash a node: it stops receiving and its timers stop firing."""
        self.alive.discard(peer)
        self._timers[peer] = {}

    def revive(self, peer: PeerId, core: Core | None = None) -> None:
        if core is not None:
            self.nodes[peer] = core
        self.alive.add(peer)
        self._timers[peer] = {}

    def inject(self, peer: PeerId, inp: Any) -> list[Effect]:
        """Hand an input (a command) to `peer` now and carry out its effects."""
        effects = self.nodes[peer].handle(inp, self.engine.now)
        self.apply(peer, effects)
        return effects

    # ------------------------------------------------------------------ effects

    def apply(self, peer: PeerId, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Send):
                self._send(peer, eff.peer, eff.msg)
            elif isinstance(eff, SetTimer):
                self._timers[peer][eff.timer] = eff.at
                self.engine.at(eff.at, self._fire, (peer, eff.timer, eff.at))
            elif isinstance(eff, CancelTimer):
                self._timers[peer].pop(eff.timer, None)
            elif isinstance(eff, Emit):
                self.emitted.append((self.engine.now, peer, eff.event))
                if self.on_emit is not None:
                    self.on_emit(self.engine.now, peer, eff.event)
            elif isinstance(eff, Disconnect):
                self.disconnects.append((self.engine.now, peer, eff.peer, eff.reason))

    def _send(self, src: PeerId, dst: PeerId, msg: Any) -> None:
        self.sent += 1
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        if self.link_up is not None and not self.link_up(src, dst):
            self.dropped += 1
            return
        delay = self.link_delay(src, dst) if self.link_delay else self.delay_s
        delay += self.slowdown.get(dst, 0.0)
        self.engine.after(delay, self._deliver, (src, dst, msg))

    def _deliver(self, arg: tuple[PeerId, PeerId, Any]) -> None:
        src, dst, msg = arg
        if dst not in self.alive:
            self.dropped += 1
            return
        effects = self.nodes[dst].handle(Received(src, msg), self.engine.now)
        self.apply(dst, effects)

    def _fire(self, arg: tuple[PeerId, Any, float]) -> None:
        peer, timer, at = arg
        if peer not in self.alive or self._timers[peer].get(timer) != at:
            return  # cancelled, replaced or the node is dead
        del self._timers[peer][timer]
        effects = self.nodes[peer].handle(TimerFired(timer), self.engine.now)
        self.apply(peer, effects)

    def run_until(self, t: float) -> None:
        self.engine.run_until(t)

    def run_for(self, dt: float) -> None:
        self.engine.run_until(self.engine.now + dt)
