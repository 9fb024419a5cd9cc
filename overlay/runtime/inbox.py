"""The driver's inbox: one bounded queue of core inputs, shared fairly between peers.

Why: every input the cores get (frames from peers, transport events, API commands)
waits in one queue in front of one loop. With a plain FIFO bound, a peer that floods
us while the daemon is short of CPU fills the queue, and what is dropped then is
whoever comes next: a SWIM ack from a good peer as likely as a flood frame, so a good
peer dropped out of a flooded node's view (docs/reliability.md, "A flood on a
CPU-starved daemon"). The invariant kept here: a bad peer can cost us its own inputs,
never another peer's nor our own.

Sources: a `Received` is its peer's; so is any other input naming a `peer`
(`Connected`, `Disconnected`, `PeerUnreachable`, `RequestFailed`…), so that one
peer's inputs keep the order the transport reported them in. Everything else (API
commands, service inputs) is the `LOCAL` source. Timers are not queued here (the
driver fires them from its heap).

Admission (`offer`), O(1) per input:
- Only a `Received` offered without waiting is ever refused for fairness; other
  inputs (connectivity, our own) are refused only at the hard bound.
- Above `high_water` queued inputs, a `Received` from a peer that already holds at
  least the mean of the peers with inputs queued (`peer_queued / active_peers`) is
  refused and counted against it (`over_share`): the heavy sender loses first, and
  the room between `high_water` and `capacity` stays for everyone else. A flooder
  alone holds at most `high_water`.
- At `capacity` (or while a local caller waits for room), every input offered without
  waiting is refused (`full`).

Service (`take`), O(1): round robin over the sources with inputs queued, one input
each turn, FIFO within a source. Refusing the flooder's excess is not enough on its
own: behind a FIFO of `high_water` flood inputs a good peer's ack would still wait
longer than SWIM's probe timeout (0.5 s in `lan`) on a slow loop; round robin serves
it within one input per active source.

Bounds: at most `capacity` inputs queued; per-peer drop counts for at most
`max_tracked` peers (drops by later peers are counted in `untracked_drops`).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from overlay.core.effects import Received
from overlay.core.ids import PeerId

#: The source of inputs that name no peer (our own: API, services).
LOCAL: Final = None
#: A peer's source is its id's bytes: `bytes` caches its hash, `PeerId` hashes in
#: Python (a third of the inbox's cost per input when keyed by `PeerId`).
Source = bytes | None


@dataclass
class InboxStats:
    #: Inputs refused at the hard bound (or while a local caller waited for room).
    full: int = 0
    #: `Received` refused because its peer held more than its share above high water.
    over_share: int = 0
    #: Drops by peers beyond `max_tracked` (not named in `by_peer`).
    untracked_drops: int = 0
    #: Per-peer drops (both kinds) by peer id bytes, for at most `max_tracked` peers.
    by_peer: dict[bytes, int] = field(default_factory=dict)

    @property
    def dropped_by_peer(self) -> dict[PeerId, int]:
        return {PeerId(raw): n for raw, n in self.by_peer.items()}


def source_of(inp: object) -> Source:
    if type(inp) is Received:  # the hot path: most inputs are frames from peers
        return inp.peer.raw
    peer = getattr(inp, "peer", None)
    return peer.raw if isinstance(peer, PeerId) else LOCAL


class FairInbox:
    """Bounded per-source queues served round robin; see the module docstring."""

    def __init__(self, capacity: int, high_water: int | None = None,
                 max_tracked: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("inbox capacity must be at least 1")
        self.capacity = capacity
        #: Default half: a flooder alone keeps half the inbox, the other half stays
        #: for good peers and local inputs. `high_water >= capacity` turns fairness off.
        self.high_water = capacity // 2 if high_water is None else high_water
        self.max_tracked = max_tracked
        self.stats = InboxStats()
        self._queues: dict[Source, deque[object]] = {}
        self._ring: deque[Source] = deque()  # sources with inputs queued, in turn order
        self._total = 0
        #: Local callers waiting for room (the driver's `submit_wait`): while any
        #: wait, inputs offered without waiting are refused so the room goes to them.
        self.local_waiting = 0

    def __len__(self) -> int:
        return self._total

    def has_room(self) -> bool:
        return self._total < self.capacity

    def offer(self, inp: object) -> bool:
        """Queue `inp` if admitted (module docstring); False if refused (counted)."""
        # Inlined (source_of, _append): this runs once per frame from the network.
        frame = type(inp) is Received
        src: Source = inp.peer.raw if frame else source_of(inp)  # type: ignore[attr-defined]
        queues = self._queues
        q = queues.get(src)
        total = self._total
        if total >= self.capacity or self.local_waiting:
            self._count_drop(src, over_share=False)
            return False
        if q is None:
            q = queues[src] = deque()
            self._ring.append(src)
        elif frame and total >= self.high_water and src is not LOCAL:
            local = queues.get(LOCAL)
            peer_queued = total - (len(local) if local else 0)
            active = len(queues) - (1 if local else 0)
            if len(q) * active >= peer_queued:  # at or above the mean of active peers
                self._count_drop(src, over_share=True)
                return False
        q.append(inp)
        self._total = total + 1
        return True

    def put(self, inp: object) -> None:
        """Queue `inp` regardless of fairness (a local caller that waited for room)."""
        if self._total >= self.capacity:
            raise OverflowError("inbox full: wait for has_room() first")
        src = source_of(inp)
        self._append(src, self._queues.get(src), inp)

    def take(self) -> object | None:
        """The next input, round robin over sources; None if empty."""
        if not self._total:
            return None
        src = self._ring.popleft()
        q = self._queues[src]
        inp = q.popleft()
        if q:
            self._ring.append(src)
        else:
            del self._queues[src]
        self._total -= 1
        return inp

    def top_droppers(self, n: int = 5) -> list[tuple[PeerId, int]]:
        """The peers with the most inputs dropped (read on a stats request, not per input)."""
        top = heapq.nlargest(n, self.stats.by_peer.items(), key=lambda kv: kv[1])
        return [(PeerId(raw), k) for raw, k in top]

    def _append(self, src: Source, q: deque[object] | None, inp: object) -> None:
        if q is None:
            q = self._queues[src] = deque()
            self._ring.append(src)
        q.append(inp)
        self._total += 1

    def _count_drop(self, src: Source, *, over_share: bool) -> None:
        st = self.stats
        if over_share:
            st.over_share += 1
        else:
            st.full += 1
        if src is LOCAL:
            return
        by_peer = st.by_peer
        n = by_peer.get(src)
        if n is not None:
            by_peer[src] = n + 1
        elif len(by_peer) < self.max_tracked:
            by_peer[src] = 1
        else:
            st.untracked_drops += 1
