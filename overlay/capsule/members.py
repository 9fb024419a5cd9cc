"""The capsule layer's view of the colony: live members, their ads, custodian sets.

Fed by the node from gossip (`MembersChanged`, the full live set each time) and by the
driver (`PeerUnreachable`, which hides a peer for `unreachable_ttl_s` or until it is
listed again with a *new* `MembersChanged`). Custodians of a key are the `k` live
members closest to it by XOR over the 256-bit keyspace (DESIGN §7); the first is the
leader. Iteration is over dicts kept in peer-id order, never over sets.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from overlay.capsule.placement import NodeAd
from overlay.core.ids import PeerId

#: Roles a member has when the node does not say (a colony without certificates).
DEFAULT_ROLES: tuple[str, ...] = ("execute", "member", "submit")
MAX_UNREACHABLE = 4096


@dataclass(frozen=True, slots=True)
class Member:
    peer: PeerId
    ad: NodeAd | None = None
    roles: tuple[str, ...] = DEFAULT_ROLES
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """Command: the complete set of live members (including this node) and their ads."""

    members: tuple[Member, ...]


class MemberView:
    __slots__ = ("_live", "_unreachable", "me", "unreachable_ttl_s", "version")

    def __init__(self, me: PeerId, unreachable_ttl_s: float = 30.0) -> None:
        self.me = me
        self.unreachable_ttl_s = unreachable_ttl_s
        self._live: dict[PeerId, Member] = {me: Member(me)}
        self._unreachable: dict[PeerId, float] = {}
        #: Grows on every change, so cores can tell whether a custodian set may differ.
        self.version = 0

    def update(self, members: Iterable[Member]) -> None:
        live = {m.peer: m for m in sorted(members, key=lambda m: m.peer.raw)}
        if self.me not in live:
            live[self.me] = Member(self.me)
        self._live = live
        self._unreachable = {}
        self.version += 1

    def mark_unreachable(self, peer: PeerId, now: float) -> bool:
        """Hide `peer` until `now + unreachable_ttl_s`; False if it was not live."""
        if peer == self.me or peer not in self._live:
            return False
        if len(self._unreachable) >= MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]
        self._unreachable[peer] = now + self.unreachable_ttl_s
        self.version += 1
        return True

    def expire(self, now: float) -> None:
        gone = [p for p, until in self._unreachable.items() if until <= now]
        for p in gone:
            del self._unreachable[p]
        if gone:
            self.version += 1

    def is_live(self, peer: PeerId) -> bool:
        return peer in self._live and peer not in self._unreachable

    def get(self, peer: PeerId) -> Member | None:
        return self._live.get(peer) if self.is_live(peer) else None

    def members(self) -> list[Member]:
        return [m for p, m in self._live.items() if p not in self._unreachable]

    def __len__(self) -> int:
        return len(self._live) - len(self._unreachable)

    def closest(self, key: int, k: int) -> list[PeerId]:
        """The `k` live members closest to `key` by XOR, closest first."""
        peers = (p for p in self._live if p not in self._unreachable)
        return heapq.nsmallest(k, peers, key=lambda p: p.key ^ key)

    def leader(self, key: int, k: int) -> PeerId:
        return self.closest(key, k)[0]
