"""`/colony/revlist/<colony>`: a colony's revocations, published for other colonies.

A colony gossips its revocations to its own members only (gossip membership is per
colony). Colony A, which gave colony B a grant, checks a B member's chain to B's owner
when it verifies a proof (overlay/core/grants.py `verify_proof`); to honour B's
revocations it needs them. B's nodes that can sign for B (the owner key's node, and
holders of ``admit``) publish them here; A looks them up (docs/federation.md,
"B's revocations reach A").

The value is an `Envelope` of kind ``colony-revlist`` whose body is
``{"name": <the key as text>, "seq": int ≥ 0, "expires": seconds since the epoch,
"revs": [colony-revocation envelope bytes…], "chain": [certificate…]}``.

Valid when: the signature verifies; the body names this very key (no replay under
another colony); `expires` is in the future; the signer is the colony's owner (the key
names it) or, by the chain inside the signed body, holds ``admit`` in the colony now
(`verify_chain`; a member without admit cannot publish, so it cannot push a huge
`seq` that would hide the genuine list); at most `MAX_REVLIST_ENTRIES` revocations,
each a signed ``colony-revocation`` of this colony, no two alike. Whether each
revoker had authority over the certificate it names is decided where a chain is
checked (`verify_chain` with the list), as for revocations gossiped inside a colony:
a list carries statements, it does not vouch for them.

Selector: highest `seq`, then later `expires`, then the larger envelope bytes — a total
order, so every node keeps the same record. A reader never needs the newest record to
be complete: revocations are individually signed, so a reader keeps the union of
every list it verified (until each certificate expires), and a stale or rolled-back
record can only be late, never take a revocation back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dht.records import UnknownNamespace, ValidRecord
from overlay.core.certs import (
    Certificate,
    NotAuthorized,
    Revocation,
    Role,
    chain_from_wire,
    chain_to_wire,
    verify_chain,
)
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.core.validate import number, uint

REVLIST_PREFIX = b"/colony/revlist/"
REVLIST_KIND = "colony-revlist"
#: Revocations in one record: a revocation envelope is ~230 bytes, so 240 of them and
#: a 3-link chain stay under the DHT's 64 KiB value limit (dht/wire.py).
MAX_REVLIST_ENTRIES = 240
_FIELDS = {"name", "seq", "expires", "revs", "chain"}


def revlist_key(colony: PeerId) -> bytes:
    return REVLIST_PREFIX + colony.to_base58().encode()


@dataclass(frozen=True, slots=True)
class RevListRecord:
    """A verified revocation list of colony `colony` (owner key)."""

    colony: bytes
    seq: int
    expires: float
    revs: tuple[Revocation, ...]
    signer: PeerId
    envelope: Envelope


def make_revlist_record(kp: KeyPair, colony: PeerId, revs: Sequence[Revocation], seq: int,
                        expires: float, chain: Sequence[Certificate] = ()
                        ) -> tuple[bytes, bytes]:  # fmt: skip
    """(key, record value) of a signed list (ValueError if it holds too many)."""
    if len(revs) > MAX_REVLIST_ENTRIES:
        raise ValueError(f"a revocation list holds at most {MAX_REVLIST_ENTRIES} entries")
    key = revlist_key(colony)
    env = kp.seal(REVLIST_KIND, {"name": key.decode("ascii"), "seq": seq, "expires": expires,
                                 "revs": [r.envelope.to_bytes() for r in revs],
                                 "chain": chain_to_wire(chain) if chain else []})  # fmt: skip
    return key, env.to_bytes()


def _colony_of(key: bytes) -> bytes:
    if not key.startswith(REVLIST_PREFIX):
        raise UnknownNamespace("not a /colony/revlist/ key")
    try:
        peer = PeerId.from_base58(key[len(REVLIST_PREFIX):].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedFrame("a revlist key is /colony/revlist/<colony id>") from None
    owner = peer.ed25519_public_key()
    if owner is None:
        raise MalformedFrame("a colony id is an Ed25519 key")
    return owner


def _revs(raw: object, colony: bytes) -> tuple[Revocation, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_REVLIST_ENTRIES:
        raise MalformedFrame(f"revlist revs must be a list of at most {MAX_REVLIST_ENTRIES}")
    if not all(isinstance(r, bytes) for r in raw) or len(set(raw)) != len(raw):
        raise MalformedFrame("revlist revs must be distinct revocation envelope bytes")
    out = []
    for r in raw:
        rev = Revocation.from_envelope(Envelope.from_bytes(r))  # BadSignature if forged
        if rev.colony != colony:
            raise MalformedFrame("revlist holds a revocation of another colony")
        out.append(rev)
    return tuple(out)


def parse_revlist_record(key: bytes, value: bytes, now: float) -> RevListRecord:
    """Verify a list for `key`; the WireError family, ExpiredError or NotAuthorized
    (a signer that is neither the owner nor an admit holder) name what is wrong."""
    colony = _colony_of(key)
    env = Envelope.from_bytes(value)
    body = env.open(REVLIST_KIND)  # BadSignature unless the signature holds
    if not isinstance(body, dict) or set(body) != _FIELDS:
        raise MalformedFrame("revlist body must be {name, seq, expires, revs, chain}")
    if body["name"] != key.decode("ascii"):
        raise BadSignature("revlist signed for another colony's key")
    seq = uint(body["seq"], "revlist seq", message="{what} must be a non-negative int")
    expires = number(body["expires"], "revlist expires", lo=-math.inf,
                     message="{what} must be a finite number")
    if not expires > now:
        raise ExpiredError("revlist has expired")
    signer = env.signer_id
    if env.signer != colony:
        chain = chain_from_wire(body["chain"]) if body["chain"] else ()
        try:
            verify_chain(chain, colony, signer, Role.ADMIT, now)
        except RemoteProtocolError as e:
            raise NotAuthorized(f"revocation list signed by {signer.short()}, neither the "
                                f"colony's owner nor a holder of admit: {e}") from None
    return RevListRecord(colony, seq, expires, _revs(body["revs"], colony), signer, env)


class RevListValidator:
    """Validator and selector for `/colony/revlist/` records (dht/records.Validators)."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        rec = parse_revlist_record(key, value, now)
        return ValidRecord(key, value, rec.seq, rec.expires, value)

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")
        return max(range(len(records)),
                   key=lambda i: (records[i].seq, records[i].expires, records[i].value))


__all__ = [
    "MAX_REVLIST_ENTRIES",
    "REVLIST_KIND",
    "REVLIST_PREFIX",
    "RevListRecord",
    "RevListValidator",
    "make_revlist_record",
    "parse_revlist_record",
    "revlist_key",
]
