"""Hypothesis: whatever addresses a DHT answer carries, `dht_addrs.clean` keeps at most
`MAX_TAKEN_ADDRS` a peer, only dialable ones of the responder's scope or wider, counts
every other one, and what it keeps never makes `Transport.add_addrs` refuse or raise."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.wire import KadMessage, MessageType, PeerInfo
from overlay.core.crypto import KeyPair
from overlay.p2p import multiaddr
from overlay.runtime.net.transport import Transport
from overlay.runtime.services.dht_addrs import (
    MAX_TAKEN_ADDRS,
    AddrStats,
    Scope,
    clean,
    dialable_scope,
)
from overlay.runtime.services.host_ad import str_addrs

PEERS = [KeyPair(bytes([i]) * 32).peer_id for i in range(1, 5)]

ip4 = st.sampled_from(["127.0.0.1", "10.0.0.7", "192.168.1.5", "8.8.8.8", "0.0.0.0",
                       "224.0.0.1", "100.64.1.1", "1.2.3.4"])
port = st.integers(min_value=0, max_value=65535)
tail = st.sampled_from(["", "/ws", "/p2p/{me}", "/p2p/{other}", "/p2p/{other}/p2p-circuit",
                        "/p2p/{other}/p2p-circuit/p2p/{me}"])


@st.composite
def addrs_of(draw: st.DrawFn, me: int) -> bytes:
    """A binary multiaddr for PEERS[me]: well-formed of many kinds, or random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=40))
    host, p = draw(ip4), draw(port)
    base = (f"/ip4/{host}/udp/{p}/quic-v1" if draw(st.booleans())
            else f"/ip4/{host}/tcp/{p}")
    other = PEERS[(me + 1) % len(PEERS)]
    return multiaddr.to_bytes(base + draw(tail).format(me=PEERS[me], other=other))


@st.composite
def answers(draw: st.DrawFn) -> KadMessage:
    infos = tuple(PeerInfo(PEERS[i], tuple(draw(st.lists(addrs_of(i), max_size=32))))
                  for i in range(len(PEERS)))
    return KadMessage(MessageType.GET_PROVIDERS, closer_peers=infos[:2],
                      provider_peers=infos[2:])


@settings(max_examples=200, deadline=None)
@given(answers(), st.sampled_from(list(Scope)))
def test_clean_bounds_and_counts_every_address(msg: KadMessage, responder: Scope) -> None:
    msg = KadMessage.from_wire(msg.to_wire())  # as it arrives
    stats = AddrStats()
    out = clean(msg, responder, stats)
    total = sum(len(p.addrs) for p in (*msg.closer_peers, *msg.provider_peers))
    kept = [*out.closer_peers, *out.provider_peers]
    assert stats.taken == sum(len(p.addrs) for p in kept)
    assert stats.taken + stats.dropped + stats.capped <= total  # the rest: duplicates
    t = Transport(KeyPair(b"\x09" * 32))

    async def into_the_book() -> None:  # the address book reads trio's clock (TTLs)
        for p in kept:
            assert len(p.addrs) <= MAX_TAKEN_ADDRS and len(set(p.addrs)) == len(p.addrs)
            texts = str_addrs(p.addrs)
            assert len(texts) == len(p.addrs)
            for a in texts:
                scope = dialable_scope(a)
                assert scope is not None and scope >= responder
                assert "/p2p" not in a
            t.add_addrs(p.peer, texts)
            assert t.known_addrs(p.peer) == list(reversed(texts))  # newest first

    trio.run(into_the_book)
    assert t.stats.addrs_refused == 0
