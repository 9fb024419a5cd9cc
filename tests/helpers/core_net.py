"""Sans-IO cores wired back to back with no sockets: the one test harness for that.

h11's `ConnectionPair` idea for N cores (python-hyper/h11 `tests/helpers.py`): each
core is any object with `handle(inp, now) -> list[Effect]`; `CoreNet` carries out the
effects a core returns:

- `Send`: logged in `sends` as `(src, dst, msg)`, then carried to `dst` after
  `delay_s` of virtual time (0 = at once: same `now`, FIFO). Controls on the way:
  `kill`/`revive` (a dead node receives nothing and its timers stop), `loss` (drawn
  from the injected `rng`), `link_up` (partitions, one-way drops), `link_delay`,
  `hold` (keep matching messages in `held` until `release` delivers them, in any
  order, or `drop_held` loses them), and `transcode` (every message through its wire
  codec, as the daemon does).
- `SetTimer(timer, at)`: an absolute deadline, fired as `TimerFired` when the clock
  reaches it (the latest deadline per timer id wins; `CancelTimer` removes it). With
  `manual_timers=True` timers are only recorded in `timers` and a test fires them by
  hand with `fire`.
- `Emit(event)`: collected in `emitted` as `(time, peer, event)`; `of` filters them.
- `Disconnect`: collected in `disconnects`.

The clock is the simulator's event heap (`sim.engine.Engine`) advanced by hand:
`feed`/`fire` at an explicit `now`, `run_until`/`run_for`. Ties run in scheduling order,
so a seed replays a run exactly; `CoreNet` is the simulator's `sim.router.Router` plus
these test controls, so a test on it sees the same event order as the simulator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from overlay.core.effects import Effect, SetTimer, TimerFired
from overlay.core.ids import PeerId
from sim.engine import Engine
from sim.router import Core, Router

#: (src, dst, msg) of one message.
Message = tuple[PeerId, PeerId, Any]


class CoreNet(Router):
    """N cores, a queue of in-flight messages and a virtual clock advanced by hand."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        loss: float = 0.0,
        rng: random.Random | None = None,
        start: float = 0.0,
        manual_timers: bool = False,
        transcode: Callable[[Any], Any] | None = None,
        max_events: int = 100_000,
    ) -> None:
        super().__init__(Engine(start), delay_s=delay_s, loss=loss, rng=rng)
        self.manual_timers = manual_timers
        self.transcode = transcode
        #: `feed` fails past this many deliveries and firings at one instant.
        self.max_events = max_events
        #: Every message a core sent, in order, whatever became of it.
        self.sends: list[Message] = []
        #: Messages for which this returns True wait in `held` (not yet on the wire).
        self.hold: Callable[[PeerId, PeerId, Any], bool] | None = None
        self.held: list[Message] = []

    # ------------------------------------------------------------------ views

    @property
    def cores(self) -> dict[PeerId, Any]:
        """The cores by peer id (assigning one replaces it, as a restart would)."""
        return self.nodes

    @property
    def timers(self) -> dict[PeerId, dict[Any, float]]:
        """Pending timers per peer: timer id -> absolute deadline."""
        return self._timers

    def of(self, kind: type, at: PeerId | None = None) -> list[Any]:
        """Emitted events of type `kind` (at one peer, or anywhere), in order."""
        return [e for _, p, e in self.emitted if isinstance(e, kind) and (at is None or p == at)]

    # ------------------------------------------------------------------ driving

    def feed(self, peer: PeerId, inp: Any, now: float | None = None) -> list[Effect]:
        """Advance the clock to `now`, hand `inp` to `peer`, settle what is due now.

        Returns the effects of `peer`'s own `handle` call.
        """
        now = self.now if now is None else now
        if now < self.now:
            raise ValueError(f"time runs forward: now={now} < clock {self.now}")
        self._settle(now)
        effects = self.inject(peer, inp)
        self._settle(now)
        return effects

    def fire(self, peer: PeerId, timer: Any, now: float | None = None) -> list[Effect]:
        """Fire `peer`'s timer by hand (whether or not it is pending)."""
        self._timers[peer].pop(timer, None)
        return self.feed(peer, TimerFired(timer), now)

    def _settle(self, now: float) -> None:
        if self.engine.run_until(now, self.max_events) >= self.max_events:
            raise AssertionError(f"message storm: {self.max_events} events at t={now}")

    # ------------------------------------------------------------------ controls

    def add_all(self, cores: Iterable[tuple[PeerId, Core]]) -> None:
        for peer, core in cores:
            self.add(peer, core)

    def partition(self, *groups: Iterable[PeerId]) -> None:
        """Only peers in the same group reach each other (peers in no group: everyone)."""
        side = {p: i for i, g in enumerate(groups) for p in g}

        def up(src: PeerId, dst: PeerId) -> bool:
            return side.get(src, side.get(dst)) == side.get(dst, side.get(src))

        self.link_up = up

    def heal(self) -> None:
        self.link_up = None

    def release(self, order: Sequence[int] | None = None) -> None:
        """Deliver held messages now (`order`: indices into `held`, in delivery order)."""
        picked = list(range(len(self.held))) if order is None else list(order)
        msgs = [self.held[i] for i in picked]
        gone = set(picked)
        self.held = [m for i, m in enumerate(self.held) if i not in gone]
        for msg in msgs:
            self.engine.at(self.now, self._deliver, msg)
        self._settle(self.now)

    def drop_held(self) -> int:
        """Lose every held message; returns how many."""
        n = len(self.held)
        self.dropped += n
        self.held = []
        return n

    # ------------------------------------------------------------------ effects

    def apply(self, peer: PeerId, effects: list[Effect]) -> None:
        if not self.manual_timers:
            super().apply(peer, effects)
            return
        for eff in effects:
            if isinstance(eff, SetTimer):
                self._timers[peer][eff.timer] = eff.at
            else:
                super().apply(peer, [eff])

    def _send(self, src: PeerId, dst: PeerId, msg: Any) -> None:
        self.sends.append((src, dst, msg))
        if self.transcode is not None:
            msg = self.transcode(msg)
        if self.hold is not None and self.hold(src, dst, msg):
            self.held.append((src, dst, msg))
            return
        super()._send(src, dst, msg)
