"""The transport's address book (overlay/runtime/net/addr_book.py) in hand-set time:
hearsay expires as in go-libp2p's peerstore, first-hand addresses do not, nothing
expires while the peer is connected, and hearsay never pushes first-hand out."""

from __future__ import annotations

import pytest

from overlay.core.crypto import KeyPair
from overlay.runtime.net.addr_book import AddrBook

P, Q = (KeyPair(bytes([i]) * 32).peer_id for i in (1, 2))
TTL = 1800.0


def book(**kw: int) -> AddrBook:
    return AddrBook(max_peers=kw.get("max_peers", 8), max_per_peer=kw.get("max_per_peer", 4),
                    hearsay_ttl_s=TTL)  # fmt: skip


def test_hearsay_expires_after_its_ttl_and_first_hand_does_not() -> None:
    b = book()
    assert b.add(P, ["/ip4/10.0.0.1/tcp/1"], 0.0, hearsay=False)
    assert b.add(P, ["/ip4/10.0.0.9/tcp/9"], 100.0, hearsay=True)
    assert b.addrs(P, 100.0 + TTL - 1) == ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.9/tcp/9"]
    assert b.addrs(P, 100.0 + TTL) == ["/ip4/10.0.0.1/tcp/1"]
    assert b.expired == 1
    assert b.addrs(P, 1e9) == ["/ip4/10.0.0.1/tcp/1"]


def test_a_peer_known_only_from_hearsay_is_forgotten_address_by_address() -> None:
    b = book()
    b.add(Q, ["/ip4/10.0.0.2/tcp/2"], 0.0, hearsay=True)
    b.add(Q, ["/ip4/10.0.0.3/tcp/3"], 600.0, hearsay=True)
    assert b.addrs(Q, TTL) == ["/ip4/10.0.0.3/tcp/3"]
    assert b.addrs(Q, 600.0 + TTL) == []
    # Heard again: renewed, not new (no reason to lift a dial back-off).
    assert b.add(Q, ["/ip4/10.0.0.4/tcp/4"], 0.0 + 3 * TTL, hearsay=True)
    assert not b.add(Q, ["/ip4/10.0.0.4/tcp/4"], 4 * TTL - 10, hearsay=True)
    assert b.addrs(Q, 5 * TTL - 11) == ["/ip4/10.0.0.4/tcp/4"]


def test_nothing_expires_while_connected_and_hearsay_lives_a_ttl_after() -> None:
    b = book()
    b.add(P, ["/ip4/10.0.0.9/tcp/9"], 0.0, hearsay=True)
    b.connected(P)
    assert b.addrs(P, 10 * TTL) == ["/ip4/10.0.0.9/tcp/9"]
    b.disconnected(P, 10 * TTL)
    assert b.addrs(P, 11 * TTL - 1) == ["/ip4/10.0.0.9/tcp/9"]
    assert b.addrs(P, 11 * TTL) == []
    b.disconnected(P, 12 * TTL)  # not connected: nothing to do


def test_first_hand_goes_first_and_hearsay_is_trimmed_first() -> None:
    b = book(max_per_peer=3)
    b.add(P, ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2"], 0.0, hearsay=False)
    b.add(P, ["/ip4/6.6.6.1/tcp/1", "/ip4/6.6.6.2/tcp/2"], 0.0, hearsay=True)
    assert b.addrs(P, 1.0) == ["/ip4/10.0.0.2/tcp/2", "/ip4/10.0.0.1/tcp/1", "/ip4/6.6.6.1/tcp/1"]
    # A first-hand word on a hearsay address makes it first-hand (and first).
    b.add(P, ["/ip4/6.6.6.1/tcp/1"], 5.0, hearsay=False)
    assert b.addrs(P, 2 * TTL)[0] == "/ip4/6.6.6.1/tcp/1"
    assert len(b.addrs(P, 2 * TTL)) == 3


def test_the_oldest_peer_is_forgotten_beyond_max_peers() -> None:
    b = book(max_peers=2)
    peers = [KeyPair(bytes([i]) * 32).peer_id for i in range(10, 13)]
    for i, p in enumerate(peers):
        b.add(p, [f"/ip4/10.0.1.{i}/tcp/1"], 0.0, hearsay=False)
    assert len(b) == 2 and b.addrs(peers[0], 0.0) == []


def test_a_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AddrBook(max_peers=1, max_per_peer=1, hearsay_ttl_s=0)
