"""kad-dht protobuf codec: hand-checked bytes, round trips and refusals."""

from __future__ import annotations

import pytest

from dht.wire import (
    ConnectionType,
    KadMessage,
    MessageType,
    PeerInfo,
    Record,
)
from overlay.core.errors import MalformedFrame, TruncatedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.protobuf import Writer

P1 = PeerId.from_ed25519(bytes(range(32)))
TCP_ADDR = bytes.fromhex("047f000001060fa1")  # /ip4/127.0.0.1/tcp/4001


def test_find_node_bytes_match_the_schema() -> None:
    msg = KadMessage(MessageType.FIND_NODE, b"k")
    # field 1 varint 4; field 2 bytes "k"
    assert msg.to_wire() == b"\x08\x04\x12\x01k"
    assert KadMessage.from_wire(b"\x08\x04\x12\x01k") == msg


def test_put_value_type_zero_is_omitted_as_proto3_default() -> None:
    msg = KadMessage(MessageType.PUT_VALUE, b"/k", Record(b"/k", b"v"))
    raw = msg.to_wire()
    assert raw == b"\x12\x02/k" + b"\x1a\x07" + b"\x0a\x02/k\x12\x01v"
    assert KadMessage.from_wire(raw) == msg


def test_peer_entries_round_trip() -> None:
    msg = KadMessage(
        MessageType.GET_PROVIDERS,
        b"\x12\x20" + bytes(32),
        closer_peers=(PeerInfo(P1, (TCP_ADDR,), ConnectionType.CONNECTED),),
        provider_peers=(PeerInfo(P1),),
        cluster_level=3,
    )
    assert KadMessage.from_wire(msg.to_wire()) == msg


def test_unknown_fields_are_skipped() -> None:
    raw = KadMessage(MessageType.PING).to_wire()
    raw += Writer().varint(15, 7).blob(16, b"x").finish()
    assert KadMessage.from_wire(raw) == KadMessage(MessageType.PING)


def test_record_time_received_round_trips() -> None:
    msg = KadMessage(MessageType.GET_VALUE, b"/a", Record(b"/a", b"v", "2024-01-01T00:00:00Z"))
    assert KadMessage.from_wire(msg.to_wire()) == msg


def test_add_provider_expects_no_response() -> None:
    assert not KadMessage(MessageType.ADD_PROVIDER).expects_response()
    assert KadMessage(MessageType.FIND_NODE).expects_response()


@pytest.mark.parametrize(
    "raw,err",
    [
        (b"\x08\x09", MalformedFrame),  # message type 9
        (b"\x12\x05ab", TruncatedFrame),  # key claims 5 bytes
        (b"\x42\x00", MalformedFrame),  # closer peer without id
        (b"\x42\x03\x0a\x01\x99", WireError),  # bad peer id multihash
        (b"\x0a\x01x", MalformedFrame),  # type as bytes
        (b"\x12" + b"\xff" * 11, MalformedFrame),  # runaway varint
    ],
)
def test_bad_bytes_raise_wire_errors(raw: bytes, err: type[Exception]) -> None:
    with pytest.raises(err):
        KadMessage.from_wire(raw)


def test_unknown_connection_type_is_refused() -> None:
    peer = Writer().blob(1, P1.raw).varint(3, 9)
    raw = Writer().varint(1, 4).message(8, peer).finish()
    with pytest.raises(MalformedFrame):
        KadMessage.from_wire(raw)


def test_peer_list_longer_than_hard_limit_is_refused() -> None:
    w = Writer().varint(1, 4)
    for _ in range(257):
        w.message(8, Writer().blob(1, P1.raw))
    with pytest.raises(MalformedFrame):
        KadMessage.from_wire(w.finish())


def test_oversize_value_is_refused() -> None:
    rec = Writer().blob(1, b"/k").blob(2, b"x" * (64 * 1024 + 1))
    with pytest.raises(MalformedFrame):
        KadMessage.from_wire(Writer().message(3, rec).finish())


def test_time_received_must_be_utf8() -> None:
    rec = Writer().blob(5, b"\xff\xfe")
    with pytest.raises(MalformedFrame):
        KadMessage.from_wire(Writer().message(3, rec).finish())
