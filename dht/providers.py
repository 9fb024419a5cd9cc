"""Provider records and the batched ("sweep") reprovide plan.

Provider store: multihash → {provider peer → expiry}, each key's records in the order
of their latest announcement (an answer lists the freshest first). Records live 48 h
and are republished every 22 h, like kubo (go-libp2p-kad-dht `providers.ProvideValidity`,
`amino.DefaultReprovideInterval`). The store is bounded in total, per key and per
providing peer; a record over a limit is refused (the caller counts it), except that a
new provider of a full key takes the place of its stalest record.

Sweep: with the wire's one key per ADD_PROVIDER, batching means one *exploration* per
key region rather than one lookup per CID (kubo's sweeping reprovider). Keys are grouped
by their first p bits, p = ⌊log2(N / k)⌋ (N estimated from our own table), so a region
expects k–2k peers. Each half of a region that holds keys gets one lookup (window 2k)
aimed at its median key; the union of the halves' answers is, in a converged network,
every peer of the region plus its nearest outsiders. Each key's k closest peers are then
picked from that union locally. All peers inside a prefix are closer to every key in it
than any peer outside, so when the region holds ≥ k peers and was enumerated, the
choice is exact. docs/dht.md has the arithmetic.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from dht.wire import PeerInfo
from overlay.core.errors import WireError
from overlay.core.ids import KEY_BITS, PeerId
from overlay.core.multiformats import split_multihash

PROVIDER_TTL_S = 48 * 3600.0
REPROVIDE_INTERVAL_S = 22 * 3600.0


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    max_records: int = 1_000_000
    max_per_key: int = 64
    max_per_peer: int = 200_000
    ttl_s: float = PROVIDER_TTL_S


def is_provider_key(key: bytes) -> bool:
    """Provider keys are multihashes (a CID's), at most 128 bytes."""
    try:
        split_multihash(key)
    except WireError:
        return False
    return 0 < len(key) <= 128


class ProviderStore:
    __slots__ = ("_addrs", "_by_key", "_per_peer", "_total", "limits")

    def __init__(self, limits: ProviderLimits | None = None) -> None:
        self.limits = limits or ProviderLimits()
        self._by_key: dict[bytes, dict[PeerId, float]] = {}
        self._per_peer: dict[PeerId, int] = {}
        #: Addresses of peers that have at least one record with us (non-empty only).
        self._addrs: dict[PeerId, tuple[bytes, ...]] = {}
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def keys(self) -> int:
        return len(self._by_key)

    def add(self, key: bytes, peer: PeerId, addrs: tuple[bytes, ...], now: float) -> str:
        """Returns "stored", "evicted" (stored in place of the key's stalest record),
        "refreshed", "peer-limit" or "full"."""
        provs = self._by_key.get(key)
        until = now + self.limits.ttl_s
        if provs is not None and peer in provs:
            # Re-insert: a key's records stay ordered by their latest announcement, and
            # `get` answers the freshest first.
            del provs[peer]
            provs[peer] = until
            if addrs:
                self._addrs[peer] = addrs
            return "refreshed"
        if self._per_peer.get(peer, 0) >= self.limits.max_per_peer:
            return "peer-limit"
        evicted = False
        if provs is not None and len(provs) >= self.limits.max_per_key:
            # Make room: an expired record if there is one, else the stalest announcement
            # (first in order). Refusing instead kept a key's newest providers out for up
            # to a TTL (48 h) once former and crashed ones filled it, while answers list
            # the freshest first anyway; nim-libp2p's provider manager evicts the oldest too.
            dead = next((p for p, t in provs.items() if t <= now), None)
            evicted = dead is None
            self._remove(key, next(iter(provs)) if dead is None else dead)
            provs = self._by_key.get(key)
        if self._total >= self.limits.max_records:
            self.expire(now)
            if self._total >= self.limits.max_records:
                return "full"
            provs = self._by_key.get(key)
        if provs is None:
            provs = self._by_key[key] = {}
        provs[peer] = until
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        if addrs:
            self._addrs[peer] = addrs
        self._total += 1
        return "evicted" if evicted else "stored"

    def get(self, key: bytes, now: float, n: int) -> list[PeerInfo]:
        provs = self._by_key.get(key)
        if not provs:
            return []
        out: list[PeerInfo] = []
        # Freshest announcement first: with more records than an answer holds, the
        # providers still announcing win over those that stopped (a crashed provider's
        # record lingers for the TTL; docs/dht.md "Providers").
        for p, t in reversed(provs.items()):
            if t > now:
                out.append(PeerInfo(p, self._addrs.get(p, ())))
                if len(out) >= n:
                    break
        return out

    def _remove(self, key: bytes, peer: PeerId) -> None:
        provs = self._by_key[key]
        del provs[peer]
        if not provs:
            del self._by_key[key]
        self._total -= 1
        n = self._per_peer[peer] - 1
        if n:
            self._per_peer[peer] = n
        else:
            del self._per_peer[peer]
            self._addrs.pop(peer, None)

    def expire(self, now: float) -> int:
        dead = [(k, p) for k, provs in self._by_key.items() for p, t in provs.items() if t <= now]
        for k, p in dead:
            self._remove(k, p)
        return len(dead)

    def check_invariants(self) -> None:
        total = sum(len(v) for v in self._by_key.values())
        assert total == self._total <= self.limits.max_records
        assert all(0 < len(v) <= self.limits.max_per_key for v in self._by_key.values())
        assert sum(self._per_peer.values()) == total
        assert all(p in self._per_peer for p in self._addrs)


# ---------------------------------------------------------------- sweep planning


def region_bits(network_size: float, k: int, per_region: float = 1.0) -> int:
    """Prefix length p so that a region expects between per_region·k and twice that
    many of the N peers: p = ⌊log2(N / (per_region·k))⌋."""
    target = per_region * k
    if network_size <= 2 * target:
        return 0
    return max(0, min(KEY_BITS - 1, math.floor(math.log2(network_size / target))))


def region_of(key: int, bits: int) -> int:
    return key >> (KEY_BITS - bits) if bits else 0


def group_by_region(keys: dict[bytes, int], bits: int) -> list[tuple[int, list[bytes]]]:
    """Group multihashes (mh → dht key) by their key's first `bits` bits, sorted by region."""
    groups: dict[int, list[bytes]] = {}
    for mh, key in keys.items():
        groups.setdefault(region_of(key, bits), []).append(mh)
    return sorted(groups.items())


def assign(keys: dict[bytes, int], mhs: list[bytes], peers: list[PeerId],
           k: int) -> list[tuple[bytes, list[PeerId]]]:
    """For each multihash, its k closest peers among `peers`."""
    out: list[tuple[bytes, list[PeerId]]] = []
    for mh in mhs:
        key = keys[mh]
        if len(peers) <= k:
            out.append((mh, sorted(peers, key=lambda p: p.key ^ key)))
        else:
            out.append((mh, heapq.nsmallest(k, peers, key=lambda p: p.key ^ key)))
    return out
