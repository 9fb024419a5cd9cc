"""Namespaced, validated DHT records and the bounded value store.

As libp2p does for `/pk/` and `/ipns/` (go-libp2p-record `NamespacedValidator`), every
record key belongs to a namespace, and each namespace has a *validator* (is this value
acceptable under this key?) and a *selector* (which of several valid values is best?).
A record whose key matches no registered namespace is refused. Namespaces are matched
by the longest registered prefix, because ours are two segments deep
(`/colony/name/…`, later `/colony/capsule/…`).

`/colony/name/<peer id base58>`: the value is an `Envelope` (overlay.core.crypto) of
kind "dht-record" whose body is `{"name": <the key as text>, "value": bytes,
"seq": int ≥ 0, "expires": seconds since the epoch}`. It is valid when the signature
verifies, the signer's peer id is the one in the name, the body names this very key
(no replay under another key) and `expires` is in the future. The selector keeps the
highest `seq`, then the later `expires`, then the larger value bytes (a total order, so
every node picks the same record).

`/colony/revoke/<certificate id hex>`: the value is a signed `colony-revocation`
envelope (overlay.core.certs.Revocation) naming that very certificate id; it expires
with the certificate it revokes. Whether the revoker had authority depends on the
certificate's chain and is decided where the chain is checked (`verify_chain`); the
DHT only keeps well-formed, signed statements. Several revokers may revoke one
certificate; the selector prefers the earliest issued, then the smaller signature.

Records are verified *before* they are stored; the store has a total limit, a limit
per storing peer and a value-size limit, and evicts expired records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from overlay.core.certs import Revocation
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.core.validate import number, uint

NAME_PREFIX = b"/colony/name/"
REVOKE_PREFIX = b"/colony/revoke/"
RECORD_KIND = "dht-record"


class UnknownNamespace(RemoteProtocolError):
    """A record key outside every registered namespace."""


@dataclass(frozen=True, slots=True)
class ValidRecord:
    """A record that passed its namespace's validator."""

    key: bytes
    value: bytes  # the record value as on the wire (e.g. envelope bytes)
    seq: int
    expires: float
    payload: bytes  # the application value inside


class Validator(Protocol):
    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord: ...

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int: ...


def name_key(peer: PeerId) -> bytes:
    return NAME_PREFIX + peer.to_base58().encode()


class NameValidator:
    """Validator and selector for `/colony/name/<peer id>` signed values."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        if not key.startswith(NAME_PREFIX):
            raise UnknownNamespace("not a /colony/name/ key")
        try:
            owner = PeerId.from_base58(key[len(NAME_PREFIX):].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise MalformedFrame("name key does not hold a base58 peer id") from None
        env = Envelope.from_bytes(value)
        body = env.open(RECORD_KIND)  # BadSignature unless the signature holds
        if env.signer_id != owner:
            raise BadSignature("name record signed by a key other than the name's owner")
        if not isinstance(body, dict) or set(body) != {"name", "value", "seq", "expires"}:
            raise MalformedFrame("name record body must be {name, value, seq, expires}")
        name, payload, seq, expires = body["name"], body["value"], body["seq"], body["expires"]
        if name != key.decode("ascii"):
            raise BadSignature("name record signed for another key")
        if not isinstance(payload, bytes):
            raise MalformedFrame("name record value must be bytes")
        seq = uint(seq, "name record seq", message="{what} must be a non-negative int")
        # Finite and a float: a bignum or an infinity would otherwise escape as
        # OverflowError or keep the record forever.
        when = number(expires, "name record expires", lo=-math.inf,
                      message="{what} must be a finite number")
        if not when > now:
            raise ExpiredError("name record has expired")
        return ValidRecord(key, value, seq, when, payload)

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")
        best = 0
        for i, r in enumerate(records):
            b = records[best]
            if (r.seq, r.expires, r.value) > (b.seq, b.expires, b.value):
                best = i
        return best


def revoke_key(cert_id: bytes) -> bytes:
    return REVOKE_PREFIX + cert_id.hex().encode()


class RevokeValidator:
    """Validator and selector for `/colony/revoke/<cert id hex>` revocations."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        if not key.startswith(REVOKE_PREFIX):
            raise UnknownNamespace("not a /colony/revoke/ key")
        rev = Revocation.from_envelope(Envelope.from_bytes(value))  # BadSignature if forged
        if key != revoke_key(rev.cert_id):
            raise BadSignature("revocation stored under another certificate's key")
        if not rev.cert_expires > now:
            raise ExpiredError("revoked certificate has expired; the record is moot")
        return ValidRecord(key, value, 0, rev.cert_expires, value)

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")

        def rank(r: ValidRecord) -> tuple[float, bytes]:
            env = Envelope.from_bytes(r.value)
            return (Revocation.from_envelope(env).issued, env.signature)

        return min(range(len(records)), key=lambda i: rank(records[i]))


def make_name_record(kp: KeyPair, value: bytes, seq: int, expires: float) -> tuple[bytes, bytes]:
    """(key, record value) of a signed `/colony/name/` record for `kp`'s peer id."""
    key = name_key(kp.peer_id)
    env = kp.seal(
        RECORD_KIND, {"name": key.decode("ascii"), "value": value, "seq": seq,
                      "expires": expires}
    )
    return key, env.to_bytes()


class Validators:
    """Namespace prefix → validator; longest prefix wins."""

    __slots__ = ("_by_prefix",)

    def __init__(self, by_prefix: dict[bytes, Validator] | None = None) -> None:
        self._by_prefix: dict[bytes, Validator] = (
            dict(by_prefix)
            if by_prefix is not None
            else {NAME_PREFIX: NameValidator(), REVOKE_PREFIX: RevokeValidator()}
        )

    def register(self, prefix: bytes, v: Validator) -> None:
        self._by_prefix[prefix] = v

    def for_key(self, key: bytes) -> Validator:
        best: bytes | None = None
        for p in self._by_prefix:
            if key.startswith(p) and (best is None or len(p) > len(best)):
                best = p
        if best is None:
            raise UnknownNamespace(f"no validator for key {key[:40]!r}")
        return self._by_prefix[best]

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        """Validate or raise a RemoteProtocolError (WireError, ExpiredError, UnknownNamespace)."""
        v = self.for_key(key)
        try:
            return v.validate(key, value, now)
        except RemoteProtocolError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise MalformedFrame(f"record rejected: {e}") from None

    def better(self, old: ValidRecord | None, new: ValidRecord) -> bool:
        if old is None:
            return True
        return self.for_key(new.key).select(new.key, [old, new]) == 1


# ---------------------------------------------------------------- value store


@dataclass(frozen=True, slots=True)
class ValueStoreLimits:
    max_records: int = 10_000
    max_per_peer: int = 100
    #: Records are kept until their own expiry, but never longer than this (kubo: 48 h).
    max_ttl_s: float = 48 * 3600.0


class _Stored:
    __slots__ = ("from_peer", "rec", "until")

    def __init__(self, rec: ValidRecord, from_peer: PeerId, until: float) -> None:
        self.rec = rec
        self.from_peer = from_peer
        self.until = until


class ValueStore:
    """Bounded map key → best valid record; counts what each peer stored with us."""

    __slots__ = ("_per_peer", "_recs", "limits")

    def __init__(self, limits: ValueStoreLimits | None = None) -> None:
        self.limits = limits or ValueStoreLimits()
        self._recs: dict[bytes, _Stored] = {}
        self._per_peer: dict[PeerId, int] = {}

    def __len__(self) -> int:
        return len(self._recs)

    def get(self, key: bytes, now: float) -> ValidRecord | None:
        s = self._recs.get(key)
        if s is None:
            return None
        if s.until <= now:
            self._drop(key, s)
            return None
        return s.rec

    def put(self, rec: ValidRecord, from_peer: PeerId, validators: Validators,
            now: float) -> str:
        """Store an already validated record. Returns "stored", "kept-old", "peer-limit"
        or "full"."""
        old = self._recs.get(rec.key)
        if old is not None and old.until > now and not validators.better(old.rec, rec):
            return "kept-old"
        if old is None or old.from_peer != from_peer:
            if self._per_peer.get(from_peer, 0) >= self.limits.max_per_peer:
                return "peer-limit"
            if old is None and len(self._recs) >= self.limits.max_records:
                self.expire(now)
                if len(self._recs) >= self.limits.max_records:
                    return "full"
        if old is not None:
            self._drop(rec.key, old)
        until = min(rec.expires, now + self.limits.max_ttl_s)
        self._recs[rec.key] = _Stored(rec, from_peer, until)
        self._per_peer[from_peer] = self._per_peer.get(from_peer, 0) + 1
        return "stored"

    def _drop(self, key: bytes, s: _Stored) -> None:
        del self._recs[key]
        n = self._per_peer.get(s.from_peer, 0) - 1
        if n > 0:
            self._per_peer[s.from_peer] = n
        else:
            self._per_peer.pop(s.from_peer, None)

    def expire(self, now: float) -> int:
        dead = [k for k, s in self._recs.items() if s.until <= now]
        for k in dead:
            self._drop(k, self._recs[k])
        return len(dead)

    def check_invariants(self) -> None:
        counts: dict[PeerId, int] = {}
        for s in self._recs.values():
            counts[s.from_peer] = counts.get(s.from_peer, 0) + 1
        assert counts == self._per_peer
        assert len(self._recs) <= self.limits.max_records
        assert all(n <= self.limits.max_per_peer for n in counts.values())


__all__ = [
    "NAME_PREFIX",
    "RECORD_KIND",
    "REVOKE_PREFIX",
    "NameValidator",
    "RevokeValidator",
    "UnknownNamespace",
    "ValidRecord",
    "Validator",
    "Validators",
    "ValueStore",
    "ValueStoreLimits",
    "make_name_record",
    "name_key",
    "revoke_key",
]
