"""`/colony/grant/<A>/<B>`: the newest grant colony A gave colony B, in the DHT.

`<A>` and `<B>` are colony ids (owner keys as peer ids, 12D3Koo…). Any of A's nodes
can find the grant a member of B relies on, and B's nodes can fetch it, from the key
alone (docs/federation.md). The value is the grant's envelope bytes
(overlay/core/grants.py).

Valid when: the signature verifies; the key names the grant's own colony and grantee
(no replay under another pair); it has not expired; its signer is A's owner or, by
the chain inside the grant, held `admit` in A when it signed. Revocations are not
consulted here (a DHT node may not know them): A's nodes check them when they act on
a grant, and a revoked grant's revocation sits under `/colony/revoke/<grant id>`.

Selector: the latest `issued`, then the larger envelope bytes — a total order, so every
node keeps the same record. One record per pair: A's nodes keep every grant they gave
in their trust directory; the DHT holds the newest.
"""

from __future__ import annotations

from collections.abc import Sequence

from dht.records import UnknownNamespace, ValidRecord
from overlay.core.certs import Role, verify_chain
from overlay.core.errors import ExpiredError, MalformedFrame, RemoteProtocolError
from overlay.core.grants import Grant, parse_grant
from overlay.core.ids import PeerId

GRANT_PREFIX = b"/colony/grant/"


def grant_key(colony: bytes, grantee: bytes) -> bytes:
    a, b = PeerId.from_ed25519(colony), PeerId.from_ed25519(grantee)
    return GRANT_PREFIX + f"{a}/{b}".encode()


def check_grant_record(key: bytes, value: bytes, now: float) -> Grant:
    """The grant stored under `key`, or a RemoteProtocolError naming what is wrong."""
    if not key.startswith(GRANT_PREFIX):
        raise UnknownNamespace("not a /colony/grant/ key")
    g = parse_grant(value)
    if key != grant_key(g.colony, g.grantee):
        raise MalformedFrame("grant stored under another pair of colonies")
    if not g.expires > now:
        raise ExpiredError("grant has expired; the record is moot")
    if g.envelope.signer != g.colony:
        try:
            verify_chain(g.chain, g.colony, g.issuer, Role.ADMIT, g.issued)
        except RemoteProtocolError as e:
            raise MalformedFrame(f"grant signer may not admit in its colony: {e}") from None
    return g


class GrantValidator:
    """Validator and selector for `/colony/grant/<A>/<B>`."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        g = check_grant_record(key, value, now)
        return ValidRecord(key, value, int(g.issued), g.expires, value)

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")
        return max(range(len(records)), key=lambda i: (records[i].seq, records[i].value))


__all__ = ["GRANT_PREFIX", "GrantValidator", "check_grant_record", "grant_key"]
