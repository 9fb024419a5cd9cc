"""Kademlia routing table: k-buckets indexed by common-prefix length (CPL) with self.

Layout: bucket `c` holds peers whose key shares exactly `c` leading bits with ours
(go-libp2p-kbucket's layout). This is equivalent to the paper's "split the bucket that
contains our own id" (Maymounkov & Mazières 2002, §4.2): only ~log2(N/k) buckets are
ever non-empty, and only those exist (a dict keyed by CPL), so a table costs a few
hundred pointers.

Rules (Kademlia §2.2, §4.1):
- A peer enters the table only from real traffic (`seen`): it answered us or asked us.
- Within a bucket, order is least-recently-seen first; `seen` moves a peer to the tail.
- A full bucket does not drop its oldest entry for a newcomer. The newcomer goes to
  the bucket's replacement cache and, if the oldest entry has not been heard from for
  `probe_after_s`, it is *probed* (the caller sends a PING); only when that probe fails
  (`failed`) is the entry evicted, and the most recently seen replacement takes its
  place. (Probing a recently heard peer proves nothing and, since the probe makes the
  probed node `seen` us in turn, would start a chain of PINGs across the network.)
- A peer that fails `max_fails` RPCs in a row is evicted (sooner when a replacement
  is waiting), as in §4.1 "stale contacts".

Invariants (checked by `check_invariants`, exercised by the property tests): every
bucket holds ≤ k peers, every replacement cache ≤ `replacement_size`, our own id is
never present, a peer is in at most one place, and every peer sits in the bucket its
CPL names.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass

from overlay.core.ids import KEY_BITS, PeerId


@dataclass(slots=True)
class TableStats:
    added: int = 0
    evicted: int = 0
    replacements_dropped: int = 0
    probes_started: int = 0
    probes_survived: int = 0


class Bucket:
    __slots__ = ("last_refresh", "peers", "probing", "replacements", "seen_at")

    def __init__(self, now: float) -> None:
        #: Least-recently-seen first.
        self.peers: list[PeerId] = []
        #: When each of `peers` was last heard from (parallel to `peers`).
        self.seen_at = array("d")
        #: Most recently seen last; bounded by `replacement_size`.
        self.replacements: list[PeerId] = []
        #: The LRS entry being pinged before it may be evicted, if any.
        self.probing: PeerId | None = None
        #: Last time a lookup covered this bucket (refresh bookkeeping).
        self.last_refresh = now


class RoutingTable:
    __slots__ = ("_addrs", "_buckets", "_fails", "k", "max_fails", "probe_after_s",
                 "replacement_size", "self_id", "self_key", "stats")

    def __init__(
        self,
        self_id: PeerId,
        k: int = 20,
        replacement_size: int = 10,
        max_fails: int = 2,
        probe_after_s: float = 600.0,
    ) -> None:
        self.self_id = self_id
        self.probe_after_s = probe_after_s
        self.self_key = self_id.key
        self.k = k
        self.replacement_size = replacement_size
        self.max_fails = max_fails
        self._buckets: dict[int, Bucket] = {}
        #: Multiaddrs of peers in buckets or replacement caches; only non-empty ones kept.
        self._addrs: dict[PeerId, tuple[bytes, ...]] = {}
        #: Consecutive RPC failures of peers in buckets; absent means zero.
        self._fails: dict[PeerId, int] = {}
        self.stats = TableStats()

    # ------------------------------------------------------------------ queries

    def cpl(self, key: int) -> int:
        return KEY_BITS - (key ^ self.self_key).bit_length()

    def bucket(self, cpl: int) -> Bucket | None:
        return self._buckets.get(cpl)

    def bucket_cpls(self) -> list[int]:
        return sorted(self._buckets)

    def __len__(self) -> int:
        return sum(len(b.peers) for b in self._buckets.values())

    def __contains__(self, peer: PeerId) -> bool:
        b = self._buckets.get(self.cpl(peer.key))
        return b is not None and peer in b.peers

    def peers(self) -> list[PeerId]:
        out: list[PeerId] = []
        for c in sorted(self._buckets):
            out.extend(self._buckets[c].peers)
        return out

    def addrs(self, peer: PeerId) -> tuple[bytes, ...]:
        return self._addrs.get(peer, ())

    def closest(self, key: int, n: int, exclude: PeerId | None = None) -> list[PeerId]:
        """The `n` peers in the table closest to `key` by XOR, nearest first.

        Peers in bucket c differ from us first at bit c, so their distance to `key`
        shares the top bits of (key ^ self): the bucket with c = cpl(key) and the
        buckets deeper than it hold the nearest peers. We still rank every candidate
        exactly; the table is a few hundred entries.
        """
        cands: list[PeerId] = []
        for b in self._buckets.values():
            cands.extend(b.peers)
        if exclude is not None and exclude in cands:
            cands.remove(exclude)
        if len(cands) <= n:
            cands.sort(key=lambda p: p.key ^ key)
            return cands
        return heapq.nsmallest(n, cands, key=lambda p: p.key ^ key)

    def lrs_probing(self) -> list[PeerId]:
        return [b.probing for c, b in sorted(self._buckets.items()) if b.probing is not None]

    # ------------------------------------------------------------------ updates

    def has_room(self, peer: PeerId) -> bool:
        """Whether `peer` would enter its bucket now (not only its replacement cache)."""
        b = self._buckets.get(self.cpl(peer.key))
        return b is None or len(b.peers) < self.k or peer in b.peers

    def seen(self, peer: PeerId, now: float, addrs: tuple[bytes, ...] = ()) -> PeerId | None:
        """`peer` answered us or asked us something. Return a peer to PING, if any.

        The returned peer is the least-recently-seen entry of a full bucket; the caller
        pings it and reports the outcome with `seen` (alive) or `failed` (evict).
        """
        if peer == self.self_id:
            return None
        c = self.cpl(peer.key)
        b = self._buckets.get(c)
        if b is None:
            b = self._buckets[c] = Bucket(now)
        if addrs:
            self._addrs[peer] = addrs
        if peer in b.peers:
            i = b.peers.index(peer)
            del b.peers[i]
            del b.seen_at[i]
            b.peers.append(peer)
            b.seen_at.append(now)
            self._fails.pop(peer, None)
            if b.probing == peer:
                b.probing = None
                self.stats.probes_survived += 1
            return None
        if len(b.peers) < self.k:
            if peer in b.replacements:
                b.replacements.remove(peer)
            b.peers.append(peer)
            b.seen_at.append(now)
            self.stats.added += 1
            return None
        # Full bucket: remember the newcomer, probe the oldest entry (once at a time).
        if peer in b.replacements:
            b.replacements.remove(peer)
        b.replacements.append(peer)
        if len(b.replacements) > self.replacement_size:
            dropped = b.replacements.pop(0)
            self._addrs.pop(dropped, None)
            self.stats.replacements_dropped += 1
        if b.probing is None and now - b.seen_at[0] >= self.probe_after_s:
            b.probing = b.peers[0]
            self.stats.probes_started += 1
            return b.probing
        return None

    def failed(self, peer: PeerId) -> bool:
        """An RPC to `peer` failed (timeout, unreachable, or a failed probe).

        Returns True when the peer was evicted from its bucket.
        """
        b = self._buckets.get(self.cpl(peer.key))
        if b is None or self._drop_replacement(b, peer) or peer not in b.peers:
            return False
        fails = self._fails.get(peer, 0) + 1
        if b.probing == peer or b.replacements or fails >= self.max_fails:
            self._evict(b, peer)
            return True
        self._fails[peer] = fails
        return False

    def remove(self, peer: PeerId) -> bool:
        """Evict unconditionally (a misbehaving peer); a replacement is promoted."""
        b = self._buckets.get(self.cpl(peer.key))
        if b is None or self._drop_replacement(b, peer):
            return False
        if peer in b.peers:
            self._evict(b, peer)
            return True
        return False

    def _drop_replacement(self, b: Bucket, peer: PeerId) -> bool:
        """Forget `peer` if it waits in `b`'s replacement cache (True if it did)."""
        if peer not in b.replacements:
            return False
        b.replacements.remove(peer)
        self._addrs.pop(peer, None)
        return True

    def _evict(self, b: Bucket, peer: PeerId) -> None:
        i = b.peers.index(peer)
        del b.peers[i]
        del b.seen_at[i]
        self._fails.pop(peer, None)
        self._addrs.pop(peer, None)
        self.stats.evicted += 1
        if b.probing == peer:
            b.probing = None
        if b.replacements:
            b.peers.append(b.replacements.pop())  # most recently seen replacement
            b.seen_at.append(b.seen_at[-1] if b.seen_at else 0.0)
            self.stats.added += 1

    def mark_refreshed(self, key: int, now: float) -> None:
        """A lookup for `key` completed: its bucket (and all shallower ones it passed) is fresh."""
        self.touch(min(self.cpl(key), KEY_BITS - 1), now)

    def touch(self, cpl: int, now: float) -> None:
        b = self._buckets.get(cpl)
        if b is None:
            b = self._buckets[cpl] = Bucket(now)
        b.last_refresh = now

    def stale_cpls(self, now: float, interval_s: float, max_cpl: int) -> list[int]:
        """CPLs ≤ min(max_cpl, deepest bucket) whose last refresh is older than interval_s.

        Buckets that do not exist yet (no peer seen at that depth) count as stale, so
        a sparse table fills itself in.
        """
        if not self._buckets:
            return []
        deepest = min(max(self._buckets), max_cpl)
        out = []
        for c in range(deepest + 1):
            b = self._buckets.get(c)
            if b is None or now - b.last_refresh >= interval_s:
                out.append(c)
        return out

    def touch_all(self, now: float) -> None:
        for b in self._buckets.values():
            b.last_refresh = now

    def estimate_network_size(self) -> float:
        """N ≈ mean over i of i·2^256 / d_i for the i-th closest peer to us (d_i its
        XOR distance): with N uniform keys the i-th order statistic has E[d_i] ≈ i·2^256/N."""
        near = self.closest(self.self_key, self.k)
        if not near:
            return 1.0
        total = 0.0
        for i, p in enumerate(near, 1):
            d = (p.key ^ self.self_key) or 1
            total += i * float(1 << KEY_BITS) / float(d)
        return max(1.0, total / len(near)) + 1.0

    # ------------------------------------------------------------------ checks

    def check_invariants(self) -> None:
        where: dict[PeerId, int] = {}
        for c, b in self._buckets.items():
            assert len(b.peers) <= self.k, f"bucket {c} holds {len(b.peers)} > k"
            assert len(b.replacements) <= self.replacement_size, "replacement cache overflow"
            for p in b.peers + b.replacements:
                assert p != self.self_id, "own id in the table"
                assert self.cpl(p.key) == c, "peer in the wrong bucket"
                assert p not in where, "peer present twice"
                where[p] = c
            assert b.probing is None or b.probing in b.peers, "probing a non-member"
            assert len(b.seen_at) == len(b.peers), "seen_at out of step"
        for p in self._fails:
            assert p in where, "fail count for an absent peer"
        for p in self._addrs:
            assert p in where, "addresses kept for an absent peer"
