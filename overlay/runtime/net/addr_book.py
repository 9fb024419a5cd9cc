"""The transport's address book: dialable addresses per peer, hearsay ones expiring.

Addresses reach the transport first-hand (the peer's signed gossip, its identify, our
config, a `/p2p/` address we were told to dial) or as *hearsay*: a third party's DHT
answer or provider record. First-hand addresses go first (newest first) and hearsay
after the ones already known, so the trim to `max_per_peer` drops hearsay first and a
hostile answer cannot push a peer's real addresses out or ahead.

Hearsay expires, as in go-libp2p's peerstore (`ProviderAddrTTL` = 30 min for addresses
from provider records and DHT answers; `ConnectedAddrTTL` while connected,
`RecentlyConnectedAddrTTL` after): a hearsay address lives `hearsay_ttl_s` after it was
last heard, never expires while the peer is connected, and lives `hearsay_ttl_s` more
from the moment the connection ends. Without this, the dead addresses of a peer known
only from DHT answers stayed until 16 newer ones pushed them out, and every dial of that
peer tried them first. First-hand addresses do not expire here: their sources (gossip,
identify) replace them when they change, and the per-peer bound holds them.

Sans-IO: every entry point takes `now` (the transport passes `trio.current_time()`);
no clock is read here. Expiry is lazy (on `addrs`/`add` of that peer), so the book's
size is bounded by `max_peers × max_per_peer` whether or not anyone reads it; the
oldest peer is forgotten to admit a new one beyond `max_peers`.
"""

from __future__ import annotations

from collections.abc import Iterable

from overlay.core.ids import PeerId

#: go-libp2p's ProviderAddrTTL: addresses third parties gave us.
HEARSAY_TTL_S = 30 * 60.0
#: The expiry of a first-hand address (never).
FOREVER = float("inf")


class AddrBook:
    """Per peer, `[address, expires_at]` in dial order; see the module docstring."""

    def __init__(self, *, max_peers: int, max_per_peer: int,
                 hearsay_ttl_s: float = HEARSAY_TTL_S) -> None:  # fmt: skip
        if hearsay_ttl_s <= 0:
            raise ValueError("hearsay_ttl_s must be positive")
        self.max_peers = max_peers
        self.max_per_peer = max_per_peer
        self.hearsay_ttl_s = hearsay_ttl_s
        self._peers: dict[PeerId, list[list[str | float]]] = {}
        self._connected: dict[PeerId, None] = {}
        #: Hearsay addresses dropped because they expired.
        self.expired = 0

    def __len__(self) -> int:
        return len(self._peers)

    def add(self, peer: PeerId, addrs: Iterable[str], now: float, *, hearsay: bool) -> bool:
        """Remember `addrs`; True if one was not known. Hearing a known address again
        renews it (a first-hand word makes a hearsay address first-hand)."""
        entries = self._peers.get(peer)
        if entries is None:
            if len(self._peers) >= self.max_peers:
                del self._peers[next(iter(self._peers))]  # forget the oldest peer
            entries = self._peers[peer] = []
        else:
            self._expire(peer, entries, now)
        expires = now + self.hearsay_ttl_s if hearsay else FOREVER
        new = False
        for a in addrs:
            old = next((e for e in entries if e[0] == a), None)
            if old is None:
                if hearsay:
                    entries.append([a, expires])
                else:
                    entries.insert(0, [a, expires])  # newest first
                new = True
            elif hearsay:
                old[1] = max(float(old[1]), expires)
            elif old[1] != FOREVER:
                entries.remove(old)
                entries.insert(0, [a, FOREVER])
        del entries[self.max_per_peer :]
        return new

    def addrs(self, peer: PeerId, now: float) -> list[str]:
        """The peer's live addresses, in dial order."""
        entries = self._peers.get(peer)
        if entries is None:
            return []
        self._expire(peer, entries, now)
        return [str(e[0]) for e in entries]

    def connected(self, peer: PeerId) -> None:
        """A connection to `peer` is up: none of its addresses expire meanwhile."""
        self._connected[peer] = None

    def disconnected(self, peer: PeerId, now: float) -> None:
        """Its last connection ended: its hearsay addresses live `hearsay_ttl_s` more
        (they reached it recently; go-libp2p's RecentlyConnectedAddrTTL)."""
        if self._connected.pop(peer, 0) is None:
            for e in self._peers.get(peer, ()):
                if e[1] != FOREVER:
                    e[1] = max(float(e[1]), now + self.hearsay_ttl_s)

    def _expire(self, peer: PeerId, entries: list[list[str | float]], now: float) -> None:
        if peer in self._connected:
            return
        keep = [e for e in entries if float(e[1]) > now]
        if len(keep) != len(entries):
            self.expired += len(entries) - len(keep)
            entries[:] = keep
