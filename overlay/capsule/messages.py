"""Capsule protocol messages: frozen dataclasses with `to_wire()` / `from_wire()`.

Every message encodes as a CBOR array whose first element is its tag; `decode_message`
dispatches on the tag and validates every field, raising only the `WireError` family.
Signed payloads (capsules, certificates, receipts) are decoded through their
envelopes, so a message that decodes carries only verified signatures.

Who sends what (C = custodian, L = leading custodian, X = executor, O = origin):

    O→L  Submit            a signed capsule + the submitter's certificate chain
    L→O  SubmitAck         accepted once a majority of custodians hold it (or why not)
    L→C  Replicate         the whole custody record at a new version (also: handoff
                           from any holder to a new leader)
    C→L  ReplicateAck      the version the custodian now holds, its ballot, and the
                           custodian's promise (both carry the commit point known)
    L→C  Committed         a finished version is held by a majority (commit point)
    L→C  SyncRequest       phase 1 of an epoch (ballot + the sender's copy): "promise
                           it, send me your record"  C→L SyncReply (promised or
                           refused with the higher promise, + the receipt it holds)
    L→X  LeaseOffer        capsule + fencing token + lease timing
    X→L  LeaseReply        accept or refuse (with a reason)
    X→C  Heartbeat         keeps lease `token` alive (sent to every custodian)
    L→X  LeaseRevoked      stop: token is stale / capsule cancelled / finished
    X→C  ReceiptMsg        the signed receipt (to every custodian; L decides; a
                           follower forwards the one it holds to a new leader)
    L→X  ReceiptReply      accepted (after majority) or rejected with a reason
    *→C  StatusQuery       C→* StatusReply (also pushed to O when a capsule ends)
    O→C  CancelRequest     from the origin or submitter only
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from overlay.capsule.dataflow import (
    ParentOutput,
    parent_outputs_from_wire,
    parent_outputs_to_wire,
    safe_name,
)
from overlay.capsule.leases import (
    MAX_CONFIG,
    NO_BALLOT,
    Ballot,
    CustodyRecord,
    LeaseTiming,
    State,
    ballot_from_wire,
)
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, SpecError, check_capsule_id, check_cid
from overlay.core.certs import Certificate, chain_from_wire, chain_to_wire
from overlay.core.errors import MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import flag, number, string, uint
from overlay.core.wire import cbor_decode, cbor_encode

MAX_REASON = 1024
MAX_HOPS = 8
#: A grant envelope (roots, chain and quotas inside) is far below this.
MAX_GRANT_BYTES = 32 * 1024
UNKNOWN = "unknown"
_POSITIVE = "{what} must be a positive number"


def _reason(v: Any) -> str:
    return string(v, "reason", limit=MAX_REASON,
                  message="{what} must be a string of at most {limit} characters")  # fmt: skip


def _shape(obj: Any, tag: str, n: int) -> list[Any]:
    if not isinstance(obj, list) or len(obj) != n or obj[0] != tag:
        raise MalformedFrame(f"{tag} must be a {n}-element array starting with its tag")
    return obj


@dataclass(frozen=True, slots=True)
class Submit:
    TAG: ClassVar[str] = "c.submit"
    capsule: Capsule
    chain: tuple[Certificate, ...] = ()
    origin: PeerId | None = None
    hops: int = 0
    #: The capsule's initial configuration, fixed by the origin at its first attempt
    #: and carried unchanged by every retry and forward: a leader may open the first
    #: epoch only with promises from a majority of it (docs/capsules.md, "Custody
    #: epochs"), so a retry into a side holding no copy cannot start a second lineage.
    config: tuple[PeerId, ...] = ()
    #: A capsule of another colony's member: the envelope bytes of this colony's grant
    #: to that colony (overlay/core/grants.py); `chain` then leads to *its* owner.
    grant: bytes = b""

    def to_wire(self) -> list[Any]:
        out = [
            self.TAG,
            self.capsule.to_wire(),
            chain_to_wire(self.chain) if self.chain else [],
            self.origin.raw if self.origin else b"",
            self.hops,
            [p.raw for p in self.config],
        ]
        return [*out, self.grant] if self.grant else out  # 6 elements without a grant

    @classmethod
    def from_wire(cls, obj: Any) -> Submit:
        if isinstance(obj, list) and len(obj) == 5:
            obj = [*obj, []]  # the form before initial configurations
        if isinstance(obj, list) and len(obj) == 6:
            obj = [*obj, b""]  # no grant: a member's own capsule
        _, cap, chain, origin, hops, config, grant = _shape(obj, cls.TAG, 7)
        if not isinstance(grant, bytes) or len(grant) > MAX_GRANT_BYTES:
            raise MalformedFrame(f"submit grant must be at most {MAX_GRANT_BYTES} bytes")
        if not isinstance(origin, bytes):
            raise MalformedFrame("submit origin must be bytes")
        hops = uint(hops, "hops")
        if hops > MAX_HOPS:
            raise MalformedFrame("submit forwarded too many times")
        if not isinstance(config, list) or len(config) > MAX_CONFIG:
            raise MalformedFrame(f"submit config holds at most {MAX_CONFIG} peers")
        if not all(isinstance(p, bytes) for p in config):
            raise MalformedFrame("submit config peers must be bytes")
        return cls(
            Capsule.from_wire(cap),
            chain_from_wire(chain) if chain != [] else (),
            PeerId.from_bytes(origin) if origin else None,
            hops,
            # Once each: a peer listed twice would count twice towards a majority.
            tuple(dict.fromkeys(PeerId.from_bytes(p) for p in config)),
            grant,
        )


@dataclass(frozen=True, slots=True)
class SubmitAck:
    TAG: ClassVar[str] = "c.submit-ack"
    capsule_id: str
    accepted: bool
    reason: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.accepted, self.reason]

    @classmethod
    def from_wire(cls, obj: Any) -> SubmitAck:
        _, cid, ok, reason = _shape(obj, cls.TAG, 4)
        return cls(check_capsule_id(cid), flag(ok, "accepted"), _reason(reason))


@dataclass(frozen=True, slots=True)
class Replicate:
    """A copy of the record. `committed`: the highest version of the copy's ballot the
    sender knows a majority holds (0: none known; Raft's leaderCommit), so a receiver
    learns which of its copies it may report (docs/capsules.md, "Deposed copies")."""

    TAG: ClassVar[str] = "c.replicate"
    record: CustodyRecord
    committed: int = 0

    def to_wire(self) -> list[Any]:
        if not self.committed:
            return [self.TAG, self.record.to_wire()]
        return [self.TAG, self.record.to_wire(), self.committed]

    @classmethod
    def from_wire(cls, obj: Any) -> Replicate:
        if isinstance(obj, list) and len(obj) == 2:  # a peer from before commit points
            obj = [*obj, 0]
        _, rec, committed = _shape(obj, cls.TAG, 3)
        return cls(CustodyRecord.from_wire(rec), uint(committed, "committed version"))


@dataclass(frozen=True, slots=True)
class ReplicateAck:
    """The version a custodian holds, the ballot that wrote it and the custodian's
    promise: a leader counts it only when both equal its own ballot."""

    TAG: ClassVar[str] = "c.replicate-ack"
    capsule_id: str
    version: int
    ballot: Ballot = NO_BALLOT
    promise: Ballot = NO_BALLOT
    #: The highest version of `ballot` the sender knows committed (0: none known).
    committed: int = 0

    def to_wire(self) -> list[Any]:
        out = [self.TAG, self.capsule_id, self.version, *self.ballot, *self.promise]
        return [*out, self.committed] if self.committed else out

    @classmethod
    def from_wire(cls, obj: Any) -> ReplicateAck:
        if isinstance(obj, list) and len(obj) == 3:  # a peer from before custody epochs
            obj = [*obj, 0, b"", 0, b""]
        if isinstance(obj, list) and len(obj) == 7:  # a peer from before commit points
            obj = [*obj, 0]
        _, cid, version, be, bl, pe, pl, committed = _shape(obj, cls.TAG, 8)
        ballot = ballot_from_wire(be, bl, "ack")
        promise = ballot_from_wire(pe, pl, "ack promise")
        return cls(check_capsule_id(cid), uint(version, "version"), ballot, promise,
                   uint(committed, "committed version"))


@dataclass(frozen=True, slots=True)
class Committed:
    """The leader's notice that `version` of ballot `ballot` is held by a majority
    (sent to the configuration when a finished version commits: no later `Replicate`
    would carry its commit point), so a follower may report that outcome."""

    TAG: ClassVar[str] = "c.committed"
    capsule_id: str
    ballot: Ballot
    version: int

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, *self.ballot, self.version]

    @classmethod
    def from_wire(cls, obj: Any) -> Committed:
        _, cid, be, bl, version = _shape(obj, cls.TAG, 5)
        return cls(check_capsule_id(cid), ballot_from_wire(be, bl, "committed"),
                   uint(version, "committed version"))


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Phase 1 of custody epoch `ballot`: "promise it, send me your record". It carries
    the sender's copy (`record`), so a custodian that holds nothing yet keeps it and can
    persist its promise (opening a brand-new record's first epoch)."""

    TAG: ClassVar[str] = "c.sync"
    capsule_id: str
    ballot: Ballot = NO_BALLOT
    record: CustodyRecord | None = None

    def to_wire(self) -> list[Any]:
        rec = self.record.to_wire() if self.record else None
        return [self.TAG, self.capsule_id, *self.ballot, rec]

    @classmethod
    def from_wire(cls, obj: Any) -> SyncRequest:
        if isinstance(obj, list) and len(obj) == 2:
            obj = [*obj, 0, b"", None]
        _, cid, be, bl, rec = _shape(obj, cls.TAG, 5)
        record = None if rec is None else CustodyRecord.from_wire(rec)
        cid = check_capsule_id(cid)
        if record is not None and record.capsule_id != cid:
            raise MalformedFrame("sync request record is for another capsule")
        return cls(cid, ballot_from_wire(be, bl, "sync"), record)


@dataclass(frozen=True, slots=True)
class SyncReply:
    """A custodian's copy for a takeover, with the receipt it holds for the current
    lease (`receipt`, sent to it by the executor), so a new leader that never got the
    receipt itself settles the capsule from it instead of leasing it again. `ballot`
    is the request's; `promised` says whether the custodian promised it, and
    `promise` is its (possibly higher) promise."""

    TAG: ClassVar[str] = "c.sync-reply"
    capsule_id: str
    record: CustodyRecord | None
    receipt: Receipt | None = None
    ballot: Ballot = NO_BALLOT
    promised: bool = False
    promise: Ballot = NO_BALLOT

    def to_wire(self) -> list[Any]:
        rec = self.record.to_wire() if self.record else None
        rcpt = self.receipt.to_wire() if self.receipt else None
        return [self.TAG, self.capsule_id, rec, rcpt, *self.ballot, self.promised,
                *self.promise]  # fmt: skip

    @classmethod
    def from_wire(cls, obj: Any) -> SyncReply:
        if isinstance(obj, list) and len(obj) == 3:  # a peer that holds no receipts
            obj = [*obj, None]
        if isinstance(obj, list) and len(obj) == 4:  # a peer from before custody epochs
            obj = [*obj, 0, b"", False, 0, b""]
        _, cid, rec, rcpt, be, bl, ok, pe, pl = _shape(obj, cls.TAG, 9)
        record = None if rec is None else CustodyRecord.from_wire(rec)
        receipt = None if rcpt is None else Receipt.from_wire(rcpt)
        cid = check_capsule_id(cid)
        if record is not None and record.capsule_id != cid:
            raise MalformedFrame("sync reply record is for another capsule")
        if receipt is not None and receipt.capsule_id != cid:
            raise MalformedFrame("sync reply receipt is for another capsule")
        ballot = ballot_from_wire(be, bl, "sync reply")
        promise = ballot_from_wire(pe, pl, "sync reply promise")
        return cls(cid, record, receipt, ballot, flag(ok, "promised"), promise)


@dataclass(frozen=True, slots=True)
class LeaseOffer:
    """`parent_outputs`: the finished parents' outputs this capsule takes as inputs.
    `custodians`: set only in an offer to a guest executor of another colony
    (docs/federation.md), which cannot compute them from its own view: its heartbeats
    and receipt go to them, and only they may revoke the lease. On the wire a sixth
    element, present only when set."""

    TAG: ClassVar[str] = "c.offer"
    capsule: Capsule
    token: int
    timing: LeaseTiming
    parent_outputs: tuple[ParentOutput, ...] = ()
    custodians: tuple[PeerId, ...] = ()

    def to_wire(self) -> list[Any]:
        t = self.timing
        out = [
            self.TAG,
            self.capsule.to_wire(),
            self.token,
            [t.lease_timeout_s, t.heartbeat_s, t.offer_timeout_s],
            parent_outputs_to_wire(self.parent_outputs),
        ]
        if self.custodians:
            out.append([p.raw for p in self.custodians])
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> LeaseOffer:
        custodians: tuple[PeerId, ...] = ()
        if isinstance(obj, list) and len(obj) == 6:
            raw = obj[5]
            if (not isinstance(raw, list) or not 0 < len(raw) <= MAX_CONFIG
                    or not all(isinstance(p, bytes) for p in raw)):  # fmt: skip
                raise MalformedFrame(f"offer custodians must be 1..{MAX_CONFIG} peer ids")
            custodians = tuple(dict.fromkeys(PeerId.from_bytes(p) for p in raw))
            obj = obj[:5]
        _, cap, token, timing, parents = _shape(obj, cls.TAG, 5)
        if not isinstance(timing, list) or len(timing) != 3:
            raise MalformedFrame("lease timing must be [lease, heartbeat, offer]")
        try:
            lt = LeaseTiming(
                *(number(x, "lease timing", above=True, message=_POSITIVE) for x in timing)
            )
        except ValueError as e:
            raise MalformedFrame(f"lease timing: {e}") from None
        token = uint(token, "token")
        if token == 0:
            raise MalformedFrame("lease tokens start at 1")
        outs = parent_outputs_from_wire(parents, optional=False) or ()
        return cls(Capsule.from_wire(cap), token, lt, outs, custodians)


@dataclass(frozen=True, slots=True)
class LeaseReply:
    """X→L: accept or refuse an offer. A refusal of a stale token names `highest`, the
    highest token this executor was offered for the capsule: the leader's floor when
    every custodian lost its disk (docs/capsules.md, "Custody epochs"). On the wire
    only when set (a sixth element), so replies from older nodes still decode."""

    TAG: ClassVar[str] = "c.offer-reply"
    capsule_id: str
    token: int
    accepted: bool
    reason: str = ""
    highest: int = 0

    def to_wire(self) -> list[Any]:
        out = [self.TAG, self.capsule_id, self.token, self.accepted, self.reason]
        return [*out, self.highest] if self.highest else out

    @classmethod
    def from_wire(cls, obj: Any) -> LeaseReply:
        n = 6 if isinstance(obj, list) and len(obj) == 6 else 5
        _, cid, token, ok, reason, *highest = _shape(obj, cls.TAG, n)
        return cls(check_capsule_id(cid), uint(token, "token"), flag(ok, "accepted"),
                   _reason(reason), uint(highest[0], "highest") if highest else 0)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Heartbeat:
    TAG: ClassVar[str] = "c.heartbeat"
    capsule_id: str
    token: int

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.token]

    @classmethod
    def from_wire(cls, obj: Any) -> Heartbeat:
        _, cid, token = _shape(obj, cls.TAG, 3)
        return cls(check_capsule_id(cid), uint(token, "token"))


@dataclass(frozen=True, slots=True)
class LeaseRevoked:
    TAG: ClassVar[str] = "c.revoked"
    capsule_id: str
    token: int
    reason: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.token, self.reason]

    @classmethod
    def from_wire(cls, obj: Any) -> LeaseRevoked:
        _, cid, token, reason = _shape(obj, cls.TAG, 4)
        return cls(check_capsule_id(cid), uint(token, "token"), _reason(reason))


@dataclass(frozen=True, slots=True)
class ReceiptMsg:
    TAG: ClassVar[str] = "c.receipt"
    receipt: Receipt

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.receipt.to_wire()]

    @classmethod
    def from_wire(cls, obj: Any) -> ReceiptMsg:
        _, rcpt = _shape(obj, cls.TAG, 2)
        return cls(Receipt.from_wire(rcpt))


@dataclass(frozen=True, slots=True)
class ReceiptReply:
    TAG: ClassVar[str] = "c.receipt-reply"
    capsule_id: str
    token: int
    accepted: bool
    reason: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.token, self.accepted, self.reason]

    @classmethod
    def from_wire(cls, obj: Any) -> ReceiptReply:
        _, cid, token, ok, reason = _shape(obj, cls.TAG, 5)
        return cls(check_capsule_id(cid), uint(token, "token"), flag(ok, "accepted"),
                   _reason(reason))  # fmt: skip


@dataclass(frozen=True, slots=True)
class StatusQuery:
    TAG: ClassVar[str] = "c.status?"
    capsule_id: str

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id]

    @classmethod
    def from_wire(cls, obj: Any) -> StatusQuery:
        _, cid = _shape(obj, cls.TAG, 2)
        return cls(check_capsule_id(cid))


@dataclass(frozen=True, slots=True)
class StatusReply:
    """`state` is a `State` value or "unknown"; `outputs` are the accepted receipt's.

    `output_names` name the outputs (same length; dataflow.named_outputs) and `label`
    is how the capsule's children name it in their input paths (dataflow.parent_label);
    both are empty when unknown.
    """

    TAG: ClassVar[str] = "c.status"
    capsule_id: str
    state: str
    token: int = 0
    reason: str = ""
    outputs: tuple[str, ...] = ()
    exit_status: int | None = None
    output_names: tuple[str, ...] = ()
    label: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.state, self.token, self.reason,
                list(self.outputs), self.exit_status, list(self.output_names),
                self.label]  # fmt: skip

    @classmethod
    def from_wire(cls, obj: Any) -> StatusReply:
        _, cid, state, token, reason, outputs, status, names, label = _shape(obj, cls.TAG, 9)
        if not isinstance(state, str) or (
            state != UNKNOWN and state not in State._value2member_map_
        ):
            raise MalformedFrame(f"unknown capsule state {state!r}")
        if not isinstance(outputs, list) or len(outputs) > 1024:
            raise MalformedFrame("status outputs must be a list")
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or abs(status) >= 1 << 31
        ):
            raise MalformedFrame("status exit status must be a 32-bit integer or null")
        try:
            outs = tuple(check_cid(c, "status output") for c in outputs)
        except SpecError as e:
            raise MalformedFrame(str(e)) from None
        if not isinstance(names, list) or len(names) not in (0, len(outs)):
            raise MalformedFrame("status output names must be empty or one per output")
        named = tuple(safe_name(n, "status output name", 4096) for n in names)
        if label != "":
            label = safe_name(label, "status label", 4096)
            if "/" in label:
                raise MalformedFrame("status label must be one path component")
        return cls(check_capsule_id(cid), state, uint(token, "token"), _reason(reason),
                   outs, status, named, label)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CancelRequest:
    TAG: ClassVar[str] = "c.cancel"
    capsule_id: str
    reason: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.capsule_id, self.reason]

    @classmethod
    def from_wire(cls, obj: Any) -> CancelRequest:
        _, cid, reason = _shape(obj, cls.TAG, 3)
        return cls(check_capsule_id(cid), _reason(reason))


Message = (
    Submit | SubmitAck | Replicate | ReplicateAck | SyncRequest | SyncReply | LeaseOffer
    | LeaseReply | Heartbeat | LeaseRevoked | ReceiptMsg | ReceiptReply | StatusQuery
    | StatusReply | CancelRequest | Committed
)  # fmt: skip

MESSAGE_TYPES: tuple[type[Message], ...] = (
    Submit, SubmitAck, Replicate, ReplicateAck, SyncRequest, SyncReply, LeaseOffer,
    LeaseReply, Heartbeat, LeaseRevoked, ReceiptMsg, ReceiptReply, StatusQuery,
    StatusReply, CancelRequest, Committed,
)  # fmt: skip
_BY_TAG: dict[str, type[Message]] = {t.TAG: t for t in MESSAGE_TYPES}


def decode_message(obj: Any) -> Message:
    """Decode a CBOR value into a capsule message. Raises only the WireError family."""
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise MalformedFrame("capsule message must be an array starting with a tag")
    cls = _BY_TAG.get(obj[0])
    if cls is None:
        raise MalformedFrame(f"unknown capsule message tag {obj[0][:32]!r}")
    try:
        return cls.from_wire(obj)
    except (RecursionError, OverflowError) as e:
        raise MalformedFrame(f"{obj[0]}: {e}") from None


def encode_bytes(msg: Message) -> bytes:
    return cbor_encode(msg.to_wire())


def decode_bytes(data: bytes) -> Message:
    return decode_message(cbor_decode(data))
