"""A relayed connection through a third member on /colony/relay/1.0.0:
reservation, circuit, the libp2p stack end to end over it, and the relay's limits
(refusals with reasons before the splice, termination at the byte limit)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from edge_stack import ECHO, STACKS, edge_node

from overlay.core.crypto import KeyPair
from overlay.runtime.edge.relay import PROTO_RELAY, RelayRefused, read_handshake
from overlay.runtime.net.transport import TransportError

pytestmark = pytest.mark.slow

RELAY_ON = {"enabled": True, "max_circuits": 1, "max_bytes": 2 * 1024 * 1024, "max_rate": 0}


class Tap(trio.abc.Stream):
    """Passes a relay's spliced stream through unchanged, keeping what it read."""

    def __init__(self, inner: Any, seen: bytearray) -> None:
        self.inner, self.seen = inner, seen

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data: bytes = await self.inner.receive_some(max_bytes)
        self.seen += data
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def reset(self) -> None:
        await self.inner.reset()


@pytest.mark.parametrize("stack", STACKS)
def test_relayed_connection_carries_overlay_protocols(stack: str) -> None:
    trio.run(_relayed, stack)


async def _relayed(stack: str) -> None:
    ka, kr, kb, kc = (KeyPair.generate() for _ in range(4))
    members = {k.peer_id for k in (ka, kr, kb, kc)}
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, relay=RELAY_ON, stack=stack) as r,
            edge_node(members, ka, edge={"dial_order": ["relay"]}, stack=stack) as a,
            # B would upgrade the circuit with DCUtR (test_edge_holepunch.py): not here.
            edge_node(members, kb, edge={"holepunch": False}, stack=stack) as b,
            edge_node(members, kc, edge={"dial_order": ["relay"]}, stack=stack) as c,
        ):
            for n in (a, b, c):
                await n.t.connect(r.t.addrs[0])
            # Everything R splices passes a tap: R must see only Noise ciphertext.
            seen = bytearray()
            splice: Any = r.dialer.relay.splice

            async def tapped(circuit: Any, x: Any, y: Any) -> str:
                reason: str = await splice(circuit, Tap(x, seen), Tap(y, seen))
                return reason

            setattr(r.dialer.relay, "splice", tapped)  # noqa: B010 (a spy, not a stub)
            # Before B reserves, R refuses to connect anyone to it.
            with pytest.raises(RelayRefused, match="no_reservation"):
                await a.dialer.relay.connect(r.peer, b.peer)
            assert await b.dialer.relay.reserve(r.peer) > 0
            path = await a.dialer.connect(b.peer)
            assert path.kind == "relayed" and path.via == r.peer
            assert await a.t.request(b.peer, ECHO, {"n": 1}) == ["echo", {"n": 1}]
            assert await b.t.request(a.peer, ECHO, b"z" * 100_000) == ["echo", b"z" * 100_000]
            assert len(await a.t.ping(b.peer, count=2)) == 2
            marker = b"colony-plaintext-marker/"
            assert await a.t.request(b.peer, ECHO, marker * 100) == ["echo", marker * 100]
            assert len(seen) > 5_000 and marker not in bytes(seen)
            st = a.dialer.status()
            assert st["peers"][str(b.peer)] == {**st["peers"][str(b.peer)], "kind": "relayed"}
            assert st["relays_in_use"] == [str(r.peer)]
            for _ in range(100):
                if str(a.peer) in b.dialer.status()["peers"]:
                    break
                await trio.sleep(0.05)
            assert b.dialer.status()["peers"][str(a.peer)]["kind"] == "relayed"
            assert str(r.peer) in b.dialer.status()["relays_in_use"]
            # R allows one circuit at a time: C is refused with the reason.
            with pytest.raises(RelayRefused, match="too_many_circuits"):
                await c.dialer.relay.connect(r.peer, b.peer)
            # The circuit ends at its byte limit (2 MiB both ways): R closes it and
            # counts why; the ends see their connection go.
            with pytest.raises(TransportError):
                for _ in range(20):
                    await a.t.request(b.peer, ECHO, b"y" * 200_000, timeout=10)
            rs = r.dialer.relay.status()["relaying"]
            for _ in range(100):
                if rs["circuits_closed"]:
                    break
                await trio.sleep(0.05)
                rs = r.dialer.relay.status()["relaying"]
            assert rs["circuits_closed"] == {"max_bytes": 1}
            assert rs["refusals"] == {"no_reservation": 1, "too_many_circuits": 1}
            # R and everyone else are unaffected.
            assert await a.t.request(r.peer, ECHO, 2) == ["echo", 2]


@pytest.mark.parametrize("stack", STACKS)
def test_relay_refuses_non_members_and_when_disabled(stack: str) -> None:
    trio.run(_refusals, stack)


async def _refusals(stack: str) -> None:
    ka, kr, kb, kq = (KeyPair.generate() for _ in range(4))
    outsider = KeyPair.generate()
    members = {ka.peer_id, kr.peer_id, kb.peer_id, kq.peer_id}
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, relay=RELAY_ON, stack=stack) as r,
            edge_node(members, kq, stack=stack) as q,
            edge_node(members, kb, stack=stack) as b,
            edge_node(members | {outsider.peer_id}, outsider, stack=stack) as o,
        ):
            for n in (b, o):
                await n.t.connect(r.t.addrs[0])
            await b.t.connect(q.t.addrs[0])
            with pytest.raises(RelayRefused, match="not_a_member"):
                await o.dialer.relay.reserve(r.peer)
            await b.dialer.relay.reserve(r.peer)
            with pytest.raises(RelayRefused, match="not_a_member"):
                await o.dialer.relay.connect(r.peer, b.peer)
            with pytest.raises(RelayRefused, match="relay_disabled"):
                await b.dialer.relay.reserve(q.peer)
            # Garbage and an oversized length prefix: refused as malformed, costing
            # only that stream; the relay still serves B afterwards.
            for junk in (b"\x05hello", b"\xff\xff\x7f" + b"x" * 10):
                s = await b.t.open_stream(r.peer, PROTO_RELAY)
                await s.send_all(junk)
                resp = await read_handshake(s)
                assert resp["ok"] is False and resp["reason"] == "malformed", resp
                await s.aclose()
            assert await b.dialer.relay.reserve(r.peer) > 0
            assert r.dialer.relay.status()["relaying"]["refusals"]["malformed"] == 2
