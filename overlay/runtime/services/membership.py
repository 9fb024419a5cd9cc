"""A read-only view of gossip membership (context.Membership).

Services read the member list, one member, this node's own resource ad and whether a
peer is a live member through this view; only the driver's core changes membership.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossip.members import MemberState

if TYPE_CHECKING:
    from gossip.members import MemberInfo
    from gossip.resources import ResourceAd
    from gossip.swim import Swim
    from overlay.core.ids import PeerId

#: Alive or suspect: still a member (SWIM §4.2: a suspect may refute).
LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


class SwimMembership:
    def __init__(self, swim: Swim) -> None:
        self._swim = swim

    def list_members(self, *, include_gone: bool = False) -> list[MemberInfo]:
        """Live members, self first (every member known with `include_gone`)."""
        return self._swim.list_members(include_gone=include_gone)

    def member(self, peer: PeerId) -> MemberInfo | None:
        return self._swim.member(peer)

    def own_ad(self) -> ResourceAd | None:
        return self._swim.ad

    def is_member(self, peer: PeerId) -> bool:
        info = self._swim.member(peer)
        return info is not None and info.state in LIVE
