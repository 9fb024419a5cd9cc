"""Gossip wire messages: frozen dataclasses with `to_wire()` / `from_wire()`.

Every message is a CBOR array whose first element is a tag. Membership claims are
*signed updates* that any member may forward unchanged (they are shared by reference
in the simulator, verified once per node thanks to `claim_verifier.Verifier`):

    Alive    envelope "gossip-alive"   signed by the subject: {i: incarnation, a: [addr],
                                        c: [certificate envelope…] (colony mode only)}
    Accuse   envelope "gossip-accuse"  signed by the accuser: {t: target id, i: inc,
                                        s: 0 suspect | 1 dead | 2 left (accuser = target)}
    AdUpdate envelope "resource-ad"    signed by the subject: {v: version, r: ad fields,
                                        b: base version (deltas only)}
    UserEvent envelope "user-event"    signed by the sender: {n: name, p: payload,
                                        l: Lamport time, s: per-sender sequence}
    Revoke   envelope "colony-revocation" signed by the revoker (overlay.core.certs)

In colony mode an alive claim carries the subject's certificate chain (root first,
DESIGN §3): the claim travels wherever membership travels (gossip, piggyback,
push-pull), so every node — and every simulated core — can check it without another
round trip. The chain's envelopes are parsed here but only verified by the core's
`Admission` gate, when the claim would change state.

Updates on the wire are `[kind, envelope]`. Top-level messages:

    [1, seq, target|null, [update…], coord|null]   Ping
    [2, seq, [update…], coord|null]                Ack
    [3, seq]                                       Nack
    [4, seq, target, [update…]]                    PingReq
    [5, [update…]]                                 Gossip
    [6, flags, [state…], page, pages, [revoke…]]   PushPull (flags: 1 reply, 2 join;
                                                   the revocation list is optional)
    state = [alive, accuse|null, [ad…]]

Decoding validates every field (including the CBOR inside envelopes, which is decoded
but *not* verified here — the core verifies only what could change its state) and
raises only the `WireError` family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from gossip.coordinates import Coord
from gossip.resources import ResourceAd
from overlay.core.certs import CERT_KIND, MAX_CHAIN_DEPTH, REVOCATION_KIND
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import quick_init
from overlay.core.errors import MalformedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.validate import uint
from overlay.core.wire import cbor_decode

KIND_ALIVE = "gossip-alive"
KIND_ACCUSE = "gossip-accuse"
KIND_AD = "resource-ad"
KIND_EVENT = "user-event"
KIND_REVOKE = REVOCATION_KIND

MAX_UPDATES = 4096
MAX_STATES = 100_000
MAX_USER_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_NAME_BYTES = 128
MAX_ADDR_CHARS = 256
MAX_ADDRS = 16
#: Revocations carried by one push-pull page (the rest follow on later exchanges).
MAX_PUSH_PULL_REVOCATIONS = 1024


class AccuseKind(IntEnum):
    SUSPECT = 0
    DEAD = 1
    LEFT = 2


def _uint(v: Any, what: str) -> int:
    return uint(v, what, exact=True, message="{what} must be an unsigned 63-bit integer")


def _body(env: Envelope, kind: str) -> dict[str, Any]:
    if env.kind != kind:
        raise MalformedFrame(f"expected a {kind!r} envelope, got {env.kind!r}")
    body = cbor_decode(env.body)
    if not isinstance(body, dict):
        raise MalformedFrame(f"{kind} body must be a map")
    return body


def _keys(body: dict[str, Any], required: set[str], optional: set[str], kind: str) -> None:
    ks = set(body)
    if not required <= ks or not ks <= required | optional:
        raise MalformedFrame(f"{kind} body has fields {sorted(map(str, ks))}")


def _peer(raw: Any, what: str) -> PeerId:
    if not isinstance(raw, bytes):
        raise MalformedFrame(f"{what} must be peer id bytes")
    return PeerId.from_bytes(raw)


def update_size(env: Envelope) -> int:
    """Upper bound of the encoded size of `[kind, envelope]` (no encoding needed)."""
    return len(env.body) + len(env.kind) + 111


# ------------------------------------------------------------------ signed updates


@dataclass(frozen=True, slots=True)
class Alive:
    """ "I am alive at incarnation i" — only the subject can sign it.

    `chain` is the subject's certificate chain (unverified envelopes; empty in open
    mode). It is inside the signed body, so a forwarder cannot swap it.
    """

    env: Envelope
    peer: PeerId
    incarnation: int
    addrs: tuple[str, ...] = ()
    chain: tuple[Envelope, ...] = ()
    #: `plain_record()`, built on first use (not compared, not an `__init__` parameter,
    #: so `dataclasses.replace` never carries it over to another claim).
    record_cache: MemberRecord | None = field(
        default=None, init=False, compare=False, repr=False
    )
    #: `ad_record(full)`'s last answer, as (full, record): built on first use, like
    #: `record_cache`.
    ad_record_cache: tuple[AdUpdate, MemberRecord] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    TAG = 1

    def plain_record(self) -> MemberRecord:
        """`MemberRecord(self)`: the push-pull record of a member known by this claim
        alone (no accusation, no ads), built once per claim and shared. Push-pull sends
        every member's record every exchange; in a settled cell almost all are plain,
        and building one per member per exchange was most of a push-pull's cost (the
        claim, and so its record, is the same object at every node of a simulation)."""
        r = self.record_cache
        if r is None:
            r = MemberRecord(self)
            object.__setattr__(self, "record_cache", r)
        return r

    def ad_record(self, full: AdUpdate) -> MemberRecord:
        """`MemberRecord(self, None, (full,))`: a member known by this claim and one
        full ad (no accusation, no delta), kept for the last `full` asked for (a
        settled cell's members all have an ad: `plain_record`'s saving for them)."""
        c = self.ad_record_cache
        if c is not None and c[0] is full:
            return c[1]
        r = MemberRecord(self, None, (full,))
        object.__setattr__(self, "ad_record_cache", (full, r))
        return r

    @classmethod
    def create(
        cls,
        keys: KeyPair,
        incarnation: int,
        addrs: tuple[str, ...] = (),
        chain: tuple[Envelope, ...] = (),
    ) -> Alive:
        body: dict[str, Any] = {"i": incarnation}
        if addrs:
            body["a"] = list(addrs)
        if chain:
            body["c"] = [e.to_wire() for e in chain]
        return cls(keys.seal(KIND_ALIVE, body), keys.peer_id, incarnation, addrs, tuple(chain))

    @classmethod
    def from_envelope(cls, env: Envelope) -> Alive:
        body = _body(env, KIND_ALIVE)
        _keys(body, {"i"}, {"a", "c"}, KIND_ALIVE)
        addrs = body.get("a", [])
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS:
            raise MalformedFrame("alive addrs must be a short list")
        for a in addrs:
            if not isinstance(a, str) or not a or len(a) > MAX_ADDR_CHARS:
                raise MalformedFrame("alive addr must be a non-empty short string")
        chain = _chain(body.get("c", []))
        return cls(env, env.signer_id, _uint(body["i"], "incarnation"), tuple(addrs), chain)


def _chain(obj: Any) -> tuple[Envelope, ...]:
    """Structural check of a certificate chain (signatures are the gate's business)."""
    if not isinstance(obj, list) or len(obj) > MAX_CHAIN_DEPTH:
        raise MalformedFrame(f"alive certificate chain must hold at most {MAX_CHAIN_DEPTH}")
    chain = tuple(Envelope.from_wire(c) for c in obj)
    for e in chain:
        if e.kind != CERT_KIND:
            raise MalformedFrame(f"alive chain holds a {e.kind!r} envelope, not a certificate")
    return chain


@dataclass(frozen=True, slots=True)
class Accuse:
    """ "target at incarnation i is suspect / dead / left" — signed by the accuser."""

    env: Envelope
    accuser: PeerId
    target: PeerId
    incarnation: int
    kind: AccuseKind

    TAG = 2

    @classmethod
    def create(cls, keys: KeyPair, target: PeerId, incarnation: int, kind: AccuseKind) -> Accuse:
        body = {"t": target.raw, "i": incarnation, "s": int(kind)}
        return cls(keys.seal(KIND_ACCUSE, body), keys.peer_id, target, incarnation, kind)

    @classmethod
    def from_envelope(cls, env: Envelope) -> Accuse:
        body = _body(env, KIND_ACCUSE)
        _keys(body, {"t", "i", "s"}, set(), KIND_ACCUSE)
        s = body["s"]
        if type(s) is not int or s not in (0, 1, 2):
            raise MalformedFrame("accusation state must be 0, 1 or 2")
        target = _peer(body["t"], "accusation target")
        accuser = env.signer_id
        kind = AccuseKind(s)
        if kind is AccuseKind.LEFT and accuser != target:
            raise MalformedFrame("only a member itself can announce that it left")
        if kind is not AccuseKind.LEFT and accuser == target:
            raise MalformedFrame("a member cannot accuse itself")
        return cls(env, accuser, target, _uint(body["i"], "incarnation"), kind)


@dataclass(frozen=True, slots=True)
class AdUpdate:
    """A full resource ad (`base is None`) or a delta on top of version `base`."""

    env: Envelope
    peer: PeerId
    version: int
    base: int | None
    fields: Any  # the validated wire map (full ad or changed fields)
    #: Decoded full ad, or [base, result] of the last delta application. Shared by
    #: every core holding this update (the simulator passes updates by reference).
    memo: list[Any] = field(default_factory=list, compare=False, repr=False)

    TAG = 3

    @classmethod
    def create(
        cls, keys: KeyPair, version: int, fields: dict[str, Any], base: int | None = None
    ) -> AdUpdate:
        body: dict[str, Any] = {"v": version, "r": fields}
        if base is not None:
            body["b"] = base
        return cls.from_envelope(keys.seal(KIND_AD, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> AdUpdate:
        body = _body(env, KIND_AD)
        _keys(body, {"v", "r"}, {"b"}, KIND_AD)
        version = _uint(body["v"], "ad version")
        base = body.get("b")
        if base is not None and (_uint(base, "ad base") >= version):
            raise MalformedFrame("ad delta base must be below its version")
        decoded = ResourceAd.from_body(body["r"])  # validates every field now
        memo = [decoded] if base is None else []
        return cls(env, env.signer_id, version, base, body["r"], memo)

    def apply_to(self, ad: ResourceAd) -> ResourceAd:
        """The ad after this delta (or this full ad); results are memoised."""
        if self.base is None:
            return self.full()
        memo = self.memo
        if len(memo) == 2 and (memo[0] is ad or memo[0] == ad):
            return memo[1]  # type: ignore[no-any-return]
        result = ad.apply(self.fields)
        memo[:] = [ad, result]
        return result

    def full(self) -> ResourceAd:
        if not self.memo:
            self.memo.append(ResourceAd.from_body(self.fields))
        return self.memo[0]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A named user event, ordered per sender by `seq`, stamped with Lamport time."""

    env: Envelope
    sender: PeerId
    name: str
    payload: bytes
    lamport: int
    seq: int

    TAG = 4

    @classmethod
    def create(cls, keys: KeyPair, name: str, payload: bytes, lamport: int, seq: int) -> UserEvent:
        body = {"n": name, "p": payload, "l": lamport, "s": seq}
        return cls(keys.seal(KIND_EVENT, body), keys.peer_id, name, payload, lamport, seq)

    @classmethod
    def from_envelope(cls, env: Envelope) -> UserEvent:
        if len(env.body) > MAX_USER_PAYLOAD_BYTES + MAX_EVENT_NAME_BYTES + 64:
            raise MalformedFrame("user event too large")
        body = _body(env, KIND_EVENT)
        _keys(body, {"n", "p", "l", "s"}, set(), KIND_EVENT)
        name, payload = body["n"], body["p"]
        check_event(name, payload)
        return cls(
            env,
            env.signer_id,
            name,
            payload,
            _uint(body["l"], "lamport time"),
            _uint(body["s"], "event sequence"),
        )


def check_event(name: Any, payload: Any) -> None:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_EVENT_NAME_BYTES:
        raise MalformedFrame(f"event name must be 1..{MAX_EVENT_NAME_BYTES} bytes")
    if not isinstance(payload, bytes) or len(payload) > MAX_USER_PAYLOAD_BYTES:
        raise MalformedFrame(f"event payload must be at most {MAX_USER_PAYLOAD_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Revoke:
    """A signed certificate revocation (overlay.core.certs.Revocation), gossiped.

    Parsed structurally only; the core verifies it (through `Revocation`) when it is
    news, so duplicates forwarded by many members cost no signature checks.
    """

    env: Envelope
    colony: bytes
    cert_id: bytes

    TAG = 5

    @classmethod
    def from_envelope(cls, env: Envelope) -> Revoke:
        body = _body(env, KIND_REVOKE)
        _keys(body, {"colony", "cert", "cert_expires", "issued"}, set(), KIND_REVOKE)
        colony, cert = body["colony"], body["cert"]
        if not isinstance(colony, bytes) or len(colony) != 32:
            raise MalformedFrame("revocation colony must be a 32-byte owner key")
        if not isinstance(cert, bytes) or len(cert) != 34:
            raise MalformedFrame("revocation must name a sha2-256 certificate id")
        return cls(env, colony, cert)


Update = Alive | Accuse | AdUpdate | UserEvent | Revoke
_UPDATE_TYPES: dict[int, Any] = {1: Alive, 2: Accuse, 3: AdUpdate, 4: UserEvent, 5: Revoke}


def update_to_wire(u: Update) -> list[Any]:
    return [u.TAG, u.env.to_wire()]


def update_from_wire(obj: Any) -> Update:
    if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int):
        raise MalformedFrame("update must be [kind, envelope]")
    cls = _UPDATE_TYPES.get(obj[0])
    if cls is None:
        raise MalformedFrame(f"unknown update kind {obj[0]}")
    u: Update = cls.from_envelope(Envelope.from_wire(obj[1]))
    return u


def _updates_from_wire(obj: Any) -> tuple[Update, ...]:
    if not isinstance(obj, list) or len(obj) > MAX_UPDATES:
        raise MalformedFrame(f"updates must be a list of at most {MAX_UPDATES}")
    return tuple(update_from_wire(u) for u in obj)


def _coord(obj: Any) -> Coord | None:
    return None if obj is None else Coord.from_wire(obj)


# ------------------------------------------------------------------ messages


@quick_init
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: PeerId | None
    updates: tuple[Update, ...] = ()
    coord: Coord | None = None

    TAG = 1

    def to_wire(self) -> list[Any]:
        return [
            1,
            self.seq,
            None if self.target is None else self.target.raw,
            [update_to_wire(u) for u in self.updates],
            None if self.coord is None else self.coord.to_wire(),
        ]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Ping:
        _arity(f, 5, "ping")
        target = None if f[2] is None else _peer(f[2], "ping target")
        return cls(_uint(f[1], "seq"), target, _updates_from_wire(f[3]), _coord(f[4]))


@quick_init
@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    updates: tuple[Update, ...] = ()
    coord: Coord | None = None

    TAG = 2

    def to_wire(self) -> list[Any]:
        return [
            2,
            self.seq,
            [update_to_wire(u) for u in self.updates],
            None if self.coord is None else self.coord.to_wire(),
        ]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Ack:
        _arity(f, 4, "ack")
        return cls(_uint(f[1], "seq"), _updates_from_wire(f[2]), _coord(f[3]))


@quick_init
@dataclass(frozen=True, slots=True)
class Nack:
    seq: int

    TAG = 3

    def to_wire(self) -> list[Any]:
        return [3, self.seq]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Nack:
        _arity(f, 2, "nack")
        return cls(_uint(f[1], "seq"))


@quick_init
@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: PeerId
    updates: tuple[Update, ...] = ()

    TAG = 4

    def to_wire(self) -> list[Any]:
        return [4, self.seq, self.target.raw, [update_to_wire(u) for u in self.updates]]

    @classmethod
    def from_fields(cls, f: list[Any]) -> PingReq:
        _arity(f, 4, "ping-req")
        return cls(_uint(f[1], "seq"), _peer(f[2], "ping-req target"), _updates_from_wire(f[3]))


@quick_init
@dataclass(frozen=True, slots=True)
class Gossip:
    updates: tuple[Update, ...]

    TAG = 5

    def to_wire(self) -> list[Any]:
        return [5, [update_to_wire(u) for u in self.updates]]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Gossip:
        _arity(f, 2, "gossip")
        return cls(_updates_from_wire(f[1]))


@quick_init
@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member's full state in a push-pull: its alive, accusation and ad chain."""

    alive: Alive
    accuse: Accuse | None = None
    ads: tuple[AdUpdate, ...] = ()

    def to_wire(self) -> list[Any]:
        return [
            update_to_wire(self.alive),
            None if self.accuse is None else update_to_wire(self.accuse),
            [update_to_wire(a) for a in self.ads],
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> MemberRecord:
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], list)):
            raise MalformedFrame("member record must be [alive, accuse, ads]")
        alive = update_from_wire(obj[0])
        accuse = None if obj[1] is None else update_from_wire(obj[1])
        if len(obj[2]) > 64:
            raise MalformedFrame("member record carries too many ad updates")
        ads = tuple(update_from_wire(a) for a in obj[2])
        if not isinstance(alive, Alive) or not (accuse is None or isinstance(accuse, Accuse)):
            raise MalformedFrame("member record fields have the wrong update kinds")
        if accuse is not None and accuse.target != alive.peer:
            raise MalformedFrame("member record accusation is about another member")
        for a in ads:
            if not isinstance(a, AdUpdate) or a.peer != alive.peer:
                raise MalformedFrame("member record ad is not the member's own")
        return cls(alive, accuse, ads)  # type: ignore[arg-type]


@quick_init
@dataclass(frozen=True, slots=True)
class PushPull:
    states: tuple[MemberRecord, ...]
    reply: bool = False
    join: bool = False
    page: int = 0
    pages: int = 1
    #: Colony mode: the revocations the sender knows (first page only).
    revocations: tuple[Revoke, ...] = ()

    TAG = 6

    def to_wire(self) -> list[Any]:
        flags = (1 if self.reply else 0) | (2 if self.join else 0)
        out = [6, flags, [s.to_wire() for s in self.states], self.page, self.pages]
        if self.revocations:
            out.append([update_to_wire(r) for r in self.revocations])
        return out

    @classmethod
    def from_fields(cls, f: list[Any]) -> PushPull:
        if len(f) not in (5, 6):
            raise MalformedFrame(f"push-pull must have 5 or 6 fields, got {len(f)}")
        flags = _uint(f[1], "flags")
        if flags > 3:
            raise MalformedFrame("unknown push-pull flags")
        if not isinstance(f[2], list) or len(f[2]) > MAX_STATES:
            raise MalformedFrame("push-pull states must be a bounded list")
        page, pages = _uint(f[3], "page"), _uint(f[4], "pages")
        if not page < pages <= MAX_STATES:
            raise MalformedFrame("push-pull page out of range")
        states = tuple(MemberRecord.from_wire(s) for s in f[2])
        revs: tuple[Revoke, ...] = ()
        if len(f) == 6:
            if not isinstance(f[5], list) or len(f[5]) > MAX_PUSH_PULL_REVOCATIONS:
                raise MalformedFrame("push-pull revocations must be a bounded list")
            us = tuple(update_from_wire(r) for r in f[5])
            if not all(isinstance(u, Revoke) for u in us):
                raise MalformedFrame("push-pull revocation list holds another update kind")
            revs = us  # type: ignore[assignment]
        return cls(states, bool(flags & 1), bool(flags & 2), page, pages, revs)


Message = Ping | Ack | Nack | PingReq | Gossip | PushPull
MESSAGE_TYPES: tuple[type, ...] = (Ping, Ack, Nack, PingReq, Gossip, PushPull)
_MESSAGES: dict[int, Any] = {c.TAG: c for c in MESSAGE_TYPES}  # type: ignore[attr-defined]


def _arity(f: list[Any], n: int, what: str) -> None:
    if len(f) != n:
        raise MalformedFrame(f"{what} must have {n} fields, got {len(f)}")


def decode_message(obj: Any) -> Message:
    """Decode a CBOR value into a message; raises only WireError."""
    try:
        if not (isinstance(obj, list) and obj and type(obj[0]) is int):
            raise MalformedFrame("gossip message must be a tagged array")
        cls = _MESSAGES.get(obj[0])
        if cls is None:
            raise MalformedFrame(f"unknown gossip message kind {obj[0]}")
        msg: Message = cls.from_fields(obj)
        return msg
    except WireError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        raise MalformedFrame(f"bad gossip message: {e}") from None
