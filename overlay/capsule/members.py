"""The capsule layer's view of the colony: live members, their ads, custodian sets.

Fed by the node from gossip (`MembersChanged`, the full live set each time) and by the
driver (`PeerUnreachable`, which hides a peer for `unreachable_ttl_s` or until it is
listed again with a *new* `MembersChanged`). Custodians of a key are the `k` live
members closest to it by XOR over the 256-bit keyspace (DESIGN §7); the first is the
leader. Iteration is over dicts kept in peer-id order, never over sets.

The live set is a `Directory`: members plus their keys in a sorted list, so the `k`
XOR-closest members are found by walking the implicit binary trie with bisection
(O(k + log N) per query instead of a scan of all N members), and placement can draw a
bounded random sample of candidates. A simulator may share one `Directory` between all
its nodes (an oracle of the live set, updated in place; nodes are told with
`ViewRefreshed`), which keeps memory O(N) instead of O(N²).
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Container, Iterable
from dataclasses import dataclass

from overlay.capsule.placement import NodeAd
from overlay.core.ids import PeerId

#: Roles a member has when the node does not say (a colony without certificates).
DEFAULT_ROLES: tuple[str, ...] = ("execute", "member", "submit")
MAX_UNREACHABLE = 4096
#: Below this many keys in a trie branch, sort the branch instead of splitting it.
_BRUTE = 16
#: Closest-set answers a view remembers (cleared when full).
MAX_CLOSEST_CACHE = 4096
#: Keys added or removed that a directory remembers, so cached answers can be checked
#: against the changes since they were computed instead of being recomputed.
MAX_CHANGE_LOG = 4096
#: Guest executors a view holds (the runtime gives at most this many; more are dropped).
MAX_GUESTS = 256


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
    #: Members gossip holds as failed and not yet reaped (lost contact; not left, not
    #: moved to another cell): an origin whose view is a minority of live + failed is
    #: likely the one cut off (`Origin`).
    failed: int = 0


@dataclass(frozen=True, slots=True)
class GuestsChanged:
    """Command: the complete set of *guest executors* — nodes of other colonies that may
    take leases here through a grant giving `execute` (docs/federation.md) — with their
    ads. Guests are placement candidates only: never custodians, leaders or counted in
    `closest`; a lease on a guest is lost when the guest leaves this set."""

    guests: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class ViewRefreshed:
    """Command: the (shared) `Directory` behind this node's view changed in place."""


class Directory:
    """Live members with an XOR-closest index (keys kept sorted)."""

    __slots__ = ("_keys", "_log", "_log_base", "_peer_at", "keys_version", "live", "version")

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self.live: dict[PeerId, Member] = {}
        self._keys: list[int] = []
        self._peer_at: dict[int, PeerId] = {}
        #: Grows on every change; `keys_version` only when the set of members changes
        #: (not on a new ad), so closest-set caches survive ad updates.
        self.version = 0
        self.keys_version = 0
        # _log[i] is the key added or removed by change keys_version == _log_base + i + 1.
        self._log: list[int] = []
        self._log_base = 0
        self.replace(members)

    def replace(self, members: Iterable[Member]) -> None:
        self.live = {m.peer: m for m in sorted(members, key=lambda m: m.peer.raw)}
        self._peer_at = {p.key: p for p in self.live}
        self._keys = sorted(self._peer_at)
        self.version += 1
        self.keys_version += 1
        self._log = []
        self._log_base = self.keys_version  # answers from before a replace are void

    def _changed(self, key: int) -> None:
        self.keys_version += 1
        if len(self._log) >= MAX_CHANGE_LOG:
            drop = MAX_CHANGE_LOG // 2
            del self._log[:drop]
            self._log_base += drop
        self._log.append(key)

    def still_valid(self, since: int, target: int, radius: int) -> bool:
        """Whether a closest-set answer for `target` computed at `keys_version == since`,
        whose farthest member is at XOR distance `radius`, is unchanged: no key added or
        removed since lies within the radius (-1: the answer held fewer than k)."""
        if since == self.keys_version:
            return True
        if since < self._log_base:
            return False
        return all((x ^ target) > radius for x in self._log[since - self._log_base :])

    def put(self, member: Member) -> None:
        """Add a member, or replace its entry (new ad, roles or rtt)."""
        p = member.peer
        if p not in self.live:
            insort(self._keys, p.key)
            self._peer_at[p.key] = p
            self._changed(p.key)
        self.live[p] = member
        self.version += 1

    def remove(self, peer: PeerId) -> bool:
        if self.live.pop(peer, None) is None:
            return False
        i = bisect_left(self._keys, peer.key)
        del self._keys[i]
        del self._peer_at[peer.key]
        self.version += 1
        self._changed(peer.key)
        return True

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, peer: object) -> bool:
        return peer in self.live

    def closest(self, target: int, k: int, skip: Container[PeerId] = ()) -> list[PeerId]:
        """The `k` members closest to `target` by XOR (closest first), minus `skip`."""
        keys, peer_at = self._keys, self._peer_at
        out: list[PeerId] = []
        # Branches of the implicit binary trie over the sorted keys, nearest on top.
        # keys[lo:hi] agree on every bit above the highest bit where its first and
        # last key differ, so their XOR distances to `target` differ only below it:
        # the half that matches target's bit there is entirely closer than the other.
        stack = [(0, len(keys))]
        while stack and len(out) < k:
            lo, hi = stack.pop()
            if hi - lo <= k - len(out) + _BRUTE:
                for x in sorted(keys[lo:hi], key=lambda x: x ^ target):
                    p = peer_at[x]
                    if p not in skip:
                        out.append(p)
                        if len(out) >= k:
                            break
                continue
            bit = (keys[lo] ^ keys[hi - 1]).bit_length() - 1
            split = ((keys[lo] >> (bit + 1)) << (bit + 1)) | (1 << bit)
            mid = bisect_left(keys, split, lo, hi)
            if (target >> bit) & 1:
                stack.append((lo, mid))
                stack.append((mid, hi))
            else:
                stack.append((mid, hi))
                stack.append((lo, mid))
        return out

    def sample(self, rng: random.Random, n: int) -> list[Member]:
        """Up to `n` members drawn uniformly without replacement (all when fewer)."""
        if len(self.live) <= n:
            return list(self.live.values())
        idx = sorted(rng.sample(range(len(self._keys)), n))
        return [self.live[self._peer_at[self._keys[i]]] for i in idx]


class MemberView:
    __slots__ = ("_cache", "_cache_epoch", "_dir", "_local", "_unreachable", "guests", "me",
                 "unreachable_ttl_s", "version")  # fmt: skip

    def __init__(
        self, me: PeerId, unreachable_ttl_s: float = 30.0, directory: Directory | None = None
    ) -> None:
        self.me = me
        self.unreachable_ttl_s = unreachable_ttl_s
        self._dir = directory if directory is not None else Directory([Member(me)])
        self._unreachable: dict[PeerId, float] = {}
        #: Grows on every change, so cores can tell whether a custodian set may differ.
        self.version = 0
        # closest() answers: custody asks for the same capsule's custodians on every
        # message it handles. An entry is (answer, directory keys_version, radius);
        # `_local` counts changes to this view's own hidden set, which void them all.
        self._cache: dict[tuple[int, int], tuple[list[PeerId], int, int]] = {}
        self._cache_epoch = 0
        self._local = 0
        #: Guest executors (`GuestsChanged`), in the order given; apart from members.
        self.guests: dict[PeerId, Member] = {}

    @property
    def directory(self) -> Directory:
        return self._dir

    def update(self, members: Iterable[Member]) -> None:
        live = list(members)
        if not any(m.peer == self.me for m in live):
            live.append(Member(self.me))
        self._dir.replace(live)
        self._unreachable = {}
        # A guest that became a member is a member only (a custodian candidate).
        for p in [p for p in self.guests if p in self._dir.live]:
            del self.guests[p]
        self.version += 1
        self._local += 1

    def refreshed(self) -> None:
        """The shared directory changed in place (`ViewRefreshed`)."""
        self.version += 1

    def mark_unreachable(self, peer: PeerId, now: float) -> bool:
        """Hide `peer` until `now + unreachable_ttl_s`; True only if that changed the
        view (a live peer that was not hidden yet).

        A report about a peer already hidden only extends its deadline: it must not
        count as a change. The caller re-evaluates custody on a change, which may send
        to the hidden peer again (a record still joint with a configuration naming it),
        and each frame refused by a dead peer comes back as another report — a feedback
        loop of ~10^4 frames a second that overflowed the daemon's inbox (found by
        test_faults_kill9.py; tests/unit/capsule/test_capsule_unreachable.py)."""
        if peer == self.me or peer not in self._dir.live:
            return False
        if peer in self._unreachable:
            self._unreachable[peer] = max(self._unreachable[peer], now + self.unreachable_ttl_s)
            return False
        if len(self._unreachable) >= MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]
        self._unreachable[peer] = now + self.unreachable_ttl_s
        self.version += 1
        self._local += 1
        return True

    def expire(self, now: float) -> None:
        gone = [p for p, until in self._unreachable.items() if until <= now]
        for p in gone:
            del self._unreachable[p]
        if gone:
            self.version += 1
            self._local += 1

    def set_guests(self, guests: Iterable[Member]) -> bool:
        """Replace the guest executors (members and this node are never guests); True
        if the set or an ad changed."""
        new: dict[PeerId, Member] = {}
        for m in guests:
            if m.peer != self.me and m.peer not in self._dir.live and len(new) < MAX_GUESTS:
                new[m.peer] = m
        if new == self.guests:
            return False
        self.guests = new
        self.version += 1
        return True

    def is_guest(self, peer: PeerId) -> bool:
        return peer in self.guests

    def is_live(self, peer: PeerId) -> bool:
        return peer in self._dir.live and peer not in self._unreachable

    def can_execute(self, peer: PeerId) -> bool:
        """A live member or a guest: a lease held by anyone else is lost."""
        return self.is_live(peer) or peer in self.guests

    def is_member(self, peer: PeerId) -> bool:
        """In the membership, hidden or not (a hidden peer may still answer)."""
        return peer in self._dir.live

    def get(self, peer: PeerId) -> Member | None:
        return self._dir.live.get(peer) if self.is_live(peer) else None

    def members(self) -> list[Member]:
        return [m for p, m in self._dir.live.items() if p not in self._unreachable]

    def candidates(self, rng: random.Random, n: int) -> list[Member]:
        """At most about `n` live members for placement: all of them in a colony of
        up to `n`, else a uniform sample (power-of-d-choices placement)."""
        if n <= 0 or len(self._dir) <= n:
            return self.members()
        return [m for m in self._dir.sample(rng, n) if m.peer not in self._unreachable]

    def __len__(self) -> int:
        hidden = sum(1 for p in self._unreachable if p in self._dir.live)
        return len(self._dir) - hidden

    def closest(self, key: int, k: int) -> list[PeerId]:
        """The `k` live members closest to `key` by XOR, closest first."""
        d = self._dir
        if self._local != self._cache_epoch or len(self._cache) >= MAX_CLOSEST_CACHE:
            self._cache = {}
            self._cache_epoch = self._local
        hit = self._cache.get((key, k))
        if hit is not None and d.still_valid(hit[1], key, hit[2]):
            if hit[1] != d.keys_version:
                self._cache[(key, k)] = (hit[0], d.keys_version, hit[2])
            return list(hit[0])
        found = d.closest(key, k, self._unreachable)
        # Radius: an answer with fewer than k members changes with any new member.
        radius = found[-1].key ^ key if len(found) >= k else (1 << 256)
        self._cache[(key, k)] = (found, d.keys_version, radius)
        return list(found)

    def leader(self, key: int, k: int) -> PeerId:
        found = self.closest(key, k)
        return found[0] if found else self.me
