"""The libp2p Kademlia wire format, hand-written (libp2p/specs kad-dht/README.md).

Schema (proto3; field numbers as in the spec and go-libp2p-kad-dht `pb/dht.proto`):

    message Record { bytes key = 1; bytes value = 2; string timeReceived = 5; }
    message Message {
      enum MessageType { PUT_VALUE = 0; GET_VALUE = 1; ADD_PROVIDER = 2;
                         GET_PROVIDERS = 3; FIND_NODE = 4; PING = 5; }
      enum ConnectionType { NOT_CONNECTED = 0; CONNECTED = 1; CAN_CONNECT = 2;
                            CANNOT_CONNECT = 3; }
      message Peer { bytes id = 1; repeated bytes addrs = 2; ConnectionType connection = 3; }
      MessageType type = 1; int32 clusterLevelRaw = 10; bytes key = 2; Record record = 3;
      repeated Peer closerPeers = 8; repeated Peer providerPeers = 9;
    }

On a stream each message is unsigned-varint length-prefixed. The wire has no request
ids: a request and its response share one stream. Inside the core a request travels as
`DhtRequest(rid, msg)` and its answer as `DhtResponse(rid, msg)`; the driver keeps the
rid ↔ stream mapping (see docs/dht.md, "Driver contract"). `ADD_PROVIDER` has no
response (`KadMessage.expects_response()` is False).

Decoding validates every field (peer ids parse, enums known, sizes within the limits
below) and raises only the `WireError` family. Lists longer than `MAX_PEERS_PER_LIST`
are refused outright; the core further truncates lists longer than k and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from overlay.core.errors import MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.protobuf import Writer, as_int32, expect_bytes, expect_int, iter_fields

PROTOCOL_ID = "/colony/kad/1.0.0"
IPFS_PROTOCOL_ID = "/ipfs/kad/1.0.0"

#: go-libp2p-kad-dht's per-message limit (network message size).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Hard decode limit for closerPeers / providerPeers; the core keeps at most k of each.
MAX_PEERS_PER_LIST = 256
MAX_ADDRS_PER_PEER = 32
MAX_ADDR_BYTES = 1024
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 64 * 1024
MAX_TIME_RECEIVED_BYTES = 64


class MessageType(IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class ConnectionType(IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes = b""
    value: bytes = b""
    time_received: str = ""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A `Message.Peer`: id plus binary multiaddrs."""

    peer: PeerId
    addrs: tuple[bytes, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED


@dataclass(frozen=True, slots=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[PeerInfo, ...] = ()
    provider_peers: tuple[PeerInfo, ...] = ()
    cluster_level: int = 0

    def expects_response(self) -> bool:
        """ADD_PROVIDER is fire-and-forget in every implementation; all else is answered."""
        return self.type != MessageType.ADD_PROVIDER

    def to_wire(self) -> bytes:
        w = Writer()
        if self.type:
            w.varint(1, int(self.type))
        if self.key:
            w.blob(2, self.key)
        if self.record is not None:
            rw = Writer()
            if self.record.key:
                rw.blob(1, self.record.key)
            if self.record.value:
                rw.blob(2, self.record.value)
            if self.record.time_received:
                rw.blob(5, self.record.time_received.encode())
            w.message(3, rw)
        for p in self.closer_peers:
            w.message(8, _peer_writer(p))
        for p in self.provider_peers:
            w.message(9, _peer_writer(p))
        if self.cluster_level:
            w.varint(10, self.cluster_level)
        return w.finish()

    @classmethod
    def from_wire(cls, data: bytes | memoryview) -> KadMessage:
        if len(data) > MAX_MESSAGE_BYTES:
            raise MalformedFrame(f"kad message of {len(data)} bytes exceeds limit")
        mtype = 0
        key = b""
        record: Record | None = None
        closer: list[PeerInfo] = []
        providers: list[PeerInfo] = []
        level = 0
        for f, wt, v in iter_fields(data):
            if f == 1:
                mtype = expect_int(f, wt, v)
            elif f == 2:
                key = expect_bytes(f, wt, v)
                if len(key) > MAX_KEY_BYTES:
                    raise MalformedFrame(f"kad key of {len(key)} bytes exceeds limit")
            elif f == 3:
                record = _decode_record(expect_bytes(f, wt, v))
            elif f == 8:
                closer.append(_decode_peer(expect_bytes(f, wt, v)))
                if len(closer) > MAX_PEERS_PER_LIST:
                    raise MalformedFrame("kad: more than 256 closerPeers")
            elif f == 9:
                providers.append(_decode_peer(expect_bytes(f, wt, v)))
                if len(providers) > MAX_PEERS_PER_LIST:
                    raise MalformedFrame("kad: more than 256 providerPeers")
            elif f == 10:
                level = as_int32(expect_int(f, wt, v))
            # unknown fields are skipped (proto3)
        if mtype > 5:
            raise MalformedFrame(f"kad: unknown message type {mtype}")
        return cls(MessageType(mtype), key, record, tuple(closer), tuple(providers), level)


def _peer_writer(p: PeerInfo) -> Writer:
    pw = Writer().blob(1, p.peer.raw)
    for a in p.addrs:
        pw.blob(2, a)
    if p.connection:
        pw.varint(3, int(p.connection))
    return pw


def _decode_record(buf: bytes) -> Record:
    key = value = b""
    received = b""
    for f, wt, v in iter_fields(buf):
        if f == 1:
            key = expect_bytes(f, wt, v)
            if len(key) > MAX_KEY_BYTES:
                raise MalformedFrame("kad: record key too long")
        elif f == 2:
            value = expect_bytes(f, wt, v)
            if len(value) > MAX_VALUE_BYTES:
                raise MalformedFrame(f"kad: record value of {len(value)} bytes exceeds limit")
        elif f == 5:
            received = expect_bytes(f, wt, v)
            if len(received) > MAX_TIME_RECEIVED_BYTES:
                raise MalformedFrame("kad: record timeReceived too long")
    try:
        text = received.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("kad: record timeReceived is not UTF-8") from None
    return Record(key, value, text)


def _decode_peer(buf: bytes) -> PeerInfo:
    raw: bytes | None = None
    addrs: list[bytes] = []
    conn = 0
    for f, wt, v in iter_fields(buf):
        if f == 1:
            raw = expect_bytes(f, wt, v)
        elif f == 2:
            a = expect_bytes(f, wt, v)
            if not a or len(a) > MAX_ADDR_BYTES:
                raise MalformedFrame("kad: empty or oversize multiaddr")
            addrs.append(a)
            if len(addrs) > MAX_ADDRS_PER_PEER:
                raise MalformedFrame("kad: too many addrs for one peer")
        elif f == 3:
            conn = expect_int(f, wt, v)
    if raw is None:
        raise MalformedFrame("kad: peer entry without id")
    if conn > 3:
        raise MalformedFrame(f"kad: unknown connection type {conn}")
    return PeerInfo(PeerId.from_bytes(raw), tuple(addrs), ConnectionType(conn))


# ---------------------------------------------------------------- core envelopes


@dataclass(frozen=True, slots=True)
class DhtRequest:
    """An outbound or inbound request. `rid` is local to the sending core (outbound) or
    assigned by the driver per stream (inbound); it never goes on the wire."""

    rid: int
    msg: KadMessage


@dataclass(frozen=True, slots=True)
class DhtResponse:
    """The answer to `DhtRequest(rid, …)`, delivered back with the same rid."""

    rid: int
    msg: KadMessage
