"""Iterative Kademlia lookup as a pure state machine (Maymounkov & Mazières 2002, §2.3).

A `Lookup` knows nothing about messages or time. The core asks it which peers to query
(`next_queries`, at most α in flight, only among the k closest not-failed candidates),
and reports each answer (`on_answer`) or failure (timeout, unreachable: `on_failure`).
It is `finished()` once the k closest candidates that have not failed have all answered
— the paper's termination rule — or when no candidate is left to ask. A query that
outlives the core's adaptive soft timeout is reported with `on_stall`: it frees its α
slot and leaves the window, so one unreachable peer (a NAT'd node in someone's table)
costs about one RTO instead of the full RPC timeout; a late answer still counts.

Each candidate carries the hop at which it was learned (peers from our own table are
hop 1); `hops()` is the deepest hop among the k closest answered peers, i.e. the number
of sequential request rounds the result needed.

Bounded: at most `max_candidates` peers are tracked; the farthest never-queried ones
are dropped first (counted in `dropped`).

`DisjointLookup` runs d such lookups over disjoint peer sets (S/Kademlia, Baumgart &
Mies 2007, §4.4): a peer learned on one path is never queried by another, so one
adversarial region can capture at most the paths that pass through it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from overlay.core.ids import PeerId

NEW = 0
WAITING = 1
ANSWERED = 2
FAILED = 3
#: Asked, no answer within the soft timeout: no longer holds one of the α slots nor a
#: place in the window, but a late answer still counts (Kademlia §2.3: "nodes that
#: fail to respond quickly are removed from consideration until and unless they do").
STALLED = 4


class Lookup:
    __slots__ = ("_claims", "_info", "_order", "_path", "alpha", "dropped", "inflight", "k",
                 "max_candidates", "queried", "self_id", "target")

    def __init__(
        self,
        target: int,
        self_id: PeerId,
        *,
        k: int = 20,
        alpha: int = 3,
        max_candidates: int | None = None,
        claims: dict[PeerId, int] | None = None,
        path: int = 0,
    ) -> None:
        self.target = target
        self.self_id = self_id
        self.k = k
        self.alpha = alpha
        self.max_candidates = max_candidates if max_candidates is not None else 4 * k
        #: (distance, peer) ascending.
        self._order: list[tuple[int, PeerId]] = []
        #: peer -> hop << 3 | state
        self._info: dict[PeerId, int] = {}
        self.inflight = 0
        self.queried = 0
        self.dropped = 0
        self._claims = claims
        self._path = path

    # ------------------------------------------------------------------ inputs

    def add(self, peers: Iterable[PeerId], hop: int) -> int:
        """Add candidates learned at `hop`; returns how many were new."""
        added = 0
        for p in peers:
            if p == self.self_id or p in self._info:
                continue
            if self._claims is not None:
                owner = self._claims.setdefault(p, self._path)
                if owner != self._path:
                    continue
            self._info[p] = hop << 3 | NEW
            bisect.insort(self._order, (p.key ^ self.target, p))
            added += 1
        if len(self._order) > self.max_candidates:
            self._trim()
        return added

    def _trim(self) -> None:
        i = len(self._order) - 1
        while len(self._order) > self.max_candidates and i >= 0:
            p = self._order[i][1]
            if self._info[p] & 7 == NEW:
                del self._order[i]
                del self._info[p]
                self.dropped += 1
            i -= 1

    def on_answer(self, peer: PeerId, closer: Sequence[PeerId]) -> bool:
        """`peer` answered with `closer`. False (and no change) if we were not waiting on it."""
        info = self._info.get(peer)
        if info is None or info & 7 not in (WAITING, STALLED):
            return False
        if info & 7 == WAITING:
            self.inflight -= 1
        self._info[peer] = (info & ~7) | ANSWERED
        self.add(closer, (info >> 3) + 1)
        return True

    def on_failure(self, peer: PeerId) -> bool:
        info = self._info.get(peer)
        if info is None or info & 7 not in (WAITING, STALLED):
            return False
        if info & 7 == WAITING:
            self.inflight -= 1
        self._info[peer] = (info & ~7) | FAILED
        return True

    def on_stall(self, peer: PeerId) -> bool:
        """`peer` has not answered within the soft timeout: free its slot (STALLED)."""
        info = self._info.get(peer)
        if info is None or info & 7 != WAITING:
            return False
        self._info[peer] = (info & ~7) | STALLED
        self.inflight -= 1
        return True

    # ------------------------------------------------------------------ decisions

    def _window(self) -> Iterator[tuple[PeerId, int]]:
        """(peer, state) of the k closest candidates that have not failed or stalled,
        closest first: the only peers a lookup asks, and the ones its termination rule
        waits for."""
        window = 0
        info = self._info
        for _, p in self._order:
            st = info[p] & 7
            if st in (FAILED, STALLED):
                continue
            yield p, st
            window += 1
            if window >= self.k:
                return

    def next_queries(self) -> list[PeerId]:
        """Peers to query now (marked as waiting): the closest new ones among the k
        closest not-failed candidates, keeping at most α in flight."""
        out: list[PeerId] = []
        if self.inflight >= self.alpha:
            return out
        info = self._info
        for p, st in self._window():
            if st == NEW:
                info[p] = (info[p] & ~7) | WAITING
                self.inflight += 1
                self.queried += 1
                out.append(p)
                if self.inflight >= self.alpha:
                    break
        return out

    def finished(self) -> bool:
        full = 0
        for _, st in self._window():
            if st != ANSWERED:
                return False
            full += 1
        return full >= self.k or self.inflight == 0

    def state(self, peer: PeerId) -> int | None:
        info = self._info.get(peer)
        return None if info is None else info & 7

    def waiting(self) -> list[PeerId]:
        return [p for _, p in self._order if self._info[p] & 7 == WAITING]

    def outstanding(self) -> int:
        """Queries still unanswered, waiting or stalled: answers that may yet come."""
        return sum(1 for i in self._info.values() if i & 7 in (WAITING, STALLED))

    # ------------------------------------------------------------------ results

    def closest(self, n: int | None = None) -> list[PeerId]:
        """Answered peers, nearest first (at most n, default k)."""
        n = self.k if n is None else n
        out: list[PeerId] = []
        for _, p in self._order:
            if self._info[p] & 7 == ANSWERED:
                out.append(p)
                if len(out) >= n:
                    break
        return out

    def hops(self) -> int:
        best = 0
        for p in self.closest():
            best = max(best, self._info[p] >> 3)
        return best

    def __len__(self) -> int:
        return len(self._order)


class DisjointLookup:
    """d lookups over disjoint candidate sets (S/Kademlia §4.4), with one interface.

    Seeds are dealt round-robin to the paths, nearest first. The result is the k
    closest answered peers over all paths.
    """

    __slots__ = ("claims", "k", "paths", "target")

    def __init__(
        self, target: int, self_id: PeerId, *, k: int, alpha: int, d: int,
        max_candidates: int | None = None,
    ) -> None:
        self.target = target
        self.k = k
        self.claims: dict[PeerId, int] = {}
        per_path_alpha = max(1, alpha)
        self.paths = [
            Lookup(target, self_id, k=k, alpha=per_path_alpha, max_candidates=max_candidates,
                   claims=self.claims, path=i)
            for i in range(d)
        ]

    def add(self, peers: Iterable[PeerId], hop: int) -> int:
        seeds = sorted(dict.fromkeys(peers), key=lambda p: p.key ^ self.target)
        n = 0
        for i, p in enumerate(seeds):
            n += self.paths[i % len(self.paths)].add((p,), hop)
        return n

    def path_of(self, peer: PeerId) -> Lookup | None:
        i = self.claims.get(peer)
        return None if i is None else self.paths[i]

    def on_answer(self, peer: PeerId, closer: Sequence[PeerId]) -> bool:
        lk = self.path_of(peer)
        return lk is not None and lk.on_answer(peer, closer)

    def on_failure(self, peer: PeerId) -> bool:
        lk = self.path_of(peer)
        return lk is not None and lk.on_failure(peer)

    def on_stall(self, peer: PeerId) -> bool:
        lk = self.path_of(peer)
        return lk is not None and lk.on_stall(peer)

    def next_queries(self) -> list[PeerId]:
        out: list[PeerId] = []
        for lk in self.paths:
            out.extend(lk.next_queries())
        return out

    def finished(self) -> bool:
        return all(lk.finished() for lk in self.paths)

    def state(self, peer: PeerId) -> int | None:
        lk = self.path_of(peer)
        return None if lk is None else lk.state(peer)

    @property
    def inflight(self) -> int:
        return sum(lk.inflight for lk in self.paths)

    def outstanding(self) -> int:
        return sum(lk.outstanding() for lk in self.paths)

    @property
    def queried(self) -> int:
        return sum(lk.queried for lk in self.paths)

    @property
    def dropped(self) -> int:
        return sum(lk.dropped for lk in self.paths)

    def closest(self, n: int | None = None) -> list[PeerId]:
        n = self.k if n is None else n
        allp: list[PeerId] = []
        for lk in self.paths:
            allp.extend(lk.closest(n))
        allp.sort(key=lambda p: p.key ^ self.target)
        return allp[:n]

    def hops(self) -> int:
        return max(lk.hops() for lk in self.paths)

    def __len__(self) -> int:
        return sum(len(lk) for lk in self.paths)
