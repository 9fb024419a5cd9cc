"""services/dht_addrs: the addresses the daemon puts in kad-dht answers and takes from
them (scope, dialability, caps), through the real wire codec."""

from __future__ import annotations

import random

import pytest

from dht.api import Bootstrap, PeerAddressesLearned
from dht.core import Kademlia
from dht.wire import (
    MAX_ADDRS_PER_PEER,
    MAX_PEERS_PER_LIST,
    ConnectionType,
    DhtRequest,
    DhtResponse,
    KadMessage,
    MessageType,
    PeerInfo,
)
from overlay.core.crypto import KeyPair
from overlay.core.effects import Emit, Received, Send
from overlay.p2p import multiaddr
from overlay.runtime.net.transport import Transport
from overlay.runtime.services.dht_addrs import (
    MAX_ANSWER_ADDRS,
    MAX_TAKEN_ADDRS,
    AddrStats,
    Scope,
    answer_addrs,
    attach,
    clean,
    dialable_scope,
    host_scope,
    peer_scope,
)

ME, A, B, C = (KeyPair(bytes([i]) * 32).peer_id for i in (1, 2, 3, 4))

LO = "/ip4/127.0.0.1/tcp/4001"
LAN = "/ip4/192.168.1.5/tcp/4001"
PUB = "/ip4/8.8.8.8/tcp/4001"
PUB6 = "/ip6/2001:4860::8888/tcp/4001"
QUIC = "/ip4/8.8.4.4/udp/4001/quic-v1"


@pytest.mark.parametrize(("addr", "scope"), [
    (LO, Scope.LOOPBACK),
    ("/ip6/::1/tcp/1", Scope.LOOPBACK),
    ("/dns4/localhost/tcp/1", Scope.LOOPBACK),
    (LAN, Scope.PRIVATE),
    ("/ip4/10.1.2.3/tcp/1", Scope.PRIVATE),
    ("/ip4/100.64.0.1/tcp/1", Scope.PRIVATE),  # carrier-grade NAT: not global
    ("/ip6/fe80::1/tcp/1", Scope.PRIVATE),
    (PUB, Scope.PUBLIC),
    (PUB6, Scope.PUBLIC),
    ("/dns4/example.org/tcp/443", Scope.PUBLIC),
    (QUIC, Scope.PUBLIC),
    ("/ip4/0.0.0.0/tcp/4001", None),  # a wildcard listen address
    ("/ip4/224.0.0.1/tcp/1", None),
    ("/ip4/8.8.8.8/tcp/0", None),
    ("/ip4/8.8.8.8/tcp/1/ws", None),  # not a transport we dial
    ("/ip6/2001:4860::8888/udp/1/quic-v1", None),  # QUIC dials IPv4 only
    (f"/ip4/8.8.8.8/tcp/1/p2p/{A}/p2p-circuit", None),
    ("not an address", None),
])
def test_dialable_scope(addr: str, scope: Scope | None) -> None:
    assert dialable_scope(addr) == scope


def test_requester_scope_is_public_when_its_address_is_unknown() -> None:
    assert peer_scope(None) == Scope.PUBLIC
    assert peer_scope("127.0.0.1") == Scope.LOOPBACK
    assert peer_scope("::ffff:10.0.0.1") == Scope.PRIVATE
    assert host_scope("8.8.8.8") == Scope.PUBLIC


def test_an_answer_gives_a_requester_the_addresses_of_its_scope_and_wider() -> None:
    book = [LO, LAN, PUB]
    b = multiaddr.to_bytes
    assert answer_addrs(book, Scope.LOOPBACK) == (b(LO), b(LAN), b(PUB))
    assert answer_addrs(book, Scope.PRIVATE) == (b(LAN), b(PUB))
    assert answer_addrs(book, Scope.PUBLIC) == (b(PUB),)
    many = [f"/ip4/8.8.8.{i}/tcp/1" for i in range(1, 20)]
    assert answer_addrs(many, Scope.PUBLIC) == tuple(b(a) for a in many[:MAX_ANSWER_ADDRS])


def test_attach_fills_peers_named_without_addresses_and_survives_the_wire() -> None:
    book = {A: [PUB, "/ip4/8.8.8.8/tcp/1/ws", LAN], B: []}
    own = (multiaddr.to_bytes("/ip4/9.9.9.9/tcp/1"),)
    msg = KadMessage(MessageType.GET_PROVIDERS, b"k",
                     closer_peers=(PeerInfo(A), PeerInfo(B)),
                     provider_peers=(PeerInfo(C, own),))
    stats = AddrStats()
    out = attach(msg, Scope.PUBLIC, lambda p: book.get(p, []), lambda p: p == A, stats)
    back = KadMessage.from_wire(out.to_wire())
    assert back.closer_peers == (
        PeerInfo(A, (multiaddr.to_bytes(PUB),), ConnectionType.CONNECTED),
        PeerInfo(B, (), ConnectionType.NOT_CONNECTED),  # nothing known: named bare
    )
    assert back.provider_peers == (PeerInfo(C, own),)  # its own record's addresses
    assert stats.attached == 1
    # Nothing to add: the very same message comes back.
    bare = KadMessage(MessageType.PING)
    assert attach(bare, Scope.PUBLIC, lambda p: [], lambda p: False, stats) is bare


def test_clean_caps_and_counts_a_hostile_answer_and_never_raises() -> None:
    other = str(B)
    junk = [
        f"/ip4/8.8.8.8/tcp/9/p2p/{other}",  # another peer's address
        f"/ip4/8.8.8.8/tcp/9/p2p/{other}/p2p-circuit",  # a relay circuit
        "/ip4/8.8.8.8/tcp/9/ws",  # not dialable by us
        LO, LAN,  # out of a public responder's scope
    ]
    good = [f"/ip4/8.8.{i}.1/tcp/4001" for i in range(MAX_ADDRS_PER_PEER - len(junk) - 2)]
    own = f"{good[0]}/p2p/{A}"  # ours with /p2p/<A>: the same address once stripped
    raw = [multiaddr.to_bytes(a) for a in [*junk, *good, own]] + [b"\xff\xff\xff"]
    assert len(raw) == MAX_ADDRS_PER_PEER  # the wire decoder's own limit
    infos = tuple(PeerInfo(A if i == 0 else KeyPair(bytes([i, 9]) * 16).peer_id, tuple(raw))
                  for i in range(MAX_PEERS_PER_LIST))
    wire = KadMessage(MessageType.FIND_NODE, b"k", closer_peers=infos).to_wire()
    stats = AddrStats()
    out = clean(KadMessage.from_wire(wire), Scope.PUBLIC, stats)
    want = tuple(multiaddr.to_bytes(a) for a in good[:MAX_TAKEN_ADDRS])
    assert all(p.addrs == want for p in out.closer_peers)
    n = MAX_PEERS_PER_LIST
    assert stats.taken == n * MAX_TAKEN_ADDRS
    # The junk and the unparsable bytes; `own` too, in the entries of every peer but A.
    assert stats.dropped == n * (len(junk) + 1) + (n - 1)
    assert stats.capped == n * (len(good) - MAX_TAKEN_ADDRS)
    # From a responder on loopback, its loopback and LAN addresses are taken too.
    near = clean(KadMessage(MessageType.FIND_NODE, closer_peers=(PeerInfo(A, tuple(raw)),)),
                 Scope.LOOPBACK, AddrStats())
    assert near.closer_peers[0].addrs[:2] == (multiaddr.to_bytes(LO), multiaddr.to_bytes(LAN))


def test_what_clean_leaves_is_what_the_core_reports_for_the_address_book() -> None:
    """The core's lookup emits PeerAddressesLearned for a closer peer's addresses before
    it sends that peer a query: the order the driver carries them out in."""
    kad = Kademlia(ME, rng=random.Random(1))
    out = kad.handle(Bootstrap((PeerInfo(A, (multiaddr.to_bytes(PUB),)),), 1), 0.0)
    query = next(e for e in out if isinstance(e, Send))
    assert isinstance(query.msg, DhtRequest)
    answer = KadMessage(MessageType.FIND_NODE, closer_peers=(
        PeerInfo(B, tuple(multiaddr.to_bytes(a) for a in (PUB6, LO, f"{QUIC}/p2p/{C}"))),))
    answer = clean(answer, Scope.PUBLIC, AddrStats())
    effects = kad.handle(Received(A, DhtResponse(query.msg.rid, answer)), 1.0)
    learned = [i for i, e in enumerate(effects) if isinstance(e, Emit)
               and e.event == PeerAddressesLearned(B, (multiaddr.to_bytes(PUB6),))]
    to_b = [i for i, e in enumerate(effects) if isinstance(e, Send) and e.peer == B]
    assert learned and to_b and learned[0] < to_b[0]


def test_transport_skips_and_counts_addresses_it_cannot_keep() -> None:
    import trio

    async def main() -> None:  # the address book takes trio's clock (addr_book.py)
        t = Transport(KeyPair(b"\x05" * 32))
        t.add_addrs(A, [f"{PUB}/p2p/{B}", f"{PUB}/p2p/{B}/p2p-circuit", f"{LAN}/p2p/{A}",
                        PUB])  # fmt: skip
        assert t.known_addrs(A) == [PUB, LAN]
        assert t.stats.addrs_refused == 2
        # The same addresses again do not lift a back-off; a new one does.
        t._backoff[A] = (1e9, 1.0)
        t.add_addrs(A, [PUB, LAN])
        assert A in t._backoff
        t.add_addrs(A, [PUB6])
        assert A not in t._backoff

    trio.run(main)
