"""Multiaddr text/binary, the protobuf helper and identify encoding."""

from __future__ import annotations

import pytest

from overlay.core.crypto import KeyPair
from overlay.core.errors import MalformedFrame
from overlay.p2p import identify, multiaddr, pb
from overlay.p2p.errors import ProtobufError


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip6/::1/tcp/0",
        "/dns4/example.org/tcp/443/wss",
        "/ip4/1.2.3.4/udp/4001/quic-v1",
        "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWJAa6KrboiqZpzTWUxF7JLNfQw1SiEKrrTuxzBQfZpm6L/p2p-circuit",
    ],
)
def test_multiaddr_roundtrip(text: str) -> None:
    assert multiaddr.from_bytes(multiaddr.to_bytes(text)) == text


def test_multiaddr_known_binary() -> None:
    # /ip4/127.0.0.1/tcp/4001 as every libp2p implementation encodes it.
    assert multiaddr.to_bytes("/ip4/127.0.0.1/tcp/4001") == bytes.fromhex("047f000001060fa1")


@pytest.mark.parametrize(
    "bad", ["ip4/1.2.3.4", "/ip4/300.0.0.1/tcp/1", "/ip4/1.2.3.4/tcp/70000", "/foo/1", "/tcp"]
)
def test_multiaddr_bad_text(bad: str) -> None:
    with pytest.raises(MalformedFrame):
        multiaddr.to_bytes(bad)


def test_split_and_tcp_host_port() -> None:
    peer = KeyPair.generate().peer_id
    assert multiaddr.split_p2p(f"/ip4/10.0.0.1/tcp/5/p2p/{peer}") == (peer, "/ip4/10.0.0.1/tcp/5")
    assert multiaddr.split_p2p("/ip4/10.0.0.1/tcp/5") == (None, "/ip4/10.0.0.1/tcp/5")
    assert multiaddr.tcp_host_port("/ip4/10.0.0.1/tcp/5") == ("10.0.0.1", 5)
    with pytest.raises(MalformedFrame):
        multiaddr.tcp_host_port("/ip4/10.0.0.1/udp/5")
    assert multiaddr.from_sockaddr("::ffff:10.1.2.3", 7) == "/ip4/10.1.2.3/tcp/7"


def test_protobuf_fields_and_errors() -> None:
    msg = pb.field_varint(1, 300) + pb.field_bytes(2, b"abc") + pb.field_bytes(2, b"def")
    fields = pb.decode(msg)
    assert pb.get_int(fields, 1) == 300
    assert pb.get_bytes(fields, 2) == b"def"  # last one wins
    assert pb.get_all_bytes(fields, 2) == [b"abc", b"def"]
    for bad in (b"\x12\x05ab", b"\x0b", b"\x00\x01", b"\x08"):
        with pytest.raises(ProtobufError):
            pb.decode(bad)


def test_identify_roundtrip_with_observed_addr() -> None:
    kp = KeyPair.generate()
    body = identify.encode(
        kp.public.raw, ["/ip4/10.0.0.1/tcp/4001", "/not/supported"], ["/ipfs/ping/1.0.0"],
        "/ip4/203.0.113.9/tcp/55555", "colony/0.1.0",
    )
    info = identify.decode(body)
    assert info.peer == kp.peer_id
    assert info.listen_addrs == ("/ip4/10.0.0.1/tcp/4001",)
    assert info.observed_addr == "/ip4/203.0.113.9/tcp/55555"
    assert info.protocols == ("/ipfs/ping/1.0.0",)
    assert info.agent_version == "colony/0.1.0"
    assert info.protocol_version == identify.PROTOCOL_VERSION
