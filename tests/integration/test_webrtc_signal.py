"""Two real libp2p transports reach each other over a real aiortc data channel whose
offer and answer a third member forwards on /colony/signal/1.0.0; the
forwarder refuses non-members, unknown peers, replays and oversized signals."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import trio
from edge_stack import ECHO, STACKS, EdgeNode, edge_node, skip_without_host_candidates

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.signalling import MAX_PENDING_ANSWERS, PROTO_SIGNAL, make_offer
from overlay.runtime.net.transport import RemoteError

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", STACKS)
def test_webrtc_via_forwarder_carries_overlay_protocols(stack: str) -> None:
    skip_without_host_candidates()
    trio.run(_webrtc_via_forwarder, stack)


async def _webrtc_via_forwarder(stack: str) -> None:
    ka, kr, kb = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    members = {ka.peer_id, kr.peer_id, kb.peer_id}
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, edge={"webrtc": False}, stack=stack) as r,
            edge_node(members, ka, edge={"dial_order": ["webrtc"]}, stack=stack) as a,
            edge_node(members, kb, stack=stack) as b,
        ):
            # A and B know only R (B is "behind NAT": A has no address for it).
            await a.t.connect(r.t.addrs[0])
            await b.t.connect(r.t.addrs[0])
            path = await a.dialer.connect(b.peer)
            assert path.kind == "webrtc" and path.via == r.peer
            assert "->" in path.detail  # the nominated ICE pair's candidate types
            # Every libp2p protocol runs over the channel: Colony CBOR requests both
            # ways, ping, identify.
            assert await a.t.request(b.peer, ECHO, {"n": 1}) == ["echo", {"n": 1}]
            assert await b.t.request(a.peer, ECHO, b"x" * 300_000) == ["echo", b"x" * 300_000]
            assert len(await a.t.ping(b.peer, count=3)) == 3
            assert "/ipfs/ping/1.0.0" in (await b.t.identify(a.peer)).protocols
            # Both ends record how they are connected, for `colony doctor`.
            for _ in range(100):
                if str(a.peer) in b.dialer.status()["peers"]:
                    break
                await trio.sleep(0.05)
            sa, sb = a.dialer.status(), b.dialer.status()
            assert sa["peers"][str(b.peer)]["kind"] == "webrtc"
            assert sb["peers"][str(a.peer)]["kind"] == "webrtc"
            assert sa["peers"][str(r.peer)]["kind"] == "direct"
            assert r.dialer.signal is not None and r.dialer.signal.forwarded == 1


@pytest.mark.parametrize("stack", STACKS)
def test_forwarder_refuses_bad_signals_with_reasons(stack: str) -> None:
    trio.run(_bad_signals, stack)


async def _bad_signals(stack: str) -> None:
    ka, kr, kb = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    outsider = KeyPair.generate()
    members = {ka.peer_id, kr.peer_id, kb.peer_id}
    with trio.fail_after(60):
        async with (
            edge_node(members, kr, edge={"webrtc": False}, stack=stack) as r,
            edge_node(members, ka, stack=stack) as a,
            edge_node(members, kb, stack=stack) as b,
            edge_node(members | {outsider.peer_id}, outsider, stack=stack) as o,
        ):
            for n in (a, b, o):
                await n.t.connect(r.t.addrs[0])
            now = time.time()

            async def forward(node: EdgeNode, env_wire: Any) -> Any:
                return await node.t.request(
                    r.peer, PROTO_SIGNAL, {"op": "forward", "env": env_wire}
                )

            def offer(kp: KeyPair, dst: PeerId, sdp: str = "v=0", ttl: float = 20.0) -> Any:
                return make_offer(kp, dst, sdp, now, os.urandom(16), ttl)[1].to_wire()

            cases = [
                (o, offer(outsider, b.peer), "not_a_member"),  # R does not know it
                (a, offer(ka, KeyPair.generate().peer_id), "unknown_peer"),
                (a, offer(ka, b.peer, sdp="a" * 20_000), "oversized"),
                (a, offer(ka, b.peer, ttl=-1.0), "expired"),
                (a, offer(ka, b.peer, ttl=3600.0), "expiry_too_far"),
                (a, offer(kb, a.peer), "wrong_sender"),  # B's offer sent by A
                (a, ["signal", b"\xa0", kb.public.raw, b"\0" * 64], "bad_signature"),
                (a, {"junk": 1}, "malformed"),
            ]
            for node, env, reason in cases:
                with pytest.raises(RemoteError, match=reason):
                    await forward(node, env)
            # A replayed (already forwarded) offer is refused. The first one reaches
            # B, which answers a garbage SDP with its own refusal (passed back).
            wire = offer(ka, b.peer, sdp="not an sdp")
            with pytest.raises(RemoteError, match=r"target_refused.*bad_sdp"):
                await forward(a, wire)
            with pytest.raises(RemoteError, match="replayed"):
                await forward(a, wire)
            # A target holds at most MAX_PENDING_ANSWERS unopened answers: real offers
            # that never complete ICE fill them; the next is refused "busy".
            assert a.dialer.signal is not None and a.dialer.signal.endpoint is not None
            real_sdp, session = await a.dialer.signal.endpoint.offer()
            for _ in range(MAX_PENDING_ANSWERS):
                assert "env" in await forward(a, offer(ka, b.peer, sdp=real_sdp))
            with pytest.raises(RemoteError, match=r"target_refused.*busy"):
                await forward(a, offer(ka, b.peer, sdp=real_sdp))
            await session.close()
            assert r.dialer.signal is not None
            counts = r.dialer.signal.guard.refusals
            assert counts["not_a_member"] == 1 and counts["replayed"] == 1
            # Nothing of this cost a connection: A still talks to R.
            assert await a.t.request(r.peer, ECHO, 1) == ["echo", 1]
