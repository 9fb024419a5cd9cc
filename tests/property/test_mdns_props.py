"""Hypothesis and table tests for the mDNS packet codec (overlay/runtime/net/mdns.py).

Properties: messages round-trip; any bytes (random, truncated or bit-flipped valid
packets) either decode or raise `DnsError`, never anything else; compression loops
and forward pointers are refused; a libp2p mDNS answer in the shape js-libp2p sends
(compressed names, SRV and A records beside the TXT) yields the peer's addresses.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.runtime.net import mdns
from overlay.runtime.net.mdns import (
    SERVICE,
    TYPE_A,
    TYPE_PTR,
    TYPE_SRV,
    TYPE_TXT,
    DnsError,
    Message,
    Question,
    Record,
    decode,
    encode,
)

PEER = "12D3KooWGRYZDHBembyGJQqQ6WgLqJWYNjnECGGHHRn1Dgxf5BDi"

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)
txt = st.lists(st.binary(max_size=60), max_size=4).map(tuple)
records = st.one_of(
    st.builds(Record, names, st.just(TYPE_PTR), names, st.integers(0, 2**32 - 1)),
    st.builds(Record, names, st.just(TYPE_TXT), txt, st.integers(0, 2**32 - 1)),
    st.builds(Record, names, st.sampled_from([TYPE_A, TYPE_SRV, 99]), st.binary(max_size=40),
              st.integers(0, 2**32 - 1), st.sampled_from([1, 0x8001])),
)
messages = st.builds(
    Message,
    st.integers(0, 0xFFFF),
    st.sampled_from([0, mdns.FLAG_RESPONSE]),
    st.lists(st.builds(Question, names, st.sampled_from([TYPE_PTR, 255]),
                       st.sampled_from([1, 0x8001])), max_size=3).map(tuple),
    st.lists(records, max_size=4).map(tuple),
    st.lists(records, max_size=2).map(tuple),
    st.lists(records, max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def _decode_or_dns_error(data: bytes) -> None:
    with contextlib.suppress(DnsError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_dns_error(data: bytes) -> None:
    _decode_or_dns_error(data)


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_damaged_packets_raise_only_dns_error(msg: Message, data: st.DataObject) -> None:
    packet = bytearray(encode(msg))
    cut = data.draw(st.integers(0, len(packet)))
    _decode_or_dns_error(bytes(packet[:cut]))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(packet) - 1))
        packet[i] = data.draw(st.integers(0, 255))
    _decode_or_dns_error(bytes(packet))
    for name in mdns.peers_in(_try(bytes(packet))):
        assert "/" not in name


def _try(packet: bytes) -> Message:
    try:
        return decode(packet)
    except DnsError:
        return Message()


def _header(qd: int = 0, an: int = 0, flags: int = 0) -> bytes:
    return struct.pack("!6H", 0, flags, qd, an, 0, 0)


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (b"\0" * 5, "truncated"),
        (_header(qd=1) + b"\xc0\x0c\0\x0c\0\x01", "backwards"),  # points at itself
        (_header(qd=1) + b"\x01a\xc0\x0e\0\x0c\0\x01", "backwards"),  # forward pointer
        (_header(qd=1) + b"\x40" + b"a" * 64 + b"\0\0\x0c\0\x01", "label type"),
        (_header(qd=1) + b"\x05ab", "past the end"),
        (_header(qd=300), "exceed the limit"),
        (_header(qd=1) + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\x0c\0\x01", "255"),
        (_header(an=1, flags=0x8400) + b"\0\0\x10\0\x01\0\0\0\x78\0\x03\x05ab", "TXT"),
        (_header(an=1, flags=0x8400) + b"\0\0\x01\0\x01\0\0\0\x78\0\x09ab", "past the end"),
        (b"\0" * 12 + b"x" * 9000, "exceeds"),
    ],
)
def test_malformed_packets_have_clear_errors(packet: bytes, error: str) -> None:
    with pytest.raises(DnsError, match=error):
        decode(packet)


def test_pointer_chain_is_bounded() -> None:
    # Each name points at the previous one: 40 backwards jumps, no loop, still refused.
    body = bytearray(b"\x01a\0\0\x0c\0\x01")
    offsets = [12]
    for _ in range(40):
        offsets.append(12 + len(body))
        body += struct.pack("!H", 0xC000 | offsets[-2]) + b"\0\x0c\0\x01"
    with pytest.raises(DnsError, match="too many compression pointers"):
        decode(_header(qd=41) + bytes(body))


def test_our_answer_lists_our_addresses() -> None:
    addrs = [f"/ip4/10.9.0.1/tcp/4001/p2p/{PEER}", f"/ip4/10.9.1.1/tcp/4001/p2p/{PEER}"]
    msg = decode(mdns.response_packet("abc123", addrs))
    assert msg.is_response and not mdns.is_service_query(msg)
    assert msg.answers[0] == Record(SERVICE, TYPE_PTR, f"abc123.{SERVICE}", 120)
    assert mdns.peers_in(msg) == {PEER: addrs}
    assert mdns.is_service_query(decode(mdns.query_packet()))
    assert mdns.peers_in(decode(mdns.query_packet())) == {}


def _name(n: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in n.split(".")) + b"\0"


def test_js_libp2p_style_answer_with_compression() -> None:
    """PTR, then SRV, TXT and A in the additionals, names compressed against the PTR."""
    instance = "x7kq9" + "." + SERVICE
    head = struct.pack("!6H", 0, 0x8400, 0, 1, 0, 3)
    ptr_name_at = 12
    ptr_rdata = b"\x05x7kq9" + struct.pack("!H", 0xC000 | ptr_name_at)
    answer = _name(SERVICE) + struct.pack("!HHIH", TYPE_PTR, 1, 120, len(ptr_rdata)) + ptr_rdata
    inst_at = 12 + len(_name(SERVICE)) + 10  # the PTR rdata: the instance name
    ptr = struct.pack("!H", 0xC000 | inst_at)
    srv = b"\0\0\0\0\x0f\xa1" + _name("host.local")
    dnsaddrs = [f"dnsaddr=/ip4/192.168.1.7/tcp/4001/p2p/{PEER}".encode(),
                f"dnsaddr=/ip4/192.168.1.7/udp/4001/quic-v1/p2p/{PEER}".encode(),
                f"dnsaddr=/ip4/127.0.0.1/tcp/4001/p2p/{PEER}".encode(), b"other=1"]
    txt_rdata = b"".join(bytes([len(s)]) + s for s in dnsaddrs)
    packet = (head + answer
              + ptr + struct.pack("!HHIH", TYPE_SRV, 0x8001, 120, len(srv)) + srv
              + ptr + struct.pack("!HHIH", TYPE_TXT, 0x8001, 120, len(txt_rdata)) + txt_rdata
              + _name("host.local") + struct.pack("!HHIH", TYPE_A, 0x8001, 120, 4)
              + bytes([192, 168, 1, 7]))
    msg = decode(packet)
    assert msg.answers[0].data == instance
    peers = mdns.peers_in(msg)
    assert list(peers) == [PEER] and len(peers[PEER]) == 3
    # Only TCP is dialled; loopback only when the packet came over loopback.
    assert mdns.dialable(peers[PEER], "192.168.1.7") == [
        f"/ip4/192.168.1.7/tcp/4001/p2p/{PEER}"]
    assert mdns.dialable(peers[PEER], "127.0.0.1")[0] == f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"


def test_expand_wildcard_listen_addresses() -> None:
    got = mdns.expand_addrs([f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER}"], ["10.1.0.2", "10.2.0.2"])
    assert got == [f"/ip4/10.1.0.2/tcp/4001/p2p/{PEER}", f"/ip4/10.2.0.2/tcp/4001/p2p/{PEER}"]
    only_lo = mdns.expand_addrs([f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"], [])
    assert only_lo == [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"]
