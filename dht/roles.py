"""Which requesters are DHT servers (kad-dht client mode; docs/dht.md, "Client mode").

A request proves a peer is alive, not that it serves the DHT: kad-dht clients ask
without answering, and must stay out of routing tables. The core PINGs a requester it
does not know; the answer (or its absence) is the verdict kept here.

Bounded: at most `max_entries` verdicts (oldest dropped first, insertion order) and
each is trusted for `ttl_s` (a client may become a server, or the reverse). Peers
with a PING in flight are tracked so a chatty requester costs one PING, not one per
request; that set is bounded by the core's pending-RPC limit.
"""

from __future__ import annotations

from overlay.core.ids import PeerId


class RequesterRoles:
    __slots__ = ("_verdicts", "checking", "max_entries", "ttl_s")

    def __init__(self, max_entries: int = 4096, ttl_s: float = 600.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        #: peer → (is a DHT server, when we learned it); oldest first.
        self._verdicts: dict[PeerId, tuple[bool, float]] = {}
        #: Requesters whose verifying PING is in flight.
        self.checking: dict[PeerId, None] = {}

    def __len__(self) -> int:
        return len(self._verdicts)

    def verdict(self, peer: PeerId, now: float) -> bool | None:
        """True (server) / False (client or gone) if learned within `ttl_s`, else None."""
        v = self._verdicts.get(peer)
        if v is None or now - v[1] >= self.ttl_s:
            return None
        return v[0]

    def learn(self, peer: PeerId, server: bool, now: float) -> None:
        self.checking.pop(peer, None)
        verdicts = self._verdicts
        verdicts.pop(peer, None)
        verdicts[peer] = (server, now)
        while len(verdicts) > self.max_entries:
            del verdicts[next(iter(verdicts))]
