"""Circuit relay v2 wire (overlay/p2p/circuit_v2.py): the spec's bytes, round trips,
the voucher (signed envelope) and its tampering, and hostile bytes refused with a
status and a reason, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.errors import LocalProtocolError
from overlay.p2p import multiaddr, pb
from overlay.p2p.circuit_v2 import (
    MAX_ADDRS,
    MAX_MESSAGE_BYTES,
    CircuitV2Error,
    HopMessage,
    HopType,
    Limit,
    Peer,
    Reservation,
    Status,
    StopMessage,
    StopType,
    make_voucher,
    open_voucher,
)

RELAY, B, A = (KeyPair.generate() for _ in range(3))
ADDR = multiaddr.to_bytes("/ip4/198.18.0.1/tcp/4001")


def test_spec_bytes() -> None:
    # HopMessage { type: RESERVE } is field 1 varint 0; STATUS OK is type 2, status 100.
    assert HopMessage(HopType.RESERVE).frame() == b"\x02\x08\x00"
    assert HopMessage(HopType.STATUS, status=Status.OK).to_wire() == b"\x08\x02\x28\x64"
    assert StopMessage(StopType.STATUS, status=Status.OK).to_wire() == b"\x08\x01\x20\x64"
    connect = HopMessage(HopType.CONNECT, peer=Peer(B.peer_id)).to_wire()
    assert connect == b"\x08\x01" + pb.field_bytes(2, pb.field_bytes(1, B.peer_id.raw))


def test_round_trips() -> None:
    voucher = make_voucher(RELAY.seed, RELAY.peer_id, B.peer_id, 1_900_000_000)
    hop = HopMessage(
        HopType.STATUS,
        reservation=Reservation(1_900_000_000, (ADDR,), voucher),
        limit=Limit(600, 256 * 1024 * 1024),
        status=Status.OK,
    )
    assert HopMessage.from_wire(hop.to_wire()) == hop
    stop = StopMessage(StopType.CONNECT, peer=Peer(A.peer_id, (ADDR,)), limit=Limit(120, None))
    assert StopMessage.from_wire(stop.to_wire()) == stop
    assert HopMessage.from_wire(b"\x08\x00") == HopMessage(HopType.RESERVE)


def test_voucher_verifies_and_names_relay_and_peer() -> None:
    v = make_voucher(RELAY.seed, RELAY.peer_id, B.peer_id, 1_900_000_123)
    assert open_voucher(v, RELAY.peer_id, B.peer_id) == 1_900_000_123
    # The payload type is multicodec 0x0302 as go- and js-libp2p write it: two raw
    # bytes (a varint 0x82 0x06 is what js refused until the interop test said so).
    assert pb.get_bytes(pb.decode(v), 2) == b"\x03\x02"
    for relay, peer in ((A.peer_id, B.peer_id), (RELAY.peer_id, A.peer_id)):
        with pytest.raises(CircuitV2Error, match="bad_voucher"):
            open_voucher(v, relay, peer)
    # Signed by someone else, claiming to be the relay's voucher.
    forged = make_voucher(A.seed, RELAY.peer_id, B.peer_id, 1_900_000_123)
    with pytest.raises(CircuitV2Error, match="not signed by the relay"):
        open_voucher(forged, RELAY.peer_id, B.peer_id)
    # Any flipped byte (key, type, payload or signature) is refused.
    for i in range(0, len(v), 7):
        bad = bytearray(v)
        bad[i] ^= 0x01
        with pytest.raises(CircuitV2Error):
            open_voucher(bytes(bad), RELAY.peer_id, B.peer_id)


@pytest.mark.parametrize(
    ("data", "reason", "status"),
    [
        (b"\x08\x07", "malformed", Status.MALFORMED_MESSAGE),  # no such hop type
        (b"", "malformed", Status.MALFORMED_MESSAGE),  # no type at all
        (b"\x08\x01\x12\x03\x0a\x01\x00", "malformed", Status.MALFORMED_MESSAGE),  # bad id
        (b"\x08\x01\x12\x00", "malformed", Status.MALFORMED_MESSAGE),  # peer without id
        (b"\x08\x02\x28\x63", "malformed", Status.MALFORMED_MESSAGE),  # status 99
        (b"\x08\x02\x1a\x00", "malformed", Status.MALFORMED_MESSAGE),  # no expire
        (b"\x0a\x01\x00", "malformed", Status.MALFORMED_MESSAGE),  # type not a varint
        (b"\x08", "malformed", Status.MALFORMED_MESSAGE),  # truncated
        (b"\x08\x00" * 3000, "message_too_large", Status.MALFORMED_MESSAGE),
    ],
)
def test_hostile_hop_messages(data: bytes, reason: str, status: Status) -> None:
    with pytest.raises(CircuitV2Error) as e:
        HopMessage.from_wire(data)
    assert (e.value.reason, e.value.status) == (reason, status)


def test_address_bounds() -> None:
    many = b"".join(pb.field_bytes(2, ADDR) for _ in range(MAX_ADDRS + 1))
    peer = pb.field_bytes(1, B.peer_id.raw) + many
    with pytest.raises(CircuitV2Error, match="addresses"):
        StopMessage.from_wire(b"\x08\x00" + pb.field_bytes(2, peer))
    huge = pb.field_bytes(1, B.peer_id.raw) + pb.field_bytes(2, b"\x04" * 300)
    with pytest.raises(CircuitV2Error, match="bytes"):
        StopMessage.from_wire(b"\x08\x00" + pb.field_bytes(2, huge))
    with pytest.raises(LocalProtocolError):  # we never send more than 4 KiB either
        HopMessage(HopType.STATUS, reservation=Reservation(1, tuple([ADDR] * 500))).to_wire()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_MESSAGE_BYTES + 8))
def test_random_bytes_raise_only_circuit_errors(data: bytes) -> None:
    for cls in (HopMessage, StopMessage):
        try:
            cls.from_wire(data)
        except CircuitV2Error as e:
            assert e.status in (Status.MALFORMED_MESSAGE,)
