"""This node as a gossip member: its keys, its signed claims and its lifecycle.

Only the subject signs its alive claims (SWIM §4.2 refutation needs that), so this is
the one object that holds our own incarnation and current `Alive`; the refutation
rule that raises them lives in gossip/transitions.py. Our own resource ad chain (a
full signed ad, then deltas) is published by gossip/dissemination.py and kept here.

Invariants: `incarnation` never decreases; `alive` is always our claim at
`incarnation`; `leaving` implies `started`.
"""

from __future__ import annotations

from gossip.coordinates import Coord
from gossip.members import MemberInfo, MemberState
from gossip.messages import Accuse, AdUpdate, Alive, MemberRecord
from gossip.resources import ResourceAd
from overlay.core.crypto import Envelope, KeyPair


class LocalNode:
    """Our identity, claims, lifecycle flags and ad chain (see module docstring)."""

    __slots__ = (
        "ad",
        "ad_deltas",
        "ad_full",
        "ad_version",
        "addrs",
        "alive",
        "chain",
        "incarnation",
        "keys",
        "leaving",
        "left",
        "me",
        "started",
    )

    def __init__(
        self,
        keys: KeyPair,
        addrs: tuple[str, ...],
        incarnation: int,
        chain: tuple[Envelope, ...],
        ad: ResourceAd | None,
    ) -> None:
        self.keys = keys
        self.me = keys.peer_id
        self.addrs = addrs
        self.incarnation = incarnation
        #: Colony mode: our certificate chain, carried in every alive claim.
        self.chain = chain
        self.alive = Alive.create(keys, incarnation, addrs, chain)
        #: Our signed leave notice, once `Leave` was given.
        self.left: Accuse | None = None
        self.started = False
        self.leaving = False
        self.ad = ad
        self.ad_version = -1
        self.ad_full: AdUpdate | None = None
        self.ad_deltas: tuple[AdUpdate, ...] = ()

    def record(self) -> MemberRecord:
        """Our own push-pull record: alive claim, leave notice, ad chain."""
        if self.ad_full is None and self.left is None:
            return self.alive.plain_record()
        ads: tuple[AdUpdate, ...] = ()
        if self.ad_full is not None:
            ads = (self.ad_full, *self.ad_deltas)
        return MemberRecord(self.alive, self.left, ads)

    def info(self, coord: Coord) -> MemberInfo:
        state = MemberState.LEFT if self.leaving else MemberState.ALIVE
        return MemberInfo(
            self.me,
            state,
            self.incarnation,
            self.addrs,
            self.ad,
            self.ad_version,
            0.0,
            0.0,
            coord,
            is_self=True,
        )

    def own_ad_sigs(self) -> list[bytes]:
        own = [d.env.signature for d in self.ad_deltas]
        if self.ad_full is not None:
            own.append(self.ad_full.env.signature)
        return own
