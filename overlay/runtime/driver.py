"""The trio driver: runs one sans-IO core (the composed node) on a real clock.

Readers (transport handlers, the control API) push inputs into a bounded inbox
shared fairly between peers (inbox.py: a flooding peer loses its own excess inputs,
never a good peer's, and is served one input per turn like any other source); one
loop takes the next input or wakes at the next timer deadline, calls
`core.handle(inp, now)` and carries out the effects. No protocol logic lives here
(STYLE.md: "a driver that is ~30 lines: send what is pending, re-arm the timer").

Time: cores see `now` in seconds on the wall-clock scale (signed records carry
absolute expiry times that other nodes must agree on), but the driver measures it
with trio's monotonic clock plus a fixed offset taken once at start, so `now` never
jumps backwards when the system clock is stepped. Under `trio.testing.MockClock`
the same code runs on virtual time.

Timers: `SetTimer(id, at)` replaces any pending deadline for `id`; a heap holds
(at, seq, id) and stale heap entries are skipped when popped.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from overlay.core.effects import (
    CancelTimer,
    Disconnect,
    Effect,
    Emit,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
)
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId
from overlay.runtime.inbox import FairInbox

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.driver")


class Core(Protocol):
    """What the driver runs; inputs are opaque to it (it only counts them by type)."""

    def handle(self, inp: object, now: float) -> list[Effect]: ...


@dataclass
class DriverStats:
    inputs: int = 0
    #: Every input refused by the inbox (`inputs_over_share` included).
    inputs_dropped: int = 0
    #: Of those, a heavy peer's inputs refused above the inbox's high-water mark.
    inputs_over_share: int = 0
    timers_fired: int = 0
    sends: int = 0
    emits: int = 0
    handler_errors: int = 0
    max_handle_s: float = 0.0
    by_input: dict[str, int] = field(default_factory=dict)


class Driver:
    """Owns the core. Everything that touches the core goes through `submit`."""

    def __init__(
        self,
        core: Core,
        *,
        send: Callable[[PeerId, object], None],
        emit: Callable[[object], None] = lambda event: None,
        disconnect: Callable[[PeerId, str], None] = lambda peer, reason: None,
        inbox_size: int = 4096,
        inbox_high_water: int | None = None,
        wall_offset: float | None = None,
    ) -> None:
        self.core = core
        self._send = send
        self._emit = emit
        self._disconnect = disconnect
        self.inbox = FairInbox(inbox_size, inbox_high_water)
        self._ready = trio.lowlevel.ParkingLot()  # the loop, waiting for an input
        self._room = trio.lowlevel.ParkingLot()  # `submit_wait` callers, waiting for room
        self._timers: dict[TimerId, float] = {}
        self._heap: list[tuple[float, int, TimerId]] = []
        self._seq = itertools.count()
        self._offset = wall_offset
        self.stats = DriverStats()
        self._drop_logged_at = float("-inf")

    # ------------------------------------------------------------ inputs

    def now(self) -> float:
        if self._offset is None:
            self._offset = time.time() - trio.current_time()
        return trio.current_time() + self._offset

    def submit(self, inp: object) -> bool:
        """Queue an input without waiting; False (and counted) if the inbox refuses it.

        Network readers use this: a flood from one peer then costs that peer's
        messages (refused above the inbox's high-water mark while it holds more than
        its share), never the loop's memory nor another peer's messages.
        """
        if self.inbox.offer(inp):
            if self._ready:
                self._ready.unpark()
            return True
        st = self.stats
        st.inputs_dropped += 1
        st.inputs_over_share = self.inbox.stats.over_share
        now = trio.current_time()
        if now - self._drop_logged_at >= 1.0:  # rate-limited: a flood is many drops
            self._drop_logged_at = now
            peer = getattr(inp, "peer", None)
            log.debug("input_dropped_inbox_full", input=type(inp).__name__,
                      peer=str(peer) if peer is not None else None,
                      total=st.inputs_dropped, over_share=st.inputs_over_share)
        return False

    async def submit_wait(self, inp: object) -> None:
        """Queue an input, waiting for room (local commands must not be dropped).

        While a caller waits, inputs offered by `submit` are refused, so the room
        freed by the loop goes to the waiting local command first.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self.inbox
        inbox.local_waiting += 1
        try:
            while not inbox.has_room():
                await self._room.park()
        finally:
            inbox.local_waiting -= 1
        inbox.put(inp)
        if self._ready:
            self._ready.unpark()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def top_droppers(self, n: int = 5) -> list[tuple[PeerId, int]]:
        """The peers whose inputs the inbox refused most (for /v1/stats drops)."""
        return self.inbox.top_droppers(n)

    def handle_now(self, inp: object) -> list[Effect]:
        """Run one input synchronously inside the trio thread (for the control API's
        queries that need an answer in the same call). Effects are carried out."""
        return self._run(inp)

    # ------------------------------------------------------------ loop

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            deadline = self._next_deadline()
            if self.inbox:
                await trio.lowlevel.checkpoint()  # let readers run between inputs
            else:
                with trio.move_on_at(self._to_trio(deadline) if deadline is not None
                                     else float("inf")):
                    await self._ready.park()  # `submit` unparks us
            inp = self.inbox.take()  # None: woken by the deadline
            if inp is not None:
                if self._room:
                    self._room.unpark()
                self._run(inp)
            self._fire_due()

    def _to_trio(self, at: float) -> float:
        return at - (self._offset if self._offset is not None else 0.0)

    def _next_deadline(self) -> float | None:
        heap = self._heap
        while heap and self._timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # cancelled or replaced
        return heap[0][0] if heap else None

    def _fire_due(self) -> None:
        now = self.now()
        # Bounded: at most the timers pending now; ones set while firing wait a turn.
        for _ in range(len(self._heap)):
            deadline = self._next_deadline()
            if deadline is None or deadline > now:
                return
            _, _, timer = heapq.heappop(self._heap)
            del self._timers[timer]
            self.stats.timers_fired += 1
            self._run(TimerFired(timer))

    def _run(self, inp: object) -> list[Effect]:
        self.stats.inputs += 1
        name = type(inp).__name__
        self.stats.by_input[name] = self.stats.by_input.get(name, 0) + 1
        started = time.perf_counter()
        try:
            effects = self.core.handle(inp, self.now())
        except LocalProtocolError:
            raise  # our bug: crash loudly
        except Exception:
            # A core must not crash on remote input; if it does, drop that input,
            # keep the node up, and make the bug visible.
            self.stats.handler_errors += 1
            log.exception("core_handler_failed", input=name)
            return []
        self.stats.max_handle_s = max(self.stats.max_handle_s, time.perf_counter() - started)
        self._apply(effects)
        return effects

    def _apply(self, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Send):
                self.stats.sends += 1
                self._send(eff.peer, eff.msg)
            elif isinstance(eff, SetTimer):
                self._timers[eff.timer] = eff.at
                heapq.heappush(self._heap, (eff.at, next(self._seq), eff.timer))
            elif isinstance(eff, CancelTimer):
                self._timers.pop(eff.timer, None)
            elif isinstance(eff, Emit):
                self.stats.emits += 1
                self._emit(eff.event)
            elif isinstance(eff, Disconnect):
                log.info("peer_disconnected_by_core", peer=str(eff.peer), reason=eff.reason)
                self._disconnect(eff.peer, eff.reason)
