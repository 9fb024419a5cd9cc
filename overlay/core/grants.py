"""Cross-colony grants: colony A lets colony B's members read, submit or execute, with
quotas and an expiry (docs/federation.md).

A grant is an Envelope of kind ``colony-grant``, signed by A's owner or by a member of
A holding ``admit`` (whose chain is then inside the signed body)::

    {"colony": A's owner key (32 bytes), "grantee": B's owner key (32 bytes),
     "roles": ["execute", "read", "submit"] (sorted, unique, non-empty),
     "roots": [CID bytes…]  DAGs of A that `read` covers (may be empty),
     "prefix": str          sync labels of A whose name starts with it ("" = none),
     "quota": {"capsules": n, "cpu_s": n, "bytes": n}  per UTC day; a key left out
                            is unlimited,
     "issued": unix seconds, "expires": unix seconds,
     "chain": [the issuer's certificate chain in A, root first] ([] for the owner)}

A grant names *colonies*, not nodes: any member of B proves itself with its own chain
to B's owner plus the grant (`verify_proof`). Gossip membership stays per colony.

`verify_grant` refuses, in this order, naming the rule: a forged envelope (at parse:
`BadSignature`); a grant of another colony; one not yet valid (beyond `CLOCK_SKEW_S`)
or expired (strict, by the checker's clock: a fast clock only refuses early); one
signed by a key that is neither A's owner nor, by the chain in the body, a holder of
``admit`` in A now (a delegate whose own certificate expired or was revoked can no
longer vouch for its grants); one revoked by a key with authority over it (A's owner,
its signer, or an issuer above the signer in its chain).

A grant revocation is an ordinary ``colony-revocation`` (overlay/core/certs.py) whose
certificate id is the grant id (sha2-256 multihash of the grant envelope), so it
travels exactly like certificate revocations: gossiped in A, kept in
`<home>/trust/revocations.cbor`, stored in the DHT under ``/colony/revoke/<id>``.

Invariants: every refusal is a `RemoteProtocolError` with the reason; a verified
`Grant` holds exactly what its signed envelope says (it is built only by
`from_envelope`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overlay.core.certs import (
    CLOCK_SKEW_S,
    MAX_CHAIN_DEPTH,
    REVOCATION_KIND,
    Certificate,
    ExpiredError,
    NotAuthorized,
    Revocation,
    RevocationList,
    Revoked,
    Role,
    _fmt_time,
    _short,
    _time,
    chain_from_wire,
    chain_to_wire,
    verify_chain,
)
from overlay.core.cid import Cid
from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import (
    BadSignature,
    ColonyError,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
)
from overlay.core.ids import PeerId
from overlay.core.multiformats import multihash_sha256
from overlay.core.wire import cbor_decode, cbor_encode

GRANT_KIND = "colony-grant"
READ, SUBMIT, EXECUTE = "read", "submit", "execute"
GRANT_ROLES: tuple[str, ...] = (EXECUTE, READ, SUBMIT)
#: Quota names: capsules accepted, CPU-seconds charged, bytes served; per UTC day.
QUOTA_KEYS: tuple[str, ...] = ("bytes", "capsules", "cpu_s")
QUOTA_UNITS = {"capsules": "capsules", "cpu_s": "CPU-s", "bytes": "bytes"}
MAX_ROOTS = 256
MAX_PREFIX_CHARS = 128
MAX_TOKEN_BYTES = 32 * 1024
MAX_TOKEN_ADDRS = 16
#: Which role of its own colony a grantee's member needs for each grant role: reading
#: takes membership of B; submitting and executing take B's role of the same name (B's
#: admins decide which of their members may spend B's grants).
GRANTEE_ROLE = {READ: Role.MEMBER.value, SUBMIT: Role.SUBMIT.value,
                EXECUTE: Role.EXECUTE.value}  # fmt: skip
_FIELDS = {"colony", "grantee", "roles", "roots", "prefix", "quota", "issued", "expires",
           "chain"}  # fmt: skip


def colony_name(owner: bytes) -> str:
    """A colony as people see it: its owner key as a short peer id ("12D3…xyz123")."""
    return _short(PeerId.from_ed25519(owner))


def _key(v: Any, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise MalformedFrame(f"grant {what} must be a 32-byte owner key")
    return v


def _parse_roles(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or any(r not in GRANT_ROLES for r in v):
        raise MalformedFrame(f"grant roles must be a non-empty list of {', '.join(GRANT_ROLES)}")
    if list(v) != sorted(set(v)):
        raise MalformedFrame("grant roles must be sorted and unique")
    return tuple(v)


def _parse_roots(v: Any) -> tuple[Cid, ...]:
    if not isinstance(v, list) or len(v) > MAX_ROOTS:
        raise MalformedFrame(f"grant roots must be a list of at most {MAX_ROOTS} CIDs")
    if not all(isinstance(r, bytes) for r in v):
        raise MalformedFrame("grant roots must be CID bytes")
    try:
        return tuple(Cid.from_bytes(r) for r in v)
    except ColonyError as e:
        raise MalformedFrame(f"grant root: {e}") from None


def _parse_quota(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or any(k not in QUOTA_KEYS for k in v):
        raise MalformedFrame(f"grant quota keys are {', '.join(QUOTA_KEYS)}")
    for k, n in v.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n >= 2**63:
            raise MalformedFrame(f"grant quota {k} must be a non-negative integer")
    return {k: v[k] for k in sorted(v)}


@dataclass(frozen=True, slots=True)
class Grant:
    """A signature-checked grant (call `verify_grant` for the colony rules)."""

    colony: bytes
    grantee: bytes
    roles: tuple[str, ...]
    roots: tuple[Cid, ...]
    prefix: str
    quota: Mapping[str, int]
    issued: float
    expires: float
    chain: tuple[Certificate, ...]
    envelope: Envelope

    @property
    def issuer(self) -> PeerId:
        return self.envelope.signer_id

    @property
    def grant_id(self) -> bytes:
        """sha2-256 multihash of the envelope's canonical bytes (what a revocation names)."""
        return multihash_sha256(self.envelope.to_bytes())

    @property
    def serial(self) -> str:
        return self.grant_id[2:].hex()

    def gives(self, role: str) -> bool:
        return role in self.roles

    def limit(self, key: str) -> int | None:
        """The daily quota `key` ("capsules", "cpu_s", "bytes"), None if unlimited."""
        return self.quota.get(key)

    @classmethod
    def issue(
        cls,
        issuer: KeyPair,
        colony: bytes,
        grantee: bytes,
        roles: Iterable[str],
        issued: float,
        expires: float,
        *,
        roots: Sequence[Cid] = (),
        prefix: str = "",
        quota: Mapping[str, int] | None = None,
        chain: Sequence[Certificate] = (),
    ) -> Grant:
        """Sign a grant (ValueError for a malformed request; `verify_grant` checks the
        issuer's authority)."""
        names = sorted(set(roles))
        if not names or any(r not in GRANT_ROLES for r in names):
            raise ValueError(f"a grant gives one or more of {', '.join(GRANT_ROLES)}")
        if READ in names and not roots and not prefix:
            raise ValueError("a read grant names DAG roots, a label prefix, or both")
        if expires <= issued:
            raise ValueError("a grant must expire after it is issued")
        if colony == grantee:
            raise ValueError("a colony does not grant to itself")
        if len(prefix) > MAX_PREFIX_CHARS:
            raise ValueError(f"a label prefix has at most {MAX_PREFIX_CHARS} characters")
        body = {
            "colony": bytes(colony), "grantee": bytes(grantee), "roles": names,
            "roots": [c.to_bytes() for c in roots], "prefix": prefix,
            "quota": dict(quota or {}), "issued": issued, "expires": expires,
            "chain": chain_to_wire(chain) if chain else [],
        }  # fmt: skip
        try:
            return cls.from_envelope(issuer.seal(GRANT_KIND, body))
        except MalformedFrame as e:
            raise ValueError(str(e)) from None

    @classmethod
    def from_envelope(cls, env: Envelope) -> Grant:
        """Check the signature, then parse the body (BadSignature / MalformedFrame)."""
        body = env.open(GRANT_KIND)
        if not isinstance(body, dict) or set(body) != _FIELDS:
            raise MalformedFrame("grant body has the wrong fields")
        prefix = body["prefix"]
        if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_CHARS:
            raise MalformedFrame(f"grant prefix must be text of ≤ {MAX_PREFIX_CHARS} chars")
        raw_chain = body["chain"]
        chain = chain_from_wire(raw_chain) if raw_chain != [] else ()
        issued = _time(body["issued"], "grant issued")
        expires = _time(body["expires"], "grant expires")
        if expires <= issued:
            raise MalformedFrame("grant expires before it is issued")
        return cls(_key(body["colony"], "colony"), _key(body["grantee"], "grantee"),
                   _parse_roles(body["roles"]), _parse_roots(body["roots"]), prefix,
                   _parse_quota(body["quota"]), issued, expires, chain, env)  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> Grant:
        return cls.from_envelope(Envelope.from_bytes(data))

    def to_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def to_wire(self) -> list[Any]:
        return self.envelope.to_wire()

    @classmethod
    def from_wire(cls, obj: Any) -> Grant:
        return cls.from_envelope(Envelope.from_wire(obj))

    def covers_label(self, label: str) -> bool:
        return bool(self.prefix) and label.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class GrantToken:
    """A grant as handed to the grantee's admin: ``base64url(canonical CBOR {"g":
    grant envelope bytes, "a": [multiaddrs of the granting colony's nodes]})``, so
    the grantee's nodes know where to present it."""

    grant: Grant
    addrs: tuple[str, ...] = ()

    def encode(self) -> str:
        raw = cbor_encode({"g": self.grant.to_bytes(), "a": list(self.addrs)})
        if len(raw) > MAX_TOKEN_BYTES:
            raise ValueError(f"grant token of {len(raw)} bytes exceeds {MAX_TOKEN_BYTES}")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> GrantToken:
        """Parse a token (the grant's signature is checked); MalformedFrame if bad."""
        text = text.strip()
        if len(text) > MAX_TOKEN_BYTES * 4 // 3 + 4:
            raise MalformedFrame("grant token too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, TypeError) as e:
            raise MalformedFrame(f"grant token is not base64url: {e}") from None
        body = cbor_decode(raw)
        if not isinstance(body, dict) or set(body) != {"g", "a"}:
            raise MalformedFrame("grant token must hold exactly g and a")
        addrs = body["a"]
        if not isinstance(addrs, list) or len(addrs) > MAX_TOKEN_ADDRS or not all(
                isinstance(a, str) and 0 < len(a) <= 512 for a in addrs):
            raise MalformedFrame(f"grant token holds at most {MAX_TOKEN_ADDRS} addresses")
        return cls(parse_grant(body["g"]), tuple(addrs))


def parse_grant(data: Any) -> Grant:
    """A grant received from a peer (envelope bytes or wire list); MalformedFrame or
    BadSignature with the reason when it is not a well-formed signed grant."""
    try:
        if isinstance(data, bytes):
            return Grant.from_bytes(data)
        return Grant.from_wire(data)
    except RemoteProtocolError:
        raise
    except (ColonyError, ValueError, TypeError) as e:
        raise MalformedFrame(f"bad grant: {e}") from None


def verify_grant(
    grant: Grant,
    colony_owner: PublicKey | bytes,
    now: float,
    revocations: RevocationList | None = None,
) -> Grant:
    """Check that `grant` is in force in colony `colony_owner` at `now` (module
    docstring for the rules); return it, or raise naming the rule."""
    owner = colony_owner.raw if isinstance(colony_owner, PublicKey) else bytes(colony_owner)
    gid = grant.serial[:12]
    if grant.colony != owner:
        raise NotAuthorized(f"grant {gid} is for colony {colony_name(grant.colony)}, "
                            f"not this colony {colony_name(owner)}")  # fmt: skip
    if now + CLOCK_SKEW_S < grant.issued:
        raise NotAuthorized(f"grant {gid} is not valid before {_fmt_time(grant.issued)}")
    if now >= grant.expires:
        raise ExpiredError(f"grant {gid} expired at {_fmt_time(grant.expires)}")
    signer = grant.envelope.signer
    authority = {owner, signer}
    if signer != owner:
        if not grant.chain:
            raise NotAuthorized(f"grant {gid} is signed by {_short(grant.issuer)}, who is "
                                "not the owner and shows no certificate chain")  # fmt: skip
        try:
            verify_chain(grant.chain, owner, grant.issuer, Role.ADMIT, now, revocations)
        except RemoteProtocolError as e:
            raise NotAuthorized(f"grant {gid} is signed by {_short(grant.issuer)}, who may "
                                f"not admit in this colony: {e}") from None
        authority.update(c.envelope.signer for c in grant.chain)
    if revocations:
        if any(k in authority for k in revocations.revokers(grant.grant_id)):
            raise Revoked(f"grant {gid} to colony {colony_name(grant.grantee)} was revoked")
    return grant


def revocation_authority(grant: Grant) -> frozenset[bytes]:
    """Keys whose revocation of `grant` takes effect: A's owner, its signer and every
    issuer of the signer's chain."""
    return frozenset({grant.colony, grant.envelope.signer,
                      *(c.envelope.signer for c in grant.chain)})  # fmt: skip


def revoke_grant(revoker: KeyPair, grant: Grant, issued: float) -> Revocation:
    """A revocation naming `grant` (the certificate revocation, with the grant id)."""
    body = {"colony": grant.colony, "cert": grant.grant_id, "cert_expires": grant.expires,
            "issued": issued}  # fmt: skip
    return Revocation.from_envelope(revoker.seal(REVOCATION_KIND, body))


@dataclass(frozen=True, slots=True)
class Proof:
    """What a member of B shows A: its chain to B's owner and A's grant to B."""

    chain: tuple[Certificate, ...]
    grant: Grant

    def to_wire(self) -> dict[str, Any]:
        return {"chain": chain_to_wire(self.chain), "grant": self.grant.to_bytes()}

    @classmethod
    def from_wire(cls, obj: Any) -> Proof:
        if not isinstance(obj, dict) or set(obj) != {"chain", "grant"}:
            raise MalformedFrame("a federation proof holds exactly chain and grant")
        chain = chain_from_wire(obj["chain"])
        if len(chain) > MAX_CHAIN_DEPTH:
            raise MalformedFrame("federation proof chain too long")
        return cls(chain, parse_grant(obj["grant"]))


def verify_proof(
    proof: Proof,
    colony_owner: PublicKey | bytes,
    peer: PeerId,
    role: str,
    now: float,
    revocations: RevocationList | None = None,
    grantee_revocations: RevocationList | None = None,
) -> Grant:
    """Check that `peer`, a member of the grantee colony by `proof.chain` (B's owner
    as root, the role of `GRANTEE_ROLE`), may act with grant role `role` in colony
    `colony_owner` through `proof.grant`. Returns the grant or raises with the reason.
    `revocations` are A's, checked against the grant; `grantee_revocations` are B's
    as A learned them (B's gossip does not reach A: they come from B's list in the
    DHT, dht/revlists.py), checked against the chain."""
    grant = verify_grant(proof.grant, colony_owner, now, revocations)
    if not grant.gives(role):
        raise NotAuthorized(f"grant {grant.serial[:12]} to colony "
                            f"{colony_name(grant.grantee)} does not give {role}")  # fmt: skip
    if grantee_revocations is not None and grantee_revocations.colony != grant.grantee:
        raise LocalProtocolError("grantee_revocations are another colony's")
    try:
        verify_chain(proof.chain, grant.grantee, peer, GRANTEE_ROLE[role], now,
                     grantee_revocations)
    except RemoteProtocolError as e:
        raise NotAuthorized(f"{_short(peer)} is not a member of colony "
                            f"{colony_name(grant.grantee)} able to {role}: {e}") from None
    return grant


__all__ = [
    "EXECUTE",
    "GRANTEE_ROLE",
    "GRANT_KIND",
    "GRANT_ROLES",
    "QUOTA_KEYS",
    "QUOTA_UNITS",
    "READ",
    "SUBMIT",
    "BadSignature",
    "Grant",
    "GrantToken",
    "Proof",
    "colony_name",
    "parse_grant",
    "revocation_authority",
    "revoke_grant",
    "verify_grant",
    "verify_proof",
]
