"""Colony membership certificates, delegation chains, revocations and join tokens.

DESIGN §3 "trust": a colony *is* an owner Ed25519 key. The owner signs membership
certificates (Envelope kind ``colony-cert``)::

    {"colony": owner public key (32 bytes), "subject": peer id bytes,
     "roles": ["admit", "execute", "member", "submit"] (sorted, unique),
     "issued": unix seconds, "expires": unix seconds}

A holder of ``admit`` may delegate: it signs a certificate for another peer. A chain is
ordered root first: ``chain[0]`` is signed by the owner, ``chain[i+1]`` by the subject
of ``chain[i]``. `verify_chain` enforces, in this order, for every link:

1. signature valid and the signer is the owner (link 0) or the previous subject;
2. same colony throughout; chain length ≤ `MAX_CHAIN_DEPTH`;
3. every non-leaf link grants ``admit``; a delegated link carries a subset of its
   delegator's roles and expires no later than it (no outliving the delegator);
4. ``issued − CLOCK_SKEW_S ≤ now < expires`` for every link: a certificate is taken up
   to `CLOCK_SKEW_S` before its issue time, because the checker's clock may be behind
   the issuer's (a node 5 min slow refused every fresh member before); expiry is
   strict by the checker's clock (a fast clock only expels early, the safe side);
5. no link is revoked by a key with authority over it (the owner, or any issuer at or
   above that link in the chain);
6. the leaf's subject is the expected peer and it grants the requested role.

Failures raise `BadSignature` (forged or mis-signed link), `ExpiredError` (validity
over) or `NotAuthorized` (everything else) with a reason naming the peer and the rule,
e.g. "certificate for 12D3…xyz expired at 2024-05-01T12:00:00Z" or "role submit not
granted to 12D3…xyz". All are `RemoteProtocolError`s: a peer showed us a bad chain.

A revocation (Envelope kind ``colony-revocation``) names a certificate by its id
(sha2-256 multihash of the certificate envelope's canonical bytes) and carries that
certificate's expiry, so a `RevocationList` can forget it once the certificate would be
rejected anyway. The list is bounded (`RevocationList.max_entries`); the overflow
policy evicts the revocation whose certificate expires soonest and counts the drop.

A join token is ``base64url(canonical CBOR {"o": owner key, "c": [chain…],
"a": [bootstrap multiaddrs…]})`` without padding: everything a new node needs to join.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import (
    BadSignature,
    ExpiredError,
    MalformedFrame,
    RemoteProtocolError,
    WireError,
)
from overlay.core.ids import PeerId
from overlay.core.multiformats import multihash_sha256
from overlay.core.wire import cbor_decode, cbor_encode

CERT_KIND = "colony-cert"
REVOCATION_KIND = "colony-revocation"
#: Longest accepted chain: owner → admitter → admitter → subject.
MAX_CHAIN_DEPTH = 3
MAX_TOKEN_BYTES = 16 * 1024
MAX_BOOTSTRAP_ADDRS = 32
MAX_ADDR_CHARS = 512


class Role(StrEnum):
    MEMBER = "member"
    SUBMIT = "submit"
    EXECUTE = "execute"
    ADMIT = "admit"


ALL_ROLES: tuple[str, ...] = tuple(sorted(r.value for r in Role))


class NotAuthorized(RemoteProtocolError):
    """A certificate chain that is well-formed and signed but does not grant access."""


class Revoked(NotAuthorized):
    """A link of the chain was revoked by a key with authority over it."""


def _fmt_time(t: float) -> str:
    try:
        dt = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"t={t:g}"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(peer: PeerId) -> str:
    text = peer.to_base58()
    return f"{text[:4]}…{text[-6:]}" if len(text) > 12 else text


def _time(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
        raise MalformedFrame(f"{what} must be a non-negative number")
    try:
        return float(v)
    except OverflowError:  # an integer beyond any float
        raise MalformedFrame(f"{what} is out of range") from None


def _roles(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or len(v) > len(ALL_ROLES):
        raise MalformedFrame("certificate roles must be a non-empty list")
    for r in v:
        if r not in ALL_ROLES:
            raise MalformedFrame(f"unknown certificate role {r!r}")
    if list(v) != sorted(set(v)):
        raise MalformedFrame("certificate roles must be sorted and unique")
    return tuple(v)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A membership certificate and the envelope that carries it.

    Built by `from_envelope` (and so by `issue`, `from_wire`, `chain_from_wire`), it is
    verified: the signature was checked and every field was parsed from the signed
    body. That constructor records the exact objects it checked (`_verified`, not an
    init argument, so `dataclasses.replace` and hand-built instances start without
    it), and `verify_chain` trusts the record only while every field is still that
    very object; anything else is re-verified from its envelope.
    """

    colony: bytes
    subject: PeerId
    roles: tuple[str, ...]
    issued: float
    expires: float
    envelope: Envelope
    _verified: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def _fields(self) -> tuple[Any, ...]:
        env = self.envelope
        return (self.colony, self.subject, self.roles, self.issued, self.expires,
                env, env.kind, env.body, env.signer, env.signature)  # fmt: skip

    @property
    def verified(self) -> bool:
        """True if `from_envelope` checked exactly what this object now holds (the
        identity of every field, so a field or envelope byte swapped after parsing,
        even with ``object.__setattr__``, clears it)."""
        rec = self._verified
        return rec is not None and all(a is b for a, b in zip(rec, self._fields(), strict=True))

    @property
    def issuer(self) -> PeerId:
        return self.envelope.signer_id

    @property
    def cert_id(self) -> bytes:
        """sha2-256 multihash of the envelope's canonical bytes."""
        return multihash_sha256(self.envelope.to_bytes())

    def grants(self, role: str) -> bool:
        return role in self.roles

    @classmethod
    def issue(
        cls,
        issuer: KeyPair,
        colony: PublicKey | bytes,
        subject: PeerId,
        roles: Iterable[str | Role],
        issued: float,
        expires: float,
    ) -> Certificate:
        owner = colony.raw if isinstance(colony, PublicKey) else bytes(colony)
        names = sorted({r.value if isinstance(r, Role) else r for r in roles})
        for r in names:
            if r not in ALL_ROLES:
                raise ValueError(f"unknown role {r!r}")
        if not names:
            raise ValueError("a certificate grants at least one role")
        if expires <= issued:
            raise ValueError("a certificate must expire after it is issued")
        body = {
            "colony": owner,
            "subject": subject.raw,
            "roles": names,
            "issued": issued,
            "expires": expires,
        }
        return cls.from_envelope(issuer.seal(CERT_KIND, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> Certificate:
        """Verify the signature, then parse and validate the body."""
        body = env.open(CERT_KIND)
        if not isinstance(body, dict) or set(body) != {
            "colony",
            "subject",
            "roles",
            "issued",
            "expires",
        }:
            raise MalformedFrame("certificate body has the wrong fields")
        colony = body["colony"]
        if not isinstance(colony, bytes) or len(colony) != 32:
            raise MalformedFrame("certificate colony must be a 32-byte owner key")
        if not isinstance(body["subject"], bytes):
            raise MalformedFrame("certificate subject must be peer id bytes")
        subject = PeerId.from_bytes(body["subject"])
        issued = _time(body["issued"], "certificate issued")
        expires = _time(body["expires"], "certificate expires")
        if expires <= issued:
            raise MalformedFrame("certificate expires before it is issued")
        cert = cls(colony, subject, _roles(body["roles"]), issued, expires, env)
        object.__setattr__(cert, "_verified", cert._fields())  # frozen: only we set it
        return cert

    def to_wire(self) -> list[Any]:
        return self.envelope.to_wire()

    @classmethod
    def from_wire(cls, obj: Any) -> Certificate:
        return cls.from_envelope(Envelope.from_wire(obj))


def chain_to_wire(chain: Sequence[Certificate]) -> list[Any]:
    return [c.to_wire() for c in chain]


def chain_from_wire(obj: Any) -> tuple[Certificate, ...]:
    if not isinstance(obj, list) or not obj or len(obj) > MAX_CHAIN_DEPTH:
        raise MalformedFrame(f"certificate chain must hold 1..{MAX_CHAIN_DEPTH} certificates")
    return tuple(Certificate.from_wire(c) for c in obj)


# ---------------------------------------------------------------- revocations


@dataclass(frozen=True, slots=True)
class Revocation:
    """A signed statement that certificate `cert_id` is no longer valid."""

    colony: bytes
    cert_id: bytes
    cert_expires: float
    issued: float
    envelope: Envelope

    @property
    def revoker(self) -> bytes:
        return self.envelope.signer

    @classmethod
    def issue(cls, revoker: KeyPair, cert: Certificate, issued: float) -> Revocation:
        body = {
            "colony": cert.colony,
            "cert": cert.cert_id,
            "cert_expires": cert.expires,
            "issued": issued,
        }
        return cls.from_envelope(revoker.seal(REVOCATION_KIND, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> Revocation:
        body = env.open(REVOCATION_KIND)
        if not isinstance(body, dict) or set(body) != {
            "colony",
            "cert",
            "cert_expires",
            "issued",
        }:
            raise MalformedFrame("revocation body has the wrong fields")
        colony, cert = body["colony"], body["cert"]
        if not isinstance(colony, bytes) or len(colony) != 32:
            raise MalformedFrame("revocation colony must be a 32-byte owner key")
        if not isinstance(cert, bytes) or len(cert) != 34 or not cert.startswith(b"\x12\x20"):
            raise MalformedFrame("revocation must name a sha2-256 certificate id")
        return cls(
            colony,
            cert,
            _time(body["cert_expires"], "revocation cert_expires"),
            _time(body["issued"], "revocation issued"),
            env,
        )

    def to_wire(self) -> list[Any]:
        return self.envelope.to_wire()

    @classmethod
    def from_wire(cls, obj: Any) -> Revocation:
        return cls.from_envelope(Envelope.from_wire(obj))


class RevocationList:
    """Verified revocations by certificate id. Whether a revoker had authority is
    decided per chain at `verify_chain` time (it depends on the chain's issuers)."""

    __slots__ = ("_by_cert", "colony", "dropped", "max_entries")

    def __init__(self, colony: PublicKey | bytes, max_entries: int = 65536) -> None:
        self.colony = colony.raw if isinstance(colony, PublicKey) else bytes(colony)
        self.max_entries = max(1, max_entries)
        # cert id -> (cert expiry, {revoker key: None}) — dict as an ordered set.
        self._by_cert: dict[bytes, tuple[float, dict[bytes, None]]] = {}
        self.dropped = 0

    def add(self, rev: Revocation, now: float) -> bool:
        """Record a revocation (already signature-checked by its constructor).
        Returns False if it is for another colony or its certificate already expired."""
        if rev.colony != self.colony or rev.cert_expires <= now:
            return False
        entry = self._by_cert.get(rev.cert_id)
        if entry is None:
            if len(self._by_cert) >= self.max_entries:
                self.prune(now)
            if len(self._by_cert) >= self.max_entries:
                victim = min(self._by_cert, key=lambda k: (self._by_cert[k][0], k))
                del self._by_cert[victim]
                self.dropped += 1
            entry = (rev.cert_expires, {})
            self._by_cert[rev.cert_id] = entry
        entry[1][rev.revoker] = None
        return True

    def revokers(self, cert_id: bytes) -> tuple[bytes, ...]:
        entry = self._by_cert.get(cert_id)
        return tuple(entry[1]) if entry else ()

    def prune(self, now: float) -> int:
        gone = [k for k, (exp, _) in self._by_cert.items() if exp <= now]
        for k in gone:
            del self._by_cert[k]
        return len(gone)

    def __len__(self) -> int:
        return len(self._by_cert)


# ---------------------------------------------------------------- chains


def _check_link(cert: Certificate) -> None:
    """Raise `BadSignature` unless `cert` is exactly what its signed envelope says."""
    if cert.verified:
        return  # checked by `from_envelope`, and nothing in it changed since
    try:
        parsed = Certificate.from_envelope(cert.envelope)
    except BadSignature:
        raise
    except WireError as e:
        raise BadSignature(f"certificate does not parse from its envelope: {e}") from None
    if parsed != cert:
        raise BadSignature(f"certificate for {_short(cert.subject)} differs from its signed body")


#: How far behind an issuer's clock a checker's may be (verify_chain rule 4): 10 min,
#: twice the 5 min Kerberos allows, since colonies span sites without a shared NTP.
CLOCK_SKEW_S = 600.0


def verify_chain(
    chain: Sequence[Certificate],
    colony_owner: PublicKey | bytes,
    subject: PeerId,
    role: str | Role,
    now: float,
    revocations: RevocationList | None = None,
) -> Certificate:
    """Check that `chain` lets `subject` act with `role` in the colony; return the leaf.

    A link built by `Certificate.from_envelope` and unchanged since
    (`Certificate.verified`) is not verified again; any other link (built by hand, by
    `dataclasses.replace`, or altered after parsing) is re-parsed from its envelope —
    signature included — and must match it field for field. Then the delegation rules
    listed in the module docstring.
    """
    owner = colony_owner.raw if isinstance(colony_owner, PublicKey) else bytes(colony_owner)
    want = role.value if isinstance(role, Role) else role
    if not chain:
        raise NotAuthorized(f"no certificate presented for {_short(subject)}")
    if len(chain) > MAX_CHAIN_DEPTH:
        raise NotAuthorized(
            f"certificate chain for {_short(subject)} has {len(chain)} links; "
            f"at most {MAX_CHAIN_DEPTH} allowed"
        )
    issuers: list[bytes] = []
    prev: Certificate | None = None
    for depth, cert in enumerate(chain):
        _check_link(cert)
        # The subject's name is built only for an error message (base58 is not cheap).
        if cert.colony != owner:
            raise NotAuthorized(f"certificate for {_short(cert.subject)} belongs to another colony")
        if prev is None:
            if cert.envelope.signer != owner:
                raise BadSignature(
                    f"root certificate for {_short(cert.subject)} is not signed by the owner"
                )
        else:
            if cert.envelope.signer_id != prev.subject:
                raise BadSignature(
                    f"certificate for {_short(cert.subject)} is not signed by its delegator "
                    f"{_short(prev.subject)}"
                )
            if not prev.grants(Role.ADMIT.value):
                raise NotAuthorized(
                    f"{_short(prev.subject)} delegated to {_short(cert.subject)} without role admit"
                )
            extra = [r for r in cert.roles if r not in prev.roles]
            if extra:
                raise NotAuthorized(
                    f"certificate for {_short(cert.subject)} grants {', '.join(extra)} beyond its "
                    f"delegator {_short(prev.subject)}"
                )
            if cert.expires > prev.expires:
                raise NotAuthorized(
                    f"certificate for {_short(cert.subject)} expires at "
                    f"{_fmt_time(cert.expires)}, after its "
                    f"delegator's at {_fmt_time(prev.expires)}"
                )
        if now >= cert.expires:
            raise ExpiredError(
                f"certificate for {_short(cert.subject)} expired at {_fmt_time(cert.expires)}"
            )
        if now + CLOCK_SKEW_S < cert.issued:
            raise NotAuthorized(
                f"certificate for {_short(cert.subject)} is not valid before "
                f"{_fmt_time(cert.issued)}"
            )
        issuers.append(cert.envelope.signer)
        if revocations:  # (an empty list skips hashing the certificate for its id)
            by = revocations.revokers(cert.cert_id)
            # Authority over link `depth`: the owner or any issuer at or above it.
            if any(k == owner or k in issuers for k in by):
                raise Revoked(f"certificate for {_short(cert.subject)} (link {depth}) was revoked")
        prev = cert
    leaf = chain[-1]
    if leaf.subject != subject:
        raise NotAuthorized(
            f"certificate chain is for {_short(leaf.subject)}, not {_short(subject)}"
        )
    if not leaf.grants(want):
        raise NotAuthorized(f"role {want} not granted to {_short(subject)}")
    return leaf


# ---------------------------------------------------------------- join tokens


@dataclass(frozen=True, slots=True)
class JoinToken:
    """Everything a new node needs to join: owner key, its chain, bootstrap addrs."""

    colony_owner: bytes
    chain: tuple[Certificate, ...]
    bootstrap: tuple[str, ...]

    def encode(self) -> str:
        body = {
            "o": self.colony_owner,
            "c": chain_to_wire(self.chain),
            "a": list(self.bootstrap),
        }
        raw = cbor_encode(body)
        if len(raw) > MAX_TOKEN_BYTES:
            raise ValueError(f"join token of {len(raw)} bytes exceeds {MAX_TOKEN_BYTES}")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        """Parse a token; raises the WireError family (signatures are checked too)."""
        if not isinstance(text, str) or len(text) > MAX_TOKEN_BYTES * 4 // 3 + 4:
            raise MalformedFrame("join token is not a string of acceptable length")
        text = text.strip()
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, TypeError) as e:
            raise MalformedFrame(f"join token is not base64url: {e}") from None
        body = cbor_decode(raw)
        if not isinstance(body, dict) or set(body) != {"o", "c", "a"}:
            raise MalformedFrame("join token must hold exactly o, c and a")
        owner = body["o"]
        if not isinstance(owner, bytes) or len(owner) != 32:
            raise MalformedFrame("join token owner must be a 32-byte key")
        PublicKey(owner)
        addrs = body["a"]
        if not isinstance(addrs, list) or len(addrs) > MAX_BOOTSTRAP_ADDRS:
            raise MalformedFrame(f"join token holds at most {MAX_BOOTSTRAP_ADDRS} addresses")
        for a in addrs:
            if not isinstance(a, str) or not a or len(a) > MAX_ADDR_CHARS:
                raise MalformedFrame("join token address must be a non-empty string")
        chain = chain_from_wire(body["c"])
        for cert in chain:
            if cert.colony != owner:
                raise MalformedFrame("join token certificate belongs to another colony")
        return cls(owner, chain, tuple(addrs))

    def verify(self, subject: PeerId, now: float, role: str | Role = Role.MEMBER) -> Certificate:
        return verify_chain(self.chain, self.colony_owner, subject, role, now)


__all__ = [
    "ALL_ROLES",
    "CERT_KIND",
    "MAX_CHAIN_DEPTH",
    "REVOCATION_KIND",
    "BadSignature",
    "Certificate",
    "ExpiredError",
    "JoinToken",
    "NotAuthorized",
    "Revocation",
    "RevocationList",
    "Revoked",
    "Role",
    "WireError",
    "chain_from_wire",
    "chain_to_wire",
    "verify_chain",
]
