"""Sweep bookkeeping: which key regions a provide sweep explores, and when.

A sweep announces a set of keys one key region at a time (dht/providers.py has the
region maths; docs/dht.md, "Sweep"). This module holds a sweep's plan and counters;
dht/reprovide.py runs the region lookups and sends the ADD_PROVIDERs.

Pacing (kubo's sweeping reprovider): a first announcement starts every region at
once; a reprovide over `spread_s` starts region r of 2^p at start + spread_s·r/2^p —
its keyspace position — so the lookups and messages are an even trickle over the
interval and each key comes round at the same phase every cycle. Keys provided
during a paced sweep join it while their region has not started (`add_keys`); a new
cycle drops the regions the previous one never started (`retire`).

Pure: no clock, no effects; `start_times` is a table-testable function.
"""

from __future__ import annotations

from collections import deque

from dht import providers as prov
from overlay.core.ids import PeerId


def start_times(regions: list[int], bits: int, start: float,
                spread_s: float) -> list[float]:
    """When each region (its p-bit prefix) starts: start + spread_s·region/2^bits."""
    return [start + spread_s * r / (1 << bits) for r in regions]


class Region:
    """One key region being explored: its keys, the peers found, lookups outstanding."""

    __slots__ = ("mhs", "peers", "pending")

    def __init__(self, mhs: list[bytes]) -> None:
        self.mhs = mhs
        self.peers: dict[PeerId, None] = {}
        self.pending = 0


class Sweep:
    """One sweep's plan (regions by start time), its running lookups and counters."""

    __slots__ = ("bits", "keys", "lookups", "messages", "paced", "pending", "queue",
                 "regions", "request_id", "running", "timer_at")

    def __init__(self, request_id: int, keys: dict[bytes, int], bits: int, now: float,
                 spread_s: float = 0.0) -> None:
        self.request_id = request_id
        #: multihash → dht key of every key this sweep announces.
        self.keys = keys
        self.bits = bits
        self.paced = spread_s > 0
        #: (start time, region prefix, multihashes), in start order.
        self.queue: deque[tuple[float, int, list[bytes]]] = deque()
        #: Paced sweeps: prefix → multihashes of every region not started yet.
        self.pending: dict[int, list[bytes]] = {}
        groups = prov.group_by_region(keys, bits)
        times = start_times([r for r, _ in groups], bits, now, spread_s)
        for (region, mhs), at in zip(groups, times, strict=True):
            self.queue.append((at, region, mhs))
            if self.paced:
                self.pending[region] = mhs
        self.running = 0
        self.regions = 0
        self.lookups = 0
        self.messages = 0
        #: Deadline of this sweep's ("sweep", id) timer, if armed (stale firings differ).
        self.timer_at: float | None = None

    def add_keys(self, keys: dict[bytes, int]) -> int:
        """Paced sweeps: add keys whose region has not started. Returns how many."""
        added = 0
        if not self.paced or not self.pending:
            return added
        for mh, key in keys.items():
            region = self.pending.get(prov.region_of(key, self.bits))
            if region is not None and mh not in self.keys:
                region.append(mh)
                self.keys[mh] = key
                added += 1
        return added

    def next_due(self, now: float) -> list[bytes] | None:
        """Take the next region if its start time has come (None: nothing due)."""
        if not self.queue or self.queue[0][0] > now:
            return None
        _, region, mhs = self.queue.popleft()
        self.pending.pop(region, None)
        return mhs

    def next_start(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def retire(self) -> None:
        """Drop regions not started yet (a new cycle covers their keys)."""
        self.queue.clear()
        self.pending.clear()

    def done(self) -> bool:
        return not self.queue and self.running == 0
