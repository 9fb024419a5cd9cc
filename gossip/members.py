"""Member entries: one compact entry per known member, and its public view.

An entry holds references to the *signed* objects that justify its state (the
member's latest alive, the accusation that made it suspect/dead/left, its ad chain),
never copies: in the simulator those objects are shared by every core, so an entry
costs one slotted object plus its dict slot (~150 bytes, measured in the tests).

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


class Member:
    __slots__ = ("accuse", "ad", "ad_deltas", "ad_full", "alive", "since", "state", "valid_until")

    def __init__(self, alive: Alive, now: float) -> None:
        self.state = MemberState.ALIVE
        self.alive = alive
        self.accuse: Accuse | None = None
        self.ad_full: AdUpdate | None = None
        self.ad_deltas: tuple[AdUpdate, ...] = ()
        self.ad: ResourceAd | None = None
        self.since = now
        #: Colony mode: when the member's certificate chain stops being valid.
        self.valid_until = math.inf

    @property
    def incarnation(self) -> int:
        inc = self.alive.incarnation
        acc = self.accuse
        return inc if acc is None or acc.incarnation < inc else acc.incarnation

    @property
    def ad_version(self) -> int:
        if self.ad_deltas:
            return self.ad_deltas[-1].version
        return -1 if self.ad_full is None else self.ad_full.version

    def record(self) -> MemberRecord:
        ads: tuple[AdUpdate, ...] = ()
        if self.ad_full is not None:
            ads = (self.ad_full, *self.ad_deltas)
        return MemberRecord(self.alive, self.accuse, ads)


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
