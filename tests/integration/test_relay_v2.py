"""Circuit relay v2 (`/libp2p/circuit/relay/0.2.0/hop|stop`) between our own nodes on
127.0.0.1, with the edge stack as the daemon composes it (edge_stack.py).

R relays; B reserves at R in v2 (its voucher verified); A dials the standard
address `…/p2p/R/p2p-circuit/p2p/B`; the libp2p stack runs over the circuit, and
B, on its inbound side, upgrades it with DCUtR exactly as over our own protocol's
circuits. Across protocols: A asks in ours for B who reserved in v2 (R stops in
v2). Bad input: garbage, oversized and unexpected hop/stop messages, CONNECT to an
unreserved peer or with no peer, a non-member, a reservation flood and the circuit
limit are each answered with the spec's status code and counted by reason; the
nodes keep working. The js-libp2p interop is test_relay_v2_js_interop.py.
"""

from __future__ import annotations

import pytest
import trio
from edge_stack import ECHO, STACKS, edge_node

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.p2p.circuit_v2 import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    HopMessage,
    HopType,
    Peer,
    Status,
    StopMessage,
    StopType,
)
from overlay.runtime.edge.relay import RelayRefused
from overlay.runtime.edge.relay_v2 import RESERVE_PER_WINDOW, read_message
from overlay.runtime.net.transport import Transport

pytestmark = pytest.mark.slow

RELAY_ON = {"enabled": True, "max_rate": 0, "max_circuits": 2}


async def wait_for(pred: object, what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def ask_hop(t: Transport, relay: PeerId, raw: bytes) -> HopMessage:
    s = await t.open_stream(relay, HOP_PROTOCOL)
    await s.send_all(raw)
    with trio.fail_after(15):
        return HopMessage.from_wire(await read_message(s))


def test_v2_circuit_carries_the_stack_and_is_punched() -> None:
    trio.run(_circuit)


async def _circuit() -> None:
    ka, kr, kb = (KeyPair.generate() for _ in range(3))
    members = {k.peer_id for k in (ka, kr, kb)}
    edge = {"holepunch_grace_s": 0.5, "dial_order": ["holepunch"]}
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, relay=RELAY_ON) as r,
            edge_node(members, ka, edge=edge) as a,
            edge_node(members, kb, edge=edge) as b,
        ):
            for n in (a, b):
                await n.t.connect(r.t.addrs[0])
            v2 = b.dialer.relay_v2
            assert v2 is not None
            ttl = await v2.reserve(r.peer)  # the voucher is checked inside
            assert 290 < ttl <= 300 and r.dialer.relay.book.kinds[b.peer] == "v2"
            assert r.peer in b.dialer.relay.reservations
            # A dials the standard relayed address: Transport.connect → the dialer.
            assert await a.t.connect(f"{r.t.addrs[0]}/p2p-circuit/p2p/{b.peer}") == b.peer
            assert a.dialer.paths[b.peer].kind == "relayed"
            assert await a.t.request(b.peer, ECHO, {"n": 1}) == ["echo", {"n": 1}]
            assert len(await a.t.ping(b.peer, count=2)) == 2
            rs = r.dialer.relay.status()["relaying"]
            assert rs["circuits_opened"] == 1
            # B, the inbound side, runs DCUtR over the v2 circuit: the path turns direct.
            ha = a.t.native_host()
            assert ha is not None
            await wait_for(lambda: ha.direct_connection(b.peer) is not None, "a direct conn")
            await wait_for(lambda: b.dialer.status()["peers"][str(a.peer)]["kind"] == "direct",
                           "b's path to turn direct")
            hp = b.dialer.status()["holepunch"]
            assert hp is not None and hp["successes"] == 1
            await wait_for(lambda: not r.dialer.relay.book.circuits, "the circuit retired")
            assert r.dialer.relay.status()["relaying"]["circuits_closed"] == {"eof": 1}
            await a.t.disconnect(b.peer, "test: now through our protocol")
            await wait_for(lambda: not a.t.is_connected(b.peer), "a and b apart")
            # Our protocol to a v2-reserved peer: R stops it in v2.
            stream = await a.dialer.relay.connect(r.peer, b.peer)
            await stream.aclose()
            await wait_for(lambda: not r.dialer.relay.book.circuits, "second circuit ends")
            assert r.dialer.relay.status()["relaying"]["circuits_opened"] == 2


@pytest.mark.parametrize("stack", STACKS)
def test_v2_bad_input_is_refused_and_counted(stack: str) -> None:
    trio.run(_bad_input, stack)


async def _bad_input(stack: str) -> None:
    ka, kr, kb, kc = (KeyPair.generate() for _ in range(4))
    members = {k.peer_id for k in (ka, kr, kb)}  # C is not a member
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, relay={**RELAY_ON, "max_circuits": 1}, stack=stack) as r,
            edge_node(members, ka, edge={"holepunch": False}, stack=stack) as a,
            edge_node(members, kb, edge={"holepunch": False}, stack=stack) as b,
            edge_node(members, kc, stack=stack) as c,
        ):
            for n in (a, b, c):
                await n.t.connect(r.t.addrs[0])
            # CONNECT to a peer with no reservation; CONNECT naming nobody.
            got = await ask_hop(a.t, r.peer, HopMessage(HopType.CONNECT, peer=Peer(b.peer)).frame())
            assert got.status == Status.NO_RESERVATION
            got = await ask_hop(a.t, r.peer, HopMessage(HopType.CONNECT).frame())
            assert got.status == Status.MALFORMED_MESSAGE
            # Garbage, an oversized length prefix, a STATUS where a request belongs.
            for raw, status in (
                (b"\x05\xff\xff\xff\xff\xff", Status.MALFORMED_MESSAGE),
                (encode_varint(5000) + b"x" * 100, Status.MALFORMED_MESSAGE),
                (b"\xff\xff\xff\xff", Status.MALFORMED_MESSAGE),
                (HopMessage(HopType.STATUS, status=Status.OK).frame(), Status.UNEXPECTED_MESSAGE),
            ):
                assert (await ask_hop(a.t, r.peer, raw)).status == status
            # A non-member may not reserve (serve_non_members is off).
            assert c.dialer.relay_v2 is not None
            with pytest.raises(RelayRefused, match="permission_denied"):
                await c.dialer.relay_v2.reserve(r.peer)
            # A reservation flood from one peer: refused past RESERVE_PER_WINDOW a minute.
            assert b.dialer.relay_v2 is not None
            for _ in range(RESERVE_PER_WINDOW):
                await b.dialer.relay_v2.reserve(r.peer)
            with pytest.raises(RelayRefused, match="reservation_refused"):
                await b.dialer.relay_v2.reserve(r.peer)
            # One circuit at a time: the second CONNECT exceeds the resource limit.
            assert a.dialer.relay_v2 is not None
            first = await a.dialer.relay_v2.connect(r.peer, b.peer)
            with pytest.raises(RelayRefused, match="resource_limit_exceeded"):
                await a.dialer.relay_v2.connect(r.peer, b.peer)
            await first.aclose()
            refusals = r.dialer.relay.status()["relaying"]["refusals"]
            assert refusals == {
                "no_reservation": 1, "bad_request": 1, "malformed": 1,
                "message_too_large": 2, "v2_unexpected_message": 1, "not_a_member": 1,
                "v2_reservation_rate": 1, "too_many_circuits": 1,
            }, refusals
            # The end side: a stop from a relay we hold no reservation at, and garbage.
            await c.t.connect(a.t.addrs[0])
            s = await c.t.open_stream(a.peer, STOP_PROTOCOL)
            await s.send_all(StopMessage(StopType.CONNECT, peer=Peer(c.peer)).frame())
            with trio.fail_after(15):
                got_stop = StopMessage.from_wire(await read_message(s))
            assert got_stop.status == Status.PERMISSION_DENIED
            s = await c.t.open_stream(a.peer, STOP_PROTOCOL)
            await s.send_all(b"\x03\x08\x09\x00")
            with trio.fail_after(15):
                got_stop = StopMessage.from_wire(await read_message(s))
            assert got_stop.status == Status.MALFORMED_MESSAGE
            assert a.dialer.relay_v2.status()["stop_refusals"] == {
                "no_reservation": 1, "malformed": 1}
            # Everyone still works.
            assert len(await a.t.ping(r.peer, count=1)) == 1
            assert await b.t.request(r.peer, ECHO, 1) == ["echo", 1]
