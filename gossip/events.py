"""Commands a driver gives the gossip core, and the events the core emits.

Commands are imperative (`Join`, `Leave`, `UpdateAd`, `SendUserEvent`); events are
past-tense facts (`MemberJoined`, …) handed up in `Emit` effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gossip.cells import CellId
from gossip.resources import ResourceAd
from overlay.core.crypto import Envelope
from overlay.core.ids import PeerId

# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Join:
    """Start the protocol and push-pull with `seeds` (none: found a new colony)."""

    seeds: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class Leave:
    """Announce a graceful leave; `LeftColony` follows after `leave_propagate_s`."""


@dataclass(frozen=True, slots=True)
class UpdateAd:
    """Publish a new resource advertisement (as a delta when small)."""

    ad: ResourceAd


@dataclass(frozen=True, slots=True)
class SendUserEvent:
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PublishRevocation:
    """Colony mode: apply and gossip a signed revocation (a `colony-revocation`
    envelope, see overlay.core.certs)."""

    envelope: Envelope


Command = Join | Leave | UpdateAd | SendUserEvent | PublishRevocation
COMMAND_TYPES: tuple[type, ...] = (Join, Leave, UpdateAd, SendUserEvent, PublishRevocation)

# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class KeepCell:
    """Command: keep only members whose cell key lies in `cell` (gossip/cells.py), now
    and for every member learned later; members outside it are dropped unsigned
    (`MemberLeftCell`), as after a cell split. None lifts the restriction."""

    cell: CellId | None


@dataclass(frozen=True, slots=True)
class MemberJoined:
    peer: PeerId
    incarnation: int
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberSuspected:
    peer: PeerId
    incarnation: int
    accuser: PeerId


@dataclass(frozen=True, slots=True)
class MemberFailed:
    peer: PeerId
    incarnation: int
    accuser: PeerId


@dataclass(frozen=True, slots=True)
class MemberLeft:
    peer: PeerId
    incarnation: int


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """A member refuted a suspicion, changed its addresses or published a new ad."""

    peer: PeerId
    incarnation: int
    ad: ResourceAd | None


@dataclass(frozen=True, slots=True)
class MemberReaped:
    """A dead or left member's tombstone expired; it is forgotten."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class UserEventReceived:
    sender: PeerId
    name: str
    payload: bytes
    lamport: int
    seq: int
    #: The sender's signed event (triggers carry it as the proof of their origin).
    env: Envelope | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UserEventSent:
    """Our own user event, as it left (a sender is not delivered its own events)."""

    sender: PeerId
    name: str
    payload: bytes
    lamport: int
    seq: int
    env: Envelope | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MemberRefused:
    """Colony mode: a claim or message from `peer` was refused (no valid `member`
    certificate, expired, revoked, or not a member). Rate-limited per peer."""

    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class MemberExpelled:
    """Colony mode: a member's certificate expired or was revoked; it is forgotten
    and its later messages are refused."""

    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class RevocationLearned:
    """A new, valid revocation was added (from a peer or `PublishRevocation`)."""

    cert_id: bytes
    revoker: PeerId
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class OwnCertificateRevoked:
    """A valid revocation names a certificate of this node's own chain: the colony no
    longer admits us (members refuse our messages). The host should log it and stop
    (or get a new certificate); the core does not stop by itself."""

    cert_id: bytes
    revoker: PeerId
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class MemberLeftCell:
    """`peer` was dropped because its key is outside this node's cell (`KeepCell`)."""

    peer: PeerId
    cell: CellId


@dataclass(frozen=True, slots=True)
class LeftColony:
    """This node finished its graceful leave; the core is now inert."""
