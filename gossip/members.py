"""Member entries: one compact entry per known member, and its public view.

An entry holds references to the *signed* objects that justify its state (the
member's latest alive, the accusation that made it suspect/dead/left, its ad chain),
never copies: in the simulator those objects are shared by every core. Entries are
stored column-wise (`MemberColumns`: one list or array per field, indexed by the
member's slot) and read through a small `Member` view, so an entry costs about 70
bytes of columns plus the table's dict slot, not a Python object per member (the
simulator holds N² entries for a cell of N nodes).

State rules (memberlist state.go, with signatures; applied in gossip/transitions.py,
booked in gossip/member_table.py):
- incarnation = max(alive.incarnation, accusation.incarnation);
- an alive replaces the state only with a *higher* incarnation (or first sight);
- an accusation applies when its incarnation ≥ the current one and it is stronger
  than the current state (suspect < dead/left);
- a member is never removed except by reaping after `tombstone_s` in dead/left, or
  (colony mode) by expulsion when its certificate expires or is revoked.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from enum import IntEnum

from gossip.coordinates import Coord
from gossip.messages import Accuse, AdUpdate, Alive, MemberRecord
from gossip.resources import ResourceAd
from overlay.core.ids import PeerId


class MemberState(IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


#: Member states that count as live (probed, gossiped to, listed).
LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


_STATES = tuple(MemberState)
_NO_DELTAS: tuple[AdUpdate, ...] = ()

#: Shared int objects for slot numbers: a dict value above 256 would otherwise be a
#: fresh 28-byte int per entry, per node.
_SLOT_INTS: list[int] = list(range(1024))


def slot_int(i: int) -> int:
    """The shared int object for slot `i` (grows the cache as needed)."""
    cache = _SLOT_INTS
    if i >= len(cache):
        cache.extend(range(len(cache), 2 * i + 1))
    return cache[i]


class MemberColumns:
    """Member entries stored column-wise: one list or array per field, one index per
    member (its *slot*). The signed objects are referenced, never copied, so an entry
    costs about 8 bytes per reference column plus 17 for state and times (measured in
    tests/unit/gossip/test_member_table.py). Free slots are reused lowest-last (LIFO)
    and cleared when freed, so the columns hold no stale claims."""

    __slots__ = ("accuse", "ad", "ad_deltas", "ad_full", "alive", "free", "since", "state",
                 "valid_until")  # fmt: skip

    def __init__(self) -> None:
        self.alive: list[Alive | None] = []
        self.accuse: list[Accuse | None] = []
        self.ad_full: list[AdUpdate | None] = []
        self.ad_deltas: list[tuple[AdUpdate, ...]] = []
        self.ad: list[ResourceAd | None] = []
        self.state = bytearray()
        self.since = array("d")
        self.valid_until = array("d")
        self.free: list[int] = []

    def new(self, alive: Alive, now: float) -> int:
        """A slot for a new ALIVE member since `now`."""
        if self.free:
            i = self.free.pop()
            self.alive[i] = alive
            self.state[i] = MemberState.ALIVE
            self.since[i] = now
            return i
        self.alive.append(alive)
        self.accuse.append(None)
        self.ad_full.append(None)
        self.ad_deltas.append(_NO_DELTAS)
        self.ad.append(None)
        self.state.append(MemberState.ALIVE)
        self.since.append(now)
        self.valid_until.append(math.inf)
        return len(self.alive) - 1

    def release(self, i: int) -> None:
        """Free slot `i` (its references are dropped; `new` reuses it)."""
        self.alive[i] = self.accuse[i] = self.ad_full[i] = self.ad[i] = None
        self.ad_deltas[i] = _NO_DELTAS
        self.valid_until[i] = math.inf
        self.free.append(i)


class Member:
    """One member's entry: a view of its slot in the table's `MemberColumns`.

    Reading and writing the attributes reads and writes the columns; the member table
    hands out a fresh view per lookup, so a view is valid until its member leaves the
    table. The fields: `state`, `since` (when it entered that state), `alive` (its
    latest accepted alive claim), `accuse` (the accusation behind SUSPECT/DEAD/LEFT),
    `ad_full` + `ad_deltas` (its signed ad chain) and `ad` (the ad they give),
    `valid_until` (colony mode: when its certificate chain stops being valid).
    """

    __slots__ = ("_c", "_i")

    def __init__(self, columns: MemberColumns, slot: int) -> None:
        self._c = columns
        self._i = slot

    @property
    def state(self) -> MemberState:
        return _STATES[self._c.state[self._i]]

    @property
    def since(self) -> float:
        return self._c.since[self._i]

    @property
    def alive(self) -> Alive:
        a = self._c.alive[self._i]
        assert a is not None
        return a

    @alive.setter
    def alive(self, a: Alive) -> None:
        self._c.alive[self._i] = a

    @property
    def accuse(self) -> Accuse | None:
        return self._c.accuse[self._i]

    @accuse.setter
    def accuse(self, acc: Accuse | None) -> None:
        self._c.accuse[self._i] = acc

    @property
    def ad_full(self) -> AdUpdate | None:
        return self._c.ad_full[self._i]

    @ad_full.setter
    def ad_full(self, u: AdUpdate | None) -> None:
        self._c.ad_full[self._i] = u

    @property
    def ad_deltas(self) -> tuple[AdUpdate, ...]:
        return self._c.ad_deltas[self._i]

    @ad_deltas.setter
    def ad_deltas(self, us: tuple[AdUpdate, ...]) -> None:
        self._c.ad_deltas[self._i] = us

    @property
    def ad(self) -> ResourceAd | None:
        return self._c.ad[self._i]

    @ad.setter
    def ad(self, ad: ResourceAd | None) -> None:
        self._c.ad[self._i] = ad

    @property
    def valid_until(self) -> float:
        return self._c.valid_until[self._i]

    @valid_until.setter
    def valid_until(self, t: float) -> None:
        self._c.valid_until[self._i] = t

    @property
    def incarnation(self) -> int:
        c, i = self._c, self._i
        a = c.alive[i]
        assert a is not None
        inc = a.incarnation
        acc = c.accuse[i]
        return inc if acc is None or acc.incarnation < inc else acc.incarnation

    @property
    def ad_version(self) -> int:
        c, i = self._c, self._i
        deltas = c.ad_deltas[i]
        if deltas:
            return deltas[-1].version
        full = c.ad_full[i]
        return -1 if full is None else full.version

    def record(self) -> MemberRecord:
        c, i = self._c, self._i
        a = c.alive[i]
        assert a is not None
        full = c.ad_full[i]
        ads: tuple[AdUpdate, ...] = ()
        if full is not None:
            ads = (full, *c.ad_deltas[i])
        return MemberRecord(a, c.accuse[i], ads)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """What the members API returns for one member."""

    peer: PeerId
    state: MemberState
    incarnation: int
    addrs: tuple[str, ...]
    ad: ResourceAd | None
    ad_version: int
    since: float
    rtt_s: float | None
    coord: Coord | None
    is_self: bool = False
