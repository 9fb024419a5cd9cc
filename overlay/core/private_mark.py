"""The private mark: a member's signed statement "the DAG under this root is for
colony members only" (docs/trust.md, "Private data").

A mark travels with the DAG: every member that fetches a block of a marked DAG gets
the mark from its provider, checks it, keeps it with its copy and from then on serves
those blocks to members only, whatever its own `[trust] serve_public`. So privacy does
not depend on each holder remembering to mark its copy.

Body (canonical CBOR, envelope kind `colony-private-mark`, signed by the marker):

    {"colony": owner key (32 bytes), "root": root CID (bytes), "issued": unix seconds,
     "chain": the marker's certificate chain, root first}

The chain is inside the signed body, so a forwarder can neither strip nor swap it;
anyone who knows the colony owner key can check a mark with no other state.

Invariant: `PrivateMark.verify` accepts a mark only when its signer held the
`member` role in this colony at `issued` (by `verify_chain`) and `issued` is not in
the future beyond `MAX_SKEW_S`. Revocations are not consulted: a mark can only make
data *more* private, so an old mark of a since-revoked member still binds (losing it
would leak the DAG it covers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from overlay.core.certs import (
    Certificate,
    NotAuthorized,
    Role,
    _time,
    chain_from_wire,
    chain_to_wire,
    verify_chain,
)
from overlay.core.cid import Cid
from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import ColonyError, MalformedFrame
from overlay.core.ids import PeerId

PRIVATE_MARK_KIND = "colony-private-mark"
#: A mark issued further than this in the future (clock skew) is refused.
MAX_SKEW_S = 300.0
_FIELDS = {"colony", "root", "issued", "chain"}


@dataclass(frozen=True)
class PrivateMark:
    """A verified-signature private mark (call `verify` for the colony rules)."""

    colony: bytes
    root: Cid
    issued: float
    chain: tuple[Certificate, ...]
    envelope: Envelope

    @property
    def marker(self) -> PeerId:
        return self.envelope.signer_id

    @classmethod
    def issue(
        cls,
        marker: KeyPair,
        colony: bytes,
        root: Cid,
        chain: Sequence[Certificate],
        issued: float,
    ) -> PrivateMark:
        body = {"colony": colony, "root": root.to_bytes(), "issued": issued,
                "chain": chain_to_wire(chain)}  # fmt: skip
        return cls.from_envelope(marker.seal(PRIVATE_MARK_KIND, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> PrivateMark:
        """Check the signature and the fields (MalformedFrame / BadSignature)."""
        body = env.open(PRIVATE_MARK_KIND)
        if not isinstance(body, dict) or set(body) != _FIELDS:
            raise MalformedFrame("private mark body has the wrong fields")
        colony, root = body["colony"], body["root"]
        if not isinstance(colony, bytes) or len(colony) != 32:
            raise MalformedFrame("private mark colony must be a 32-byte owner key")
        if not isinstance(root, bytes):
            raise MalformedFrame("private mark root must be CID bytes")
        try:
            cid = Cid.from_bytes(root)
        except ColonyError as e:
            raise MalformedFrame(f"private mark root: {e}") from None
        chain = chain_from_wire(body["chain"])
        return cls(colony, cid, _time(body["issued"], "private mark issued"), chain, env)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivateMark:
        return cls.from_envelope(Envelope.from_bytes(data))

    def to_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def verify(self, colony_owner: PublicKey | bytes, now: float) -> None:
        """NotAuthorized unless the marker was a member of this colony when it marked."""
        owner = colony_owner.raw if isinstance(colony_owner, PublicKey) else bytes(colony_owner)
        if self.colony != owner:
            raise NotAuthorized("the private mark is for another colony")
        if self.issued > now + MAX_SKEW_S:
            raise NotAuthorized(f"the private mark is issued in the future ({self.issued:.0f})")
        verify_chain(self.chain, owner, self.marker, Role.MEMBER, self.issued)


def check_mark(data: Any, colony_owner: bytes, now: float) -> PrivateMark:
    """Parse and verify a mark received from a peer; RemoteProtocolError with the
    reason when it is malformed, forged or not a member's."""
    if not isinstance(data, bytes):
        raise MalformedFrame("a private mark must be bytes")
    try:
        mark = PrivateMark.from_bytes(data)
    except (ColonyError, ValueError) as e:
        raise MalformedFrame(f"bad private mark: {e}") from None
    mark.verify(colony_owner, now)
    return mark


__all__ = ["MAX_SKEW_S", "PRIVATE_MARK_KIND", "PrivateMark", "check_mark"]
