"""libp2p circuit relay v2 wire (`/libp2p/circuit/relay/0.2.0/hop` and `/stop`), sans-IO.

Spec: libp2p/specs relay/circuit-v2.md. Three parties: a relay R, a peer B that
**reserves** a slot at R (hop RESERVE → STATUS with a `Reservation` and the
relayed connections' `Limit`), and a peer A that **connects** to B through R (hop
CONNECT naming B → R opens a stop stream to B, stop CONNECT naming A → B answers
stop STATUS OK → R answers A's hop STATUS OK and splices the two streams). A and B
then run the secure channel over the spliced stream, A as initiator.

    message HopMessage  { Type type = 1 (RESERVE 0, CONNECT 1, STATUS 2);
                          Peer peer = 2; Reservation reservation = 3;
                          Limit limit = 4; Status status = 5; }
    message StopMessage { Type type = 1 (CONNECT 0, STATUS 1);
                          Peer peer = 2; Limit limit = 3; Status status = 4; }
    message Peer        { bytes id = 1; repeated bytes addrs = 2; }
    message Reservation { uint64 expire = 1 (unix s); repeated bytes addrs = 2;
                          bytes voucher = 3; }
    message Limit       { uint32 duration = 1 (s); uint64 data = 2 (bytes); }

Each message is an unsigned-varint length + protobuf, ≤ `MAX_MESSAGE_BYTES` (go-libp2p
and rust-libp2p use 4 KiB). The voucher is a signed envelope (RFC 0002, domain
`libp2p-relay-rsvp`, payload type multicodec 0x0302) of `ReservationVoucher { bytes
relay = 1; bytes peer = 2; uint64 expiration = 3; }`, signed by the relay's key.

Decoding never raises anything but `CircuitV2Error`, whose `status` is the code to
answer with (MALFORMED_MESSAGE for bytes we cannot read, UNEXPECTED_MESSAGE for a
type that has no business on that protocol) and whose `reason` is the counter key.
The trio side is overlay/runtime/edge/relay_v2.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import nacl.exceptions
import nacl.signing

from overlay.core.errors import LocalProtocolError, MalformedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.p2p import keys, pb
from overlay.p2p.errors import HandshakeError, ProtobufError

HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/stop"
#: Largest hop/stop message we read or write (go-libp2p's maxMessageSize).
MAX_MESSAGE_BYTES = 4096
#: Addresses per Peer / Reservation we accept (a message of 4 KiB holds ~200).
MAX_ADDRS = 32
MAX_ADDR_BYTES = 256
VOUCHER_DOMAIN = b"libp2p-relay-rsvp"
#: Multicodec 0x0302 (`libp2p-relay-rsvp`) as go-libp2p and js-libp2p write it: the two
#: big-endian bytes, not a varint (found by the js interop test: a varint is refused).
VOUCHER_PAYLOAD_TYPE = b"\x03\x02"


class Status(IntEnum):
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class HopType(IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(IntEnum):
    CONNECT = 0
    STATUS = 1


class CircuitV2Error(WireError):
    """A hop/stop message is refused: `status` to answer with, `reason` to count."""

    def __init__(self, status: Status, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason


def _malformed(detail: str) -> CircuitV2Error:
    return CircuitV2Error(Status.MALFORMED_MESSAGE, "malformed", detail)


@dataclass(frozen=True, slots=True)
class Peer:
    id: PeerId
    addrs: tuple[bytes, ...] = ()

    def to_wire(self) -> bytes:
        return pb.field_bytes(1, self.id.raw) + b"".join(pb.field_bytes(2, a) for a in self.addrs)

    @classmethod
    def from_wire(cls, data: bytes) -> Peer:
        fields = pb.decode(data)
        raw = pb.get_bytes(fields, 1)
        if raw is None:
            raise _malformed("peer without id")
        try:
            pid = PeerId.from_bytes(raw)
        except (WireError, MalformedFrame, ValueError) as e:
            raise _malformed(f"peer id: {e}") from None
        return cls(pid, _addrs(pb.get_all_bytes(fields, 2)))


@dataclass(frozen=True, slots=True)
class Limit:
    """Per relayed connection: seconds and bytes (both directions); None = no limit."""

    duration_s: int | None = None
    data_bytes: int | None = None

    def to_wire(self) -> bytes:
        out = b""
        if self.duration_s is not None:
            out += pb.field_varint(1, min(self.duration_s, 2**32 - 1))
        if self.data_bytes is not None:
            out += pb.field_varint(2, min(self.data_bytes, 2**64 - 1))
        return out

    @classmethod
    def from_wire(cls, data: bytes) -> Limit:
        fields = pb.decode(data)
        return cls(pb.get_int(fields, 1), pb.get_int(fields, 2))


@dataclass(frozen=True, slots=True)
class Reservation:
    expire: int  # unix seconds (UTC)
    addrs: tuple[bytes, ...] = ()
    voucher: bytes | None = None

    def to_wire(self) -> bytes:
        out = pb.field_varint(1, self.expire)
        out += b"".join(pb.field_bytes(2, a) for a in self.addrs)
        if self.voucher is not None:
            out += pb.field_bytes(3, self.voucher)
        return out

    @classmethod
    def from_wire(cls, data: bytes) -> Reservation:
        fields = pb.decode(data)
        expire = pb.get_int(fields, 1)
        if expire is None:
            raise _malformed("reservation without expire")
        return cls(expire, _addrs(pb.get_all_bytes(fields, 2)), pb.get_bytes(fields, 3))


def _addrs(raw: list[bytes]) -> tuple[bytes, ...]:
    if len(raw) > MAX_ADDRS:
        raise _malformed(f"{len(raw)} addresses > {MAX_ADDRS}")
    if any(len(a) > MAX_ADDR_BYTES for a in raw):
        raise _malformed(f"an address of > {MAX_ADDR_BYTES} bytes")
    return tuple(raw)


def _sub(fields: list[pb.Field], number: int) -> bytes | None:
    return pb.get_bytes(fields, number)


@dataclass(frozen=True, slots=True)
class HopMessage:
    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: Status | None = None

    def to_wire(self) -> bytes:
        out = pb.field_varint(1, int(self.type))
        if self.peer is not None:
            out += pb.field_bytes(2, self.peer.to_wire())
        if self.reservation is not None:
            out += pb.field_bytes(3, self.reservation.to_wire())
        if self.limit is not None:
            out += pb.field_bytes(4, self.limit.to_wire())
        if self.status is not None:
            out += pb.field_varint(5, int(self.status))
        return _check_size(out)

    def frame(self) -> bytes:
        body = self.to_wire()
        return encode_varint(len(body)) + body

    @classmethod
    def from_wire(cls, data: bytes) -> HopMessage:
        _check_in_size(data)
        try:
            fields = pb.decode(data)
            kind = pb.get_int(fields, 1)
            if kind not in tuple(HopType):
                raise _malformed(f"hop type {kind!r}")
            peer, res, lim = _sub(fields, 2), _sub(fields, 3), _sub(fields, 4)
            return cls(
                HopType(kind),
                Peer.from_wire(peer) if peer is not None else None,
                Reservation.from_wire(res) if res is not None else None,
                Limit.from_wire(lim) if lim is not None else None,
                _status(pb.get_int(fields, 5)),
            )
        except ProtobufError as e:
            raise _malformed(str(e)) from None


@dataclass(frozen=True, slots=True)
class StopMessage:
    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: Status | None = None

    def to_wire(self) -> bytes:
        out = pb.field_varint(1, int(self.type))
        if self.peer is not None:
            out += pb.field_bytes(2, self.peer.to_wire())
        if self.limit is not None:
            out += pb.field_bytes(3, self.limit.to_wire())
        if self.status is not None:
            out += pb.field_varint(4, int(self.status))
        return _check_size(out)

    def frame(self) -> bytes:
        body = self.to_wire()
        return encode_varint(len(body)) + body

    @classmethod
    def from_wire(cls, data: bytes) -> StopMessage:
        _check_in_size(data)
        try:
            fields = pb.decode(data)
            kind = pb.get_int(fields, 1)
            if kind not in tuple(StopType):
                raise _malformed(f"stop type {kind!r}")
            peer, lim = _sub(fields, 2), _sub(fields, 3)
            return cls(
                StopType(kind),
                Peer.from_wire(peer) if peer is not None else None,
                Limit.from_wire(lim) if lim is not None else None,
                _status(pb.get_int(fields, 4)),
            )
        except ProtobufError as e:
            raise _malformed(str(e)) from None


def _status(value: int | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value)
    except ValueError:
        raise _malformed(f"status {value}") from None


def _check_size(body: bytes) -> bytes:
    if len(body) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError(f"circuit v2 message of {len(body)} bytes > {MAX_MESSAGE_BYTES}")
    return body


def _check_in_size(data: bytes) -> None:
    if len(data) > MAX_MESSAGE_BYTES:
        raise CircuitV2Error(
            Status.MALFORMED_MESSAGE, "message_too_large", f"{len(data)} > {MAX_MESSAGE_BYTES}"
        )


# ---------------------------------------------------------------- the voucher


def _signing_input(payload: bytes) -> bytes:
    """RFC 0002: varint-prefixed domain, payload type and payload, concatenated."""
    parts = (VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload)
    return b"".join(encode_varint(len(p)) + p for p in parts)


def make_voucher(identity_seed: bytes, relay: PeerId, peer: PeerId, expiration: int) -> bytes:
    """The relay's signed envelope saying `peer` holds a reservation until `expiration`."""
    payload = pb.field_bytes(1, relay.raw) + pb.field_bytes(2, peer.raw)
    payload += pb.field_varint(3, expiration)
    sk = nacl.signing.SigningKey(identity_seed)
    sig = sk.sign(_signing_input(payload)).signature
    return (
        pb.field_bytes(1, keys.encode_public_key(bytes(sk.verify_key)))
        + pb.field_bytes(2, VOUCHER_PAYLOAD_TYPE)
        + pb.field_bytes(3, payload)
        + pb.field_bytes(5, sig)
    )


def open_voucher(envelope: bytes, relay: PeerId, peer: PeerId) -> int:
    """Verify a voucher from `relay` for `peer`; return its expiration (unix s).

    CircuitV2Error(reason "bad_voucher") on any fault: wrong signer, bad signature,
    another payload type, or a voucher naming another relay or peer."""
    try:
        fields = pb.decode(envelope)
        pub = keys.decode_public_key(pb.get_bytes(fields, 1) or b"")
        ptype, payload = pb.get_bytes(fields, 2), pb.get_bytes(fields, 3)
        sig = pb.get_bytes(fields, 5)
        if ptype != VOUCHER_PAYLOAD_TYPE or payload is None or sig is None:
            raise ProtobufError("not a relay reservation envelope")
        if keys.peer_id_of(pub) != relay:
            raise ProtobufError("voucher not signed by the relay")
        nacl.signing.VerifyKey(pub).verify(_signing_input(payload), sig)
        body = pb.decode(payload)
        if pb.get_bytes(body, 1) != relay.raw or pb.get_bytes(body, 2) != peer.raw:
            raise ProtobufError("voucher names another relay or peer")
        expiration = pb.get_int(body, 3)
        if expiration is None:
            raise ProtobufError("voucher without expiration")
        return expiration
    except (ProtobufError, HandshakeError, nacl.exceptions.BadSignatureError, ValueError) as e:
        raise CircuitV2Error(Status.MALFORMED_MESSAGE, "bad_voucher", str(e)) from None
