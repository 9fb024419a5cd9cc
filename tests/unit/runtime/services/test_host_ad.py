"""services/host_ad.py: address helpers on our own multiaddr (junk skipped, not raised),
byte-identical to the `multiaddr` package where that is installed."""

import pytest

from overlay.core.ids import PeerId
from overlay.runtime.services.host_ad import bin_addrs, str_addrs

PEER = str(PeerId.from_bytes(bytes.fromhex("0024080112207f") + bytes(31)))
ADDRS = [
    "/ip4/127.0.0.1/tcp/4001",
    "/ip6/::1/tcp/4001",
    "/dns4/example.org/tcp/443/wss",
    "/ip4/10.0.0.1/udp/4001/quic-v1",
    f"/ip4/10.0.0.2/tcp/5/p2p/{PEER}",
]


def test_round_trip_and_junk_skipped() -> None:
    raw = bin_addrs([*ADDRS, "not-an-address", "/ip4/999.0.0.1/tcp/1", "/tcp"])
    assert len(raw) == len(ADDRS)
    assert str_addrs((*raw, b"\xff\xff\xff", b"\x04\x7f")) == ADDRS


def test_same_bytes_as_the_multiaddr_package() -> None:
    multiaddr = pytest.importorskip("multiaddr", reason="the multiaddr package comes with "
                                    "the pylibp2p extra")  # fmt: skip
    assert bin_addrs(ADDRS) == tuple(multiaddr.Multiaddr(a).to_bytes() for a in ADDRS)
