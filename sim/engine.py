"""Event heap and virtual clock.

One heap of `(time, seq, callback, arg)` entries; `seq` breaks ties so that equal
times run in scheduling order and a seed gives byte-identical runs. Nothing here
reads a wall clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Engine:
    """A virtual clock with an event heap."""

    __slots__ = ("_heap", "_seq", "events_run", "now", "on_pause", "seq_now")

    def __init__(self, start: float = 0.0) -> None:
        # `seq` is an int for every entry pushed here; the world may push a float
        # between two ints to put an entry back where it would have been (parked ticks).
        self._heap: list[tuple[float, float, Callable[[Any], None], Any]] = []
        self._seq = 0
        self.now = start
        self.events_run = 0
        #: Sequence number of the event being run: with `now` it places the running
        #: event among equal times (the world's parked ticks need it to order ties).
        self.seq_now = 0.0
        #: Called with `done` when `run_until` returns (True: every event due at or
        #: before `until` ran): the world settles its parked ticks so `events_run` and
        #: its counters read as if every tick had been a heap event.
        self.on_pause: Callable[[bool], None] | None = None

    def at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run `fn(arg)` at virtual time `when` (never earlier than now)."""
        if when < self.now:
            when = self.now
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, arg))

    def after(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.at(self.now + delay, fn, arg)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float, max_events: int | None = None) -> int:
        """Run every event due at or before `until`; leave the clock at `until`."""
        heap = self._heap
        pop = heapq.heappop
        ran = 0
        done = True
        if max_events is None:
            # The loop every simulation runs, without the `max_events` test per event.
            while heap and heap[0][0] <= until:
                when, seq, fn, arg = pop(heap)
                self.now = when
                self.seq_now = seq
                fn(arg)
                ran += 1
            self.now = max(self.now, until)
        else:
            while heap and heap[0][0] <= until:
                when, seq, fn, arg = pop(heap)
                self.now = when
                self.seq_now = seq
                fn(arg)
                ran += 1
                if ran >= max_events:
                    done = False
                    break
            else:
                self.now = max(self.now, until)
        self.events_run += ran
        if self.on_pause is not None:
            self.on_pause(done)
        return ran

    def run(self, max_events: int | None = None) -> int:
        """Run until the heap is empty (or `max_events` ran)."""
        return self.run_until(float("inf"), max_events)
