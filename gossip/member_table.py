"""The member table: every known member, the probe order and the live count.

SWIM §4.3 (round-robin probe targets over a shuffled list) with memberlist's
state.go bookkeeping (newcomers swapped into a random not-yet-probed slot,
`nodes` / `numNodes`). This is the one place that adds, re-states and removes
members, so its invariants hold by construction:

- `n_live == 1 + #members in ALIVE or SUSPECT` (this node counts itself);
- the probe order holds every member exactly once (a permutation of the table's
  keys), and `0 ≤ probe index ≤ len(probe order)`;
- a member leaves the table only by `remove` (colony expulsion) or `reap` (after its
  tombstone time in DEAD/LEFT);
- a reaped member leaves a *tombstone*: its last alive claim and the signed dead/left
  notice that ended it. At most `MAX_TOMBSTONES` are kept (the oldest is dropped and
  counted in `tombstones_dropped`); a tombstone goes when the member is re-added. The
  state machine refuses alive claims no newer than a tombstone, so a replayed old
  claim cannot resurrect a reaped member, and push-pull hands a restarted member its
  tombstone so that it can outbid it.

Which transitions happen, and when, is decided in gossip/transitions.py; this class
only keeps the books. All randomness comes from the `rng` passed in, in the same
order as the calls, so a seeded core replays exactly. Read access is a mapping
(`table[peer]`, `peer in table`, `table.items()`, …) in insertion order.
"""

from __future__ import annotations

import random
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView

from gossip.members import LIVE, Member, MemberState
from gossip.messages import Alive, MemberRecord
from overlay.core.ids import PeerId

#: Reaped members remembered (about 1 KiB each, more with a colony certificate chain).
MAX_TOMBSTONES = 4096


class MemberTable(Mapping[PeerId, Member]):
    """Known members (never this node) and their probe order; see the module docstring."""

    __slots__ = ("_members", "_n_live", "_order", "_probe_idx", "_tombs", "max_tombstones",
                 "tombstones_dropped")  # fmt: skip

    def __init__(self, max_tombstones: int = MAX_TOMBSTONES) -> None:
        self._members: dict[PeerId, Member] = {}
        self._order: list[PeerId] = []  # every member once: probe order and sampling
        self._probe_idx = 0
        self._n_live = 1  # ALIVE + SUSPECT members, this node included
        #: Reaped members: their last alive claim and the notice that ended them.
        self._tombs: dict[PeerId, MemberRecord] = {}
        self.max_tombstones = max(1, max_tombstones)
        self.tombstones_dropped = 0

    # ------------------------------------------------------------ mapping (read only)

    def __getitem__(self, peer: PeerId) -> Member:
        return self._members[peer]

    def __contains__(self, peer: object) -> bool:
        return peer in self._members

    def __iter__(self) -> Iterator[PeerId]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def get(self, peer: PeerId, default: Member | None = None) -> Member | None:  # type: ignore[override]
        return self._members.get(peer, default)

    def items(self) -> ItemsView[PeerId, Member]:
        return self._members.items()

    def values(self) -> ValuesView[Member]:
        return self._members.values()

    def keys(self) -> KeysView[PeerId]:
        return self._members.keys()

    @property
    def n_live(self) -> int:
        """Live members (alive or suspect), this node included."""
        return self._n_live

    @property
    def probe_order(self) -> tuple[PeerId, ...]:
        return tuple(self._order)

    def tombstone(self, peer: PeerId) -> MemberRecord | None:
        """The record `peer` had when it was reaped, if we still remember it."""
        return self._tombs.get(peer)

    def tombstone_count(self) -> int:
        return len(self._tombs)

    # ------------------------------------------------------------ edits

    def add(self, alive: Alive, now: float, rng: random.Random) -> Member:
        """A new ALIVE member from its first accepted claim. Its probe slot is a random
        not-yet-probed one (memberlist does the same): otherwise every node would probe
        newcomers in the same order."""
        peer = alive.peer
        if peer in self._members:
            raise ValueError("member already known")
        m = self._members[peer] = Member(alive, now)
        self._tombs.pop(peer, None)
        order = self._order
        order.append(peer)
        j = rng.randint(min(self._probe_idx, len(order) - 1), len(order) - 1)
        order[-1], order[j] = order[j], order[-1]
        self._n_live += 1
        return m

    def set_state(self, m: Member, state: MemberState, now: float) -> None:
        """Move a member to `state` since `now`, keeping the live count."""
        self._n_live += int(state in LIVE) - int(m.state in LIVE)
        m.state = state
        m.since = now

    def remove(self, peer: PeerId) -> Member:
        """Drop one member in any state (colony expulsion)."""
        m = self._members.pop(peer)
        if m.state in LIVE:
            self._n_live -= 1
        self._order = [p for p in self._order if p != peer]
        self._probe_idx = min(self._probe_idx, len(self._order))
        return m

    def reap(self, horizon: float) -> list[PeerId]:
        """Drop members DEAD or LEFT since `horizon` or earlier; returns them in table
        order. They are not live, so the live count stays."""
        gone = [
            p
            for p, m in self._members.items()
            if m.state in (MemberState.DEAD, MemberState.LEFT) and m.since <= horizon
        ]
        if not gone:
            return gone
        for p in gone:
            m = self._members.pop(p)
            self._bury(p, MemberRecord(m.alive, m.accuse))
        gone_set = set(gone)
        self._order = [p for p in self._order if p not in gone_set]
        self._probe_idx = min(self._probe_idx, len(self._order))
        return gone

    def _bury(self, peer: PeerId, rec: MemberRecord) -> None:
        self._tombs.pop(peer, None)
        if len(self._tombs) >= self.max_tombstones:
            del self._tombs[next(iter(self._tombs))]
            self.tombstones_dropped += 1
        self._tombs[peer] = rec

    # ------------------------------------------------------------ choosing members

    def next_probe_target(self, rng: random.Random) -> PeerId | None:
        """The next live member in probe order; reshuffles at the end of each pass.

        As memberlist's `probe` (state.go): skip members that are not live, wrap and
        reshuffle at the end of the order, and keep looking until a live member or a
        whole pass of the new order. So a call returns a target whenever a live
        member exists (a probe period is never skipped while one does), and None
        only when none does; it reshuffles at most once.
        """
        order = self._order
        reshuffled = False
        while order:
            if self._probe_idx >= len(order):
                if reshuffled:
                    return None  # a whole pass of the new order: nothing live
                self._probe_idx = 0
                rng.shuffle(order)
                reshuffled = True
            peer = order[self._probe_idx]
            self._probe_idx += 1
            if self._members[peer].state in LIVE:
                return peer
        return None

    def sample(
        self,
        k: int,
        states: tuple[MemberState, ...],
        rng: random.Random,
        *,
        exclude: PeerId | None = None,
        dead_since: float | None = None,
    ) -> list[PeerId]:
        """Up to k distinct random members in `states` (or DEAD since `dead_since`),
        O(k): a bounded number of draws, so a mostly dead table may yield fewer."""
        order = self._order
        if k <= 0 or not order:
            return []
        chosen: dict[PeerId, None] = {}
        for _ in range(4 * k + 8):
            peer = order[rng.randrange(len(order))]
            if peer == exclude or peer in chosen:
                continue
            m = self._members[peer]
            if m.state in states or (
                dead_since is not None and m.state is MemberState.DEAD and m.since >= dead_since
            ):
                chosen[peer] = None
                if len(chosen) >= k:
                    break
        return list(chosen)

    def check_invariants(self) -> None:
        """Raise AssertionError if the books disagree (tests call this)."""
        live = sum(1 for m in self._members.values() if m.state in LIVE)
        assert self._n_live == 1 + live, (self._n_live, live)
        assert len(self._order) == len(self._members)
        assert set(self._order) == set(self._members)
        assert 0 <= self._probe_idx <= len(self._order)
        assert len(self._tombs) <= self.max_tombstones
        assert not self._tombs.keys() & self._members.keys()
