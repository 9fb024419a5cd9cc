"""Per-peer token buckets for inbound DHT requests (sans-IO: time comes from `now`).

Each requester has a bucket of `burst` tokens refilled at `per_s` tokens a second;
a request costs one token, and a request finding the bucket empty is refused (the
core drops it unanswered and counts it in `DhtStats.requests_rate_limited`, so the
requester's RPC times out as if we were slow). Honest peers stay far below the
defaults (`KadConfig.request_burst`, `request_rate_per_s`): a lookup asks one peer a
handful of times, a reprovide sweep announces each key to a peer once per 22 h.

Bounded: at most `max_peers` buckets, least recently used dropped first (counted in
`dropped`). A dropped peer starts again with a full bucket, so an attacker cycling
through many identities gains at most `burst` requests per identity per eviction —
identities cost a key pair each, and the table size bounds our memory either way.

Invariants: `0 ≤ tokens ≤ burst` for every bucket; `len(self) ≤ max_peers`.
"""

from __future__ import annotations

from overlay.core.ids import PeerId


class PeerRateLimiter:
    __slots__ = ("_buckets", "burst", "dropped", "max_peers", "per_s")

    def __init__(self, burst: float, per_s: float, max_peers: int) -> None:
        self.burst = float(max(1.0, burst))
        self.per_s = max(0.0, per_s)
        self.max_peers = max(1, max_peers)
        self._buckets: dict[PeerId, tuple[float, float]] = {}  # tokens, last update
        self.dropped = 0

    def allow(self, peer: PeerId, now: float) -> bool:
        """Take one token from `peer`'s bucket; False (nothing taken) when empty."""
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.per_s)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        if len(self._buckets) >= self.max_peers:
            del self._buckets[next(iter(self._buckets))]
            self.dropped += 1
        self._buckets[peer] = (tokens, now)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)
