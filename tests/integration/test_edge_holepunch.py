"""DCUtR on 127.0.0.1: a relayed connection upgraded to a direct TCP connection,
and (TCP punching off) to a direct QUIC connection.

Three real transports with the edge stack as the daemon composes it (edge_stack.py):
R relays, B holds a reservation at R, A dials B with `dial_order = ["holepunch"]`.
B (the circuit's inbound side) runs `/libp2p/dcutr`; both dial from their listen
ports. On loopback there is no NAT, so one SYN reaches the other's listener: that
exercises the rule that B stays the handshake's client however the TCP connection
formed. Asserted: the path becomes direct ("holepunch") on both sides, new streams
use the direct connection, the circuit is closed after the grace period, the
transport keeps working, and hostile DCUtR input is refused with counted reasons.
The NAT cases (cone ↔ cone, symmetric ↔ cone) are in test_edge_holepunch_nat.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
from edge_stack import ECHO, edge_node

from overlay.core.crypto import KeyPair
from overlay.core.multiformats import encode_varint
from overlay.p2p import dcutr, pb
from overlay.p2p.connection import Connection
from overlay.p2p.host import Host
from overlay.p2p.quic import QuicConn, QuicEndpoint
from overlay.runtime.net.transport import ListenError, Transport

pytestmark = pytest.mark.slow

RELAY_ON = {"enabled": True, "max_rate": 0}
TCP = ("/ip4/127.0.0.1/tcp/0",)
BOTH = ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")


@asynccontextmanager
async def relayed_trio(*, edge_a: dict[str, Any], edge_b: dict[str, Any],
                       listen_a: tuple[str, ...] = TCP, listen_b: tuple[str, ...] = TCP,
                       ) -> AsyncIterator[tuple[Any, Any, Any]]:
    """R relays, A and B connect to it and B reserves there: (r, a, b), before A
    dials B (each test's punch starts with `a.dialer.connect(b.peer)`)."""
    ka, kr, kb = (KeyPair.generate() for _ in range(3))
    members = {k.peer_id for k in (ka, kr, kb)}
    async with (
        edge_node(members, kr, relay=RELAY_ON) as r,
        edge_node(members, ka, listen=listen_a, edge=edge_a) as a,
        edge_node(members, kb, listen=listen_b, edge=edge_b) as b,
    ):
        for n in (a, b):
            await n.t.connect(r.t.addrs[0])
        await b.dialer.relay.reserve(r.peer)
        yield r, a, b


async def wait_for(pred: object, what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


def test_relayed_connection_is_upgraded_to_direct_tcp() -> None:
    trio.run(_upgrade)


async def _upgrade() -> None:
    edge = {"holepunch_grace_s": 0.5}
    with trio.fail_after(60):
        async with relayed_trio(edge_a={**edge, "dial_order": ["holepunch"]},
                                edge_b=edge) as (r, a, b):
            path = await a.dialer.connect(b.peer)
            assert path.kind == "relayed" and path.detail == "holepunch pending"
            ha, hb = a.t.native_host(), b.t.native_host()
            assert ha is not None and hb is not None
            await wait_for(lambda: ha.direct_connection(b.peer) is not None, "a direct conn")
            await wait_for(lambda: a.dialer.status()["peers"][str(b.peer)]["kind"] == "direct",
                           "a's path to turn direct")
            await wait_for(lambda: b.dialer.status()["peers"][str(a.peer)]["kind"] == "direct",
                           "b's path to turn direct")
            sa, sb = a.dialer.status(), b.dialer.status()
            assert sa["peers"][str(b.peer)]["detail"].startswith("holepunch (responder")
            assert sb["peers"][str(a.peer)]["detail"].startswith("holepunch (initiator")
            hp = sb["holepunch"]
            assert hp is not None and hp["successes"] == 1 and hp["attempts"] == 1
            assert hp["peers"][str(a.peer)]["ok"] and hp["peers"][str(a.peer)]["rtt_ms"] > 0
            # New streams go over the direct connection; the circuit closes after the grace.
            assert await a.t.request(b.peer, ECHO, {"n": 1}) == ["echo", {"n": 1}]

            def circuits(h: Host) -> int:
                return sum(1 for c in h.connections(b.peer if h is ha else a.peer)
                           if isinstance(c, Connection)
                           and not isinstance(c.stream, trio.SocketStream) and not c.closed)

            await wait_for(lambda: circuits(ha) == 0 and circuits(hb) == 0, "circuit closed")
            await wait_for(lambda: not r.dialer.relay.book.circuits, "relay to see it end")
            direct = ha.direct_connection(b.peer)
            assert direct is not None and direct.remote_addr is not None
            # The punched connection leaves from B's listen port (SO_REUSEPORT).
            assert direct.remote_addr.endswith(f"/tcp/{hb.tcp_listen[0][1]}")
            for i in range(20):  # long-lived streams were reopened on the direct conn
                assert await a.t.request(b.peer, ECHO, i) == ["echo", i]
                assert await b.t.request(a.peer, ECHO, b"z" * 50_000) == ["echo", b"z" * 50_000]
            assert a.t.is_connected(b.peer) and b.t.is_connected(a.peer)


def test_relayed_connection_is_upgraded_to_direct_quic() -> None:
    """TCP punching off (`holepunch_transports = ["quic"]`), both listen on UDP too:
    CONNECT carries our `/quic-v1` addresses (observed ip : listening UDP port), A
    dials B's over QUIC from its listening endpoint while B sends punch packets; the
    path becomes direct over QUIC and the circuit is retired."""
    trio.run(_upgrade_quic)


async def _upgrade_quic() -> None:
    edge = {"holepunch_grace_s": 0.5, "holepunch_transports": ["quic"]}
    with trio.fail_after(60):
        async with relayed_trio(edge_a={**edge, "dial_order": ["holepunch"]}, edge_b=edge,
                                listen_a=BOTH, listen_b=BOTH) as (r, a, b):
            await a.dialer.connect(b.peer)
            ha, hb = a.t.native_host(), b.t.native_host()
            assert ha is not None and hb is not None and hb.quic_listen is not None
            await wait_for(lambda: b.dialer.status()["peers"][str(a.peer)]["kind"] == "direct"
                           and a.dialer.status()["peers"][str(b.peer)]["kind"] == "direct",
                           "both paths to turn direct")
            assert ha.direct_connection(b.peer) is None  # no TCP punch: it is off
            direct = ha.punched_connection(b.peer)
            assert isinstance(direct, QuicConn) and direct.remote_addr is not None
            assert direct.remote_addr.endswith(f"/udp/{hb.quic_listen[1]}/quic-v1")
            sa, sb = a.dialer.status(), b.dialer.status()
            assert sa["peers"][str(b.peer)]["detail"].startswith("holepunch (responder, quic")
            assert sb["peers"][str(a.peer)]["detail"].startswith("holepunch (initiator, quic")
            hp = sb["holepunch"]
            assert hp is not None and hp["by_transport"] == {"quic": 1}, hp
            assert hp["peers"][str(a.peer)]["transport"] == "quic"
            await wait_for(lambda: not r.dialer.relay.book.circuits, "relay to see it end")
            for i in range(5):  # the transport's streams were reopened over QUIC
                assert await a.t.request(b.peer, ECHO, i) == ["echo", i]
                assert await b.t.request(a.peer, ECHO, b"q" * 50_000) == ["echo", b"q" * 50_000]
            assert all(isinstance(c, QuicConn) for c in ha.connections(b.peer) if not c.closed)
            # B's punch packets reached A's endpoint and were dropped there, counted.
            assert hb._quic is not None and hb._quic.drops["punch_packets_sent"] >= 1


def test_a_quic_retry_dials_from_a_fresh_port() -> None:
    """Attempt 1 fails (B's endpoint takes no new handshake: A's Initials are
    dropped, as a spoilt NAT entry would). Each side's retry CONNECT names a fresh
    UDP port and punches from it, so the punch succeeds on attempt 2 between ports
    other than the listeners (issue #21: a lost UDP race spoils the listeners'
    NAT state)."""
    trio.run(_fresh_port_retry)


async def _fresh_port_retry() -> None:
    edge = {"holepunch_grace_s": 0.5, "holepunch_transports": ["quic"]}
    with trio.fail_after(60):
        async with relayed_trio(edge_a={**edge, "dial_order": ["holepunch"]}, edge_b=edge,
                                listen_a=BOTH, listen_b=BOTH) as (_, a, b):
            ha, hb = a.t.native_host(), b.t.native_host()
            assert ha is not None and hb is not None
            assert ha._quic is not None and hb._quic is not None and ha.quic_listen
            hb._quic.max_pending_handshakes = 0
            await a.dialer.connect(b.peer)
            qa = ha._quic
            await wait_for(lambda: qa.drops["connection_failed"] >= 1, "attempt 1 to fail")
            hb._quic.max_pending_handshakes = 64
            await wait_for(lambda: isinstance(ha.punched_connection(b.peer), QuicConn),
                           "the punched QUIC connection")
            direct = ha.punched_connection(b.peer)
            assert isinstance(direct, QuicConn) and isinstance(direct.endpoint, QuicEndpoint)
            port = direct.endpoint.local_addr[1]
            assert direct.endpoint is not qa and port != ha.quic_listen[1]
            # B's retry punched from a new port too (B adopts a flight after A).
            await wait_for(lambda: hb.punched_connection(a.peer) is not None, "B's side")
            theirs = hb.punched_connection(a.peer)
            assert isinstance(theirs, QuicConn) and theirs.endpoint is not hb._quic
            assert isinstance(theirs.endpoint, QuicEndpoint)
            assert hb.quic_listen and theirs.endpoint.local_addr[1] != hb.quic_listen[1]
            assert hb._quic.drops["too_many_handshakes"] >= 1
            hp = b.dialer.holepunch
            assert hp is not None
            await wait_for(lambda: a.peer in hp.results, "B's record of the punch")
            rec = hp.results[a.peer]
            assert rec.ok and rec.attempts == 2 and rec.transport == "quic", rec
            assert await b.t.request(a.peer, ECHO, 1) == ["echo", 1]


def test_a_failed_punch_is_tried_once_more_after_retry_s() -> None:
    """B punches over QUIC only and A has no QUIC address: every exchange fails
    (no_usable_addrs). B tries once more `holepunch_retry_s` later, and only once."""
    trio.run(_retry)


async def _retry() -> None:
    with trio.fail_after(60):
        async with relayed_trio(edge_a={"dial_order": ["holepunch"]}, listen_b=BOTH,
                                edge_b={"holepunch_transports": ["quic"],
                                        "holepunch_retry_s": 0.5}) as (_, a, b):
            await a.dialer.connect(b.peer)
            hp = b.dialer.holepunch
            assert hp is not None
            await wait_for(lambda: hp.stats.attempts == 2, "the second exchange")
            await trio.sleep(1.5)  # three retry periods: no third exchange
            assert hp.stats.attempts == 2 and hp.stats.failures == {"no_usable_addrs": 2}
            detail = b.dialer.status()["peers"][str(a.peer)]["detail"]
            assert detail.startswith("holepunch failed: no_usable_addrs"), detail
            assert await a.t.request(b.peer, ECHO, 1) == ["echo", 1]  # still relayed


def test_hostile_dcutr_input_is_refused_and_counted() -> None:
    trio.run(_hostile)


async def _hostile() -> None:
    ka, kb = KeyPair.generate(), KeyPair.generate()
    members = {ka.peer_id, kb.peer_id}
    with trio.fail_after(60):
        async with edge_node(members, ka) as a, edge_node(members, kb) as b:
            await b.t.connect(a.t.addrs[0])
            hp = a.dialer.holepunch
            assert hp is not None
            junk = [
                encode_varint(5000) + b"x" * 10,  # length beyond 4 KiB
                encode_varint(3) + b"\xff\xff\xff",  # not protobuf
                # 40 addresses: more than max_addrs
                (lambda body: encode_varint(len(body)) + body)(
                    pb.field_varint(1, 100) + b"".join(pb.field_bytes(2, b"\x04\x7f\x00\x00\x01")
                                                       for _ in range(40))),
            ]
            for i, frame in enumerate(junk):
                s = await b.t.open_stream(a.peer, dcutr.PROTOCOL_ID)
                await s.send_all(frame)
                with trio.move_on_after(5), suppress(trio.BrokenResourceError):
                    while await s.receive_some(100):
                        pass
                await s.aclose()
                await wait_for(lambda i=i: sum(hp.guard.refusals.values()) == i + 1,
                               "the refusal")
            refusals = hp.status()["refusals"]
            assert refusals == {"message_too_large": 1, "malformed": 1, "too_many_addrs": 1}
            # A punch storm: 3 punches per minute per peer (the three above), then
            # every further stream is reset at once with a counted reason.
            for _ in range(10):
                s = await b.t.open_stream(a.peer, dcutr.PROTOCOL_ID)
                await s.send_all(b"")
                with trio.move_on_after(5), suppress(trio.BrokenResourceError):
                    while await s.receive_some(100):
                        pass
            assert hp.status()["refusals"]["rate_limited"] == 10
            assert await b.t.request(a.peer, ECHO, 1) == ["echo", 1]  # the peer still works


def test_reuseport_listeners_still_refuse_a_second_daemon_on_the_port() -> None:
    """The listeners set SO_REUSEPORT (punches dial from their port); a second
    transport on the same port must still fail as before, not share the port."""

    async def main() -> None:
        async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
            port = t.listen_addrs[0].rsplit("/", 1)[1]
            with pytest.raises(ListenError):
                async with Transport.open(KeyPair.generate(), [f"/ip4/127.0.0.1/tcp/{port}"]):
                    pass

    trio.run(main)
