"""services/dht_client.DhtClient on virtual time, with the real driver and a small core."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
import trio
import trio.testing

from dht.api import ClosestPeers, FindNode, LookupDone, RequestFailed
from dht.wire import ConnectionType, DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, PeerUnreachable, Received, Send, SetTimer, TimerFired
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.p2p import multiaddr
from overlay.runtime.driver import Driver
from overlay.runtime.net.transport import TransportError
from overlay.runtime.net.transport_types import PeerInfo as IdentifyInfo
from overlay.runtime.services import dht_client
from overlay.runtime.services.dht_client import DhtClient

A = KeyPair(b"\x01" * 32).peer_id
PROTO = "/colony/kad/1.0.0"


class SlowKad:
    """Ends a FindNode lookup `lookup_s` later (never when the key is b"lost");
    answers inbound FIND_NODE requests at once, never GET_VALUE ones."""

    def __init__(self, lookup_s: float = 2.0) -> None:
        self.lookup_s = lookup_s
        self.inputs: list[Any] = []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.inputs.append(inp)
        if isinstance(inp, FindNode) and inp.key != b"lost":
            timer: Hashable = ("lookup", inp.request_id)
            return [SetTimer(timer, now + self.lookup_s)]
        if isinstance(inp, TimerFired):
            rid = inp.timer[1]  # type: ignore[index]
            return [Emit(LookupDone(rid, ClosestPeers((A,)), hops=2, queried=3))]
        if isinstance(inp, Received) and isinstance(inp.msg, DhtRequest):
            if inp.msg.msg.type == MessageType.FIND_NODE:
                reply = KadMessage(MessageType.FIND_NODE, key=b"answer")
                return [Send(inp.peer, DhtResponse(inp.msg.rid, reply))]
        return []


class Net:
    """Records posts; `request` answers with `reply`, or fails when it is None."""

    def __init__(self, reply: bytes | None) -> None:
        self.posts: list[tuple[Any, str, Any]] = []
        self.reply = reply

    def post(self, peer: Any, protocol: str, obj: Any) -> bool:
        self.posts.append((peer, protocol, obj))
        return True

    async def request(self, peer: Any, protocol: str, obj: Any, timeout: float = 0) -> Any:
        await trio.sleep(0.5)
        if self.reply is None:
            raise TransportError("dial_failed: nobody there")
        return self.reply


def run(test: Any, core: SlowKad, net: Net, **kw: Any) -> None:
    async def main() -> None:
        async with trio.open_nursery() as n:
            client: DhtClient

            def send(peer: Any, msg: Any) -> None:
                client.answer(msg)

            driver = Driver(core, send=send, emit=lambda ev: client.on_event(ev))
            client = DhtClient(driver, net, n.start_soon,  # type: ignore[arg-type]
                               protocol=PROTO, rpc_timeout_s=5.0, **kw)
            await n.start(driver.run)
            await test(client, driver)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_call_returns_the_event_that_completes_its_request_id() -> None:
    async def test(client: DhtClient, driver: Driver) -> None:
        t0 = trio.current_time()
        first, second = await _both(client.call(lambda rid: FindNode(rid, b"k1")),
                                    client.call(lambda rid: FindNode(rid, b"k2")))
        assert trio.current_time() - t0 == pytest.approx(2.0)
        assert {first.request_id, second.request_id} == {1, 2}  # each its own
        assert first.result == ClosestPeers((A,)) and first.hops == 2
        assert client.pending == 0

    run(test, SlowKad(), Net(None))


def test_call_times_out_with_a_colony_error_and_forgets_its_waiter() -> None:
    async def test(client: DhtClient, driver: Driver) -> None:
        t0 = trio.current_time()
        with pytest.raises(ColonyError, match="timed out after 7 s"):
            await client.call(lambda rid: FindNode(rid, b"lost"), timeout_s=7.0)
        assert trio.current_time() - t0 == pytest.approx(7.0)
        assert client.pending == 0

    run(test, SlowKad(), Net(None))


def test_serve_answers_with_the_cores_reply_or_nothing_after_the_limit() -> None:
    core = SlowKad()

    async def test(client: DhtClient, driver: Driver) -> None:
        raw = await client.serve(A, KadMessage(MessageType.FIND_NODE, key=b"x").to_wire())
        assert raw is not None and KadMessage.from_wire(raw).key == b"answer"
        t0 = trio.current_time()
        assert await client.serve(A, KadMessage(MessageType.GET_VALUE, key=b"x").to_wire()) is None
        assert trio.current_time() - t0 == pytest.approx(dht_client.KAD_SERVE_TIMEOUT_S)
        # ADD_PROVIDER has no answer: nothing is awaited.
        t0 = trio.current_time()
        add = KadMessage(MessageType.ADD_PROVIDER, key=b"x")
        assert await client.serve(A, add.to_wire()) is None
        assert trio.current_time() == t0
        # Inbound requests and commands share one id sequence: no collision in the core.
        done = await client.call(lambda rid: FindNode(rid, b"k"))
        rids = [i.msg.rid for i in core.inputs if isinstance(i, Received)]
        assert rids == [1, 2, 3] and done.request_id == 4
        assert client.pending == 0

    run(test, core, Net(None))


def test_outbound_requests_post_or_ask_and_a_failure_fails_that_request_only() -> None:
    core = SlowKad()
    net = Net(None)

    async def test(client: DhtClient, driver: Driver) -> None:
        add = KadMessage(MessageType.ADD_PROVIDER, key=b"k")
        client.send(A, DhtRequest(7, add))
        assert net.posts == [(A, PROTO, add.to_wire())]
        client.send(A, DhtRequest(8, KadMessage(MessageType.FIND_NODE, key=b"k")))
        await trio.sleep(1.0)
        # That RPC fails; the peer's other protocols are not told anything (a DHT
        # client refusing kad says nothing about its Bitswap or gossip).
        assert RequestFailed(A, 8) in core.inputs
        assert PeerUnreachable(A) not in core.inputs
        net.reply = KadMessage(MessageType.FIND_NODE, key=b"back").to_wire()
        client.send(A, DhtRequest(9, KadMessage(MessageType.FIND_NODE, key=b"k")))
        await trio.sleep(1.0)
        assert Received(A, DhtResponse(9, KadMessage(MessageType.FIND_NODE, key=b"back"))) in (
            core.inputs)

    run(test, core, net)


async def _both(a: Any, b: Any) -> tuple[Any, Any]:
    out: list[Any] = [None, None]

    async def one(i: int, aw: Any) -> None:
        out[i] = await aw

    async with trio.open_nursery() as n:
        n.start_soon(one, 0, a)
        n.start_soon(one, 1, b)
    return out[0], out[1]


class FullNet(Net):
    """A peer's send queue that refuses the first `full` posts (frames dropped)."""

    def __init__(self, full: int) -> None:
        super().__init__(None)
        self.full = full

    def post(self, peer: Any, protocol: str, obj: Any) -> bool:
        if self.full:
            self.full -= 1
            return False
        return super().post(peer, protocol, obj)


def test_an_add_provider_dropped_at_a_full_queue_is_posted_again() -> None:
    add = DhtRequest(7, KadMessage(MessageType.ADD_PROVIDER, key=b"block"))

    async def test(client: DhtClient, driver: Driver) -> None:
        client.send(A, add)
        assert net.posts == []  # dropped: the queue was full
        await trio.sleep(1.0)  # reposted after 0.25 s (refused), then 0.5 s (taken)
        assert [p[2] for p in net.posts] == [add.msg.to_wire()]
        assert client.announces_lost == 0
        never = FullNet(100)
        client._net = never  # type: ignore[assignment]
        client.send(A, add)
        await trio.sleep(sum(dht_client.REPOST_DELAYS_S) + 1)
        assert never.posts == [] and client.announces_lost == 1

    net = FullNet(2)
    run(test, SlowKad(), net)


B = KeyPair(b"\x02" * 32).peer_id
LO, PUB = "/ip4/127.0.0.1/tcp/4001", "/ip4/8.8.8.8/tcp/4001"


class NamingKad(SlowKad):
    """Answers FIND_NODE naming B as a closer peer, without addresses (as the core does
    in the daemon: its table keeps none)."""

    def handle(self, inp: Any, now: float) -> list[Effect]:
        if isinstance(inp, Received) and isinstance(inp.msg, DhtRequest):
            self.inputs.append(inp)
            reply = KadMessage(MessageType.FIND_NODE, closer_peers=(PeerInfo(B),))
            return [Send(inp.peer, DhtResponse(inp.msg.rid, reply))]
        return super().handle(inp, now)


class BookNet(Net):
    """The address book knows B on loopback and on a public address."""

    def known_addrs(self, peer: Any) -> list[str]:
        return [LO, PUB] if peer == B else []

    def is_connected(self, peer: PeerId) -> bool:
        return peer == B


def test_answers_name_closer_peers_with_the_address_book_scoped_to_the_requester() -> None:
    async def test(client: DhtClient, driver: Driver) -> None:
        ask = KadMessage(MessageType.FIND_NODE, key=b"x").to_wire()
        raw = await client.serve(A, ask)
        assert raw is not None
        (b,) = KadMessage.from_wire(raw).closer_peers
        # A asks from a public address (remote_ip below): B's loopback one stays here.
        assert b == PeerInfo(B, (multiaddr.to_bytes(PUB),), ConnectionType.CONNECTED)
        assert client.addr_stats.attached == 1

    run(test, NamingKad(), BookNet(None), remote_ip=lambda p: "8.8.8.8")


def test_an_answers_addresses_are_cleaned_before_the_core_sees_them() -> None:
    core = SlowKad()
    junk = (multiaddr.to_bytes(f"{PUB}/p2p/{A}"), multiaddr.to_bytes(LO), b"\xff")
    answer = KadMessage(MessageType.FIND_NODE, closer_peers=(
        PeerInfo(B, (*junk, multiaddr.to_bytes(f"{PUB}/p2p/{B}"))),))
    net = Net(answer.to_wire())

    async def test(client: DhtClient, driver: Driver) -> None:
        client.send(A, DhtRequest(3, KadMessage(MessageType.FIND_NODE, key=b"k")))
        await trio.sleep(1.0)
        got = [i.msg.msg for i in core.inputs if isinstance(i, Received)]
        assert got == [KadMessage(MessageType.FIND_NODE, closer_peers=(
            PeerInfo(B, (multiaddr.to_bytes(PUB),)),))]
        assert client.addr_stats.dropped == 3 and client.addr_stats.taken == 1

    run(test, core, net)  # remote address unknown: the responder counts as public


class Identified:
    """Transport.identify: A announces a wildcard, a loopback and a public address."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def __call__(self, peer: Any, timeout: float) -> IdentifyInfo:
        self.asked.append(peer)
        await trio.sleep(0.1)
        return IdentifyInfo(peer, (), None, ("/ip4/0.0.0.0/tcp/1", LO, PUB))


class LearningNet(BookNet):
    def __init__(self) -> None:
        super().__init__(None)
        self.learned: dict[Any, list[str]] = {}

    def add_addrs(self, peer: Any, addrs: Any, *, hearsay: bool = False) -> None:
        self.learned.setdefault(peer, []).extend(addrs)

    def known_addrs(self, peer: Any) -> list[str]:
        return self.learned.get(peer, []) or super().known_addrs(peer)


def test_a_requester_we_know_no_address_for_is_asked_once_for_its_own() -> None:
    ident, net = Identified(), LearningNet()

    async def test(client: DhtClient, driver: Driver) -> None:
        ask = KadMessage(MessageType.FIND_NODE, key=b"x").to_wire()
        await client.serve(A, ask)
        await trio.sleep(1.0)
        # Seen from a public address: its public address only (never the wildcard).
        assert net.learned == {A: [PUB]} and ident.asked == [A]
        await client.serve(A, ask)  # known now: not asked again
        await client.serve(B, ask)  # B is in the address book: not asked
        await trio.sleep(1.0)
        assert ident.asked == [A]
        assert client.addr_stats.identify_learned == 1

    run(test, NamingKad(), net, remote_ip=lambda p: "8.8.8.8", identify=ident)


def test_a_failed_ask_costs_only_itself_and_is_not_repeated_at_once() -> None:
    asked: list[Any] = []

    async def refuse(peer: Any, timeout: float) -> IdentifyInfo:
        asked.append(peer)
        raise TransportError("identify of A failed: stream reset")

    async def test(client: DhtClient, driver: Driver) -> None:
        ask = KadMessage(MessageType.FIND_NODE, key=b"x").to_wire()
        for _ in range(3):
            assert await client.serve(A, ask) is not None  # answered all the same
        await trio.sleep(1.0)
        assert asked == [A] and client.addr_stats.identify_failed == 1
        await trio.sleep(dht_client.IDENTIFY_RETRY_S)
        await client.serve(A, ask)
        await trio.sleep(1.0)
        assert asked == [A, A]

    run(test, NamingKad(), LearningNet(), identify=refuse)
