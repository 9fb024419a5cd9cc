"""overlay.runtime.net.transport on real hosts over 127.0.0.1 sockets, on both network
stacks (`native` = overlay/p2p, and `py-libp2p`): every test runs once per stack.

Each py-libp2p 0.8.1 trait the adapter handles (docs/transport.md) has a test here:
Noise only (a plaintext dialer is refused), one connection per peer, handler
exceptions and garbage cost a stream and not the host, remote close is a clean
end, frames over the limit or malformed drop the stream with a logged reason,
per-peer queues are bounded. No timing assertions; every wait is bounded.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from overlay.core.crypto import KeyPair
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.runtime.net.transport import (
    Codec,
    DialError,
    ListenError,
    PeerConnected,
    PeerDisconnected,
    RemoteError,
    RequestTimeout,
    SendError,
    SendFailed,
    Transport,
    TransportConfig,
    TransportEvent,
)

LOOP = "/ip4/127.0.0.1/tcp/0"
P = "/colony/test/1.0.0"
RAW = "/colony/test-raw/1.0.0"

pytestmark = pytest.mark.timeout(60)

STACK = "native"


@pytest.fixture(autouse=True, params=["native", "py-libp2p"])
def stack(request: pytest.FixtureRequest) -> str:
    """Run every test on both stacks; `cfg()` builds configs for the current one."""
    global STACK
    param: str = request.param
    STACK = param
    return STACK


def cfg(**kw: Any) -> TransportConfig:
    return TransportConfig(stack=STACK, **kw)


def topen(kp: KeyPair, addrs: list[str], config: TransportConfig | None = None) -> Any:
    return Transport.open(kp, addrs, config or cfg())


@asynccontextmanager
async def pair(
    config_a: TransportConfig | None = None, config_b: TransportConfig | None = None
) -> AsyncIterator[tuple[Transport, Transport]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(topen(KeyPair.generate(), [LOOP], config_a))
        b = await stack.enter_async_context(topen(KeyPair.generate(), [LOOP], config_b))
        a.add_addrs(b.peer_id, b.listen_addrs)
        yield a, b


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(45):
            await fn()

    trio.run(bounded)


class Inbox:
    """Collects on_message calls; `wait(n)` blocks (bounded) until n arrived."""

    def __init__(self) -> None:
        self.items: list[tuple[PeerId, Any]] = []
        self._changed = trio.Event()

    def __call__(self, peer: PeerId, obj: Any) -> None:
        self.items.append((peer, obj))
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, n: int) -> list[Any]:
        with trio.fail_after(10):
            while len(self.items) < n:
                await self._changed.wait()
        return [obj for _, obj in self.items]


async def next_event(t: Transport, kind: type[TransportEvent]) -> Any:
    with trio.fail_after(10):
        async for ev in t.events:
            if isinstance(ev, kind):
                return ev
    raise AssertionError("event channel closed")


async def echo(peer: PeerId, obj: Any) -> Any:
    return {"from": peer.raw, "echo": obj}


async def echoed(t: Transport, peer: PeerId, obj: object) -> object:
    """The "echo" field of `peer`'s `echo` handler's answer to `obj` on P."""
    reply = await t.request(peer, P, obj)
    assert isinstance(reply, dict), reply
    return reply["echo"]


# ---------------------------------------------------------------- identity, addresses


def test_identity_addresses_and_one_connection_per_peer() -> None:
    async def main() -> None:
        kp = KeyPair.generate()
        async with topen(kp, [LOOP, "/ip4/127.0.0.2/tcp/0"]) as b, topen(
            KeyPair.generate(), [LOOP]
        ) as a:
            assert b.peer_id == kp.peer_id
            assert len(b.listen_addrs) == 2
            assert all(not addr.endswith("/tcp/0") for addr in b.listen_addrs)
            assert b.addrs == [f"{x}/p2p/{kp.peer_id}" for x in b.listen_addrs]
            a.add_addrs(b.peer_id, b.listen_addrs)
            assert await a.connect(b.peer_id) == b.peer_id
            assert await a.connect(b.addrs[0]) == b.peer_id
            assert a.connected_peers() == [b.peer_id]
            assert a.is_connected(b.peer_id)
            assert (await next_event(a, PeerConnected)).peer == b.peer_id
            assert (await next_event(b, PeerConnected)).peer == a.peer_id
            assert a.stats.dials == 1
            if STACK == "py-libp2p":
                network = a._backend._network
                # py-libp2p's default of 3 connections per peer makes every dial wait
                # out its 250 ms happy-eyeballs timer; at 1 it stops at the first.
                assert network.connection_config.max_connections_per_peer == 1
                assert len(network.get_connections()) == 1
                # The auto-connector would dial every stored peer by itself.
                assert not network.auto_connector._started
            else:
                assert len(a._backend.host._conns[b.peer_id]) == 1

    run(main)


def test_listen_on_a_busy_port_raises_listen_error() -> None:
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        try:
            with pytest.raises(ListenError):
                async with topen(KeyPair.generate(), [f"/ip4/127.0.0.1/tcp/{port}"]):
                    pass
        finally:
            sock.close()

    run(main)


# ---------------------------------------------------------------- security


async def _multistream_select(port: int, protocol: str) -> bytes:
    """Propose `protocol` as the security upgrade; return the listener's answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for line in (b"/multistream/1.0.0\n", protocol.encode() + b"\n"):
            await stream.send_all(encode_varint(len(line)) + line)
        answer = b""
        with trio.move_on_after(5):
            while b"\n" not in answer.split(b"\n", 1)[-1] or answer.count(b"\n") < 2:
                chunk = await stream.receive_some(1024)
                if not chunk:
                    break
                answer += chunk
        return answer


def test_plaintext_dialer_is_refused_noise_is_offered() -> None:
    async def main() -> None:
        async with topen(KeyPair.generate(), [LOOP]) as t:
            port = int(t.listen_addrs[0].rsplit("/", 1)[1])
            for plaintext in ("/plaintext/2.0.0", "/plaintext/1.0.0", "/secio/1.0.0", "/tls/1.0.0"):
                answer = await _multistream_select(port, plaintext)
                assert answer.endswith(b"\x03na\n"), (plaintext, answer)
            answer = await _multistream_select(port, "/noise")
            assert answer.endswith(b"\x07/noise\n"), answer
            assert t.connected_peers() == []

    run(main)


# ---------------------------------------------------------------- messages and requests


def test_post_send_request_on_one_long_lived_stream() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            inbox = Inbox()
            b.set_handler(P, on_message=inbox, on_request=echo)
            assert a.post(b.peer_id, P, {"n": 0})
            await a.send(b.peer_id, P, {"n": 1})
            assert await inbox.wait(2) == [{"n": 0}, {"n": 1}]
            assert inbox.items[0][0] == a.peer_id
            reply = await a.request(b.peer_id, P, [1, b"two"])
            assert reply == {"from": a.peer_id.raw, "echo": [1, b"two"]}

            # Many requests in flight at once, all answered by id on one stream.
            results: dict[int, Any] = {}

            async def one(i: int) -> None:
                results[i] = await a.request(b.peer_id, P, i)

            async with trio.open_nursery() as n:
                for i in range(50):
                    n.start_soon(one, i)
            assert all(results[i]["echo"] == i for i in range(50))
            assert a.stats.streams_opened == 1
            assert b.stats.streams_accepted == 1
            assert b.stats.requests_served == 51
            assert a.stats.frames_out >= 53 and b.stats.frames_in == a.stats.frames_out

    run(main)


def test_request_refusals_and_timeouts() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            release = trio.Event()

            async def handler(peer: PeerId, obj: Any) -> Any:
                if obj == "bad":
                    raise MalformedFrame("not a valid query")
                if obj == "bug":
                    raise ZeroDivisionError("handler bug")
                if obj == "slow":
                    await release.wait()
                return obj

            b.set_handler(P, on_request=handler)
            with pytest.raises(RemoteError, match="refused: not a valid query"):
                await a.request(b.peer_id, P, "bad")
            with pytest.raises(RemoteError, match="internal error: ZeroDivisionError"):
                await a.request(b.peer_id, P, "bug")
            with pytest.raises(RequestTimeout):
                await a.request(b.peer_id, P, "slow", timeout=0.3)
            release.set()
            # The late answer is counted and ignored; the stream still works.
            assert await a.request(b.peer_id, P, "ok") == "ok"
            assert b.stats.handler_errors == 1
            assert a.stats.request_timeouts == 1
            # No request handler on the far side: a refusal, not a hang.
            b.set_handler("/colony/msgs-only/1", on_message=Inbox())
            with pytest.raises(RemoteError, match="no request handler"):
                await a.request(b.peer_id, "/colony/msgs-only/1", 1)

    run(main)


def test_raw_protocol_responses_match_in_order() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            served: list[bytes] = []

            async def reverse(peer: PeerId, body: object) -> bytes | None:
                assert isinstance(body, bytes)  # RAW delivers bytes
                served.append(body)
                if body == b"no-reply":
                    return None
                await trio.sleep(0.001 * (len(served) % 3))  # handlers take uneven time
                return body[::-1]

            inbox = Inbox()
            b.set_handler(RAW, on_request=reverse, codec=Codec.RAW)
            a.set_handler(RAW, on_message=inbox, codec=Codec.RAW)
            results: dict[int, object] = {}

            async def one(i: int) -> None:
                results[i] = await a.request(b.peer_id, RAW, f"q{i:03}".encode())

            async with trio.open_nursery() as n:
                for i in range(20):
                    n.start_soon(one, i)
            assert results == {i: f"q{i:03}".encode()[::-1] for i in range(20)}
            await a.send(b.peer_id, RAW, b"no-reply")
            assert await a.request(b.peer_id, RAW, b"abc") == b"cba"
            with pytest.raises(LocalProtocolError):
                await a.send(b.peer_id, RAW, "text is not bytes")

    run(main)


# ---------------------------------------------------------------- bad peers


def test_handler_exception_costs_the_stream_not_the_host() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            calls: list[Any] = []

            def on_message(peer: PeerId, obj: Any) -> None:
                calls.append(obj)
                if obj == "explode":
                    raise RuntimeError("bug in a message handler")

            b.set_handler(P, on_message=on_message, on_request=echo)
            with capture_logs() as logs:
                assert a.post(b.peer_id, P, "explode")
                with trio.fail_after(10):
                    while b.stats.streams_dropped.get("handler_error", 0) == 0:
                        await trio.sleep(0.01)
            assert calls == ["explode"]
            assert any(e["event"] == "message_handler_failed" for e in logs)
            # Host and connection survive; the next frame opens a fresh stream.
            with trio.fail_after(10):
                while True:
                    try:
                        assert await echoed(a, b.peer_id, "after") == "after"
                        break
                    except SendError:
                        await trio.sleep(0.01)  # our side had not seen the reset yet
            assert b.is_connected(a.peer_id)
            assert a.stats.streams_opened == 2

    run(main)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed_frame"),  # empty: not a CBOR item
        (b"\xff\xff\xff", "malformed_frame"),  # not CBOR
        (b"\x82\x00", "malformed_frame"),  # array of 2 with one item
        (b"\x82\x18\x00\x00", "non_canonical"),  # [0, 0] with 0 in two bytes
        (b"\x81\x05", "malformed_frame"),  # [5]: CBOR but not an envelope
        (b"\x00" * 2000, "frame_too_large"),  # over the receiver's 1 KiB limit
    ],
)
def test_garbage_frames_drop_the_stream_with_a_logged_reason(body: bytes, reason: str) -> None:
    async def main() -> None:
        small = cfg(max_frame_bytes=1024)
        async with pair(config_b=small) as (attacker, b), topen(
            KeyPair.generate(), [LOOP]
        ) as good:
            inbox = Inbox()
            b.set_handler(P, on_request=echo, on_message=inbox)
            # The attacker writes length-prefixed bytes of its choosing on the CBOR
            # protocol id, as a peer with a buggy or hostile codec would.
            attacker.codec_for(P, Codec.RAW)
            with capture_logs() as logs:
                await attacker.send(b.peer_id, P, body)
                with trio.fail_after(10):
                    while not b.stats.streams_dropped:
                        await trio.sleep(0.01)
            assert b.stats.streams_dropped == {reason: 1}
            dropped = [e for e in logs if e["event"] == "stream_dropped"]
            assert [e["reason"] for e in dropped] == [reason]
            assert dropped[0]["peer"] == str(attacker.peer_id)
            assert inbox.items == []
            # b keeps serving: a well-behaved peer is answered.
            good.add_addrs(b.peer_id, b.listen_addrs)
            assert await echoed(good, b.peer_id, "still alive") == "still alive"

    run(main)


def test_tcp_garbage_and_aborted_handshakes_do_not_stop_the_host() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            b.set_handler(P, on_request=echo)
            port = int(b.listen_addrs[0].rsplit("/", 1)[1])
            for payload in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", encode_varint(19)
                            + b"/multistream/1.0.0\n" + encode_varint(7) + b"/noise\n"
                            + b"\xff" * 100):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(payload)
                await stream.aclose()
            assert await echoed(a, b.peer_id, 1) == 1

    run(main)


# ---------------------------------------------------------------- close, failure, bounds


def test_remote_close_is_a_clean_end_and_the_next_send_reopens() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            inbox = Inbox()
            b.set_handler(P, on_message=inbox)
            await a.send(b.peer_id, P, "one")
            await inbox.wait(1)
            ch = a._sender.channels[(b.peer_id, P)]
            assert ch.stream is not None
            await ch.stream.net.close()  # half-close: b reads EOF and closes its side
            with trio.fail_after(10):
                while b._receiver.open_streams:
                    await trio.sleep(0.01)
            assert b.stats.streams_dropped == {}  # EOF is not a fault
            # A peer's half-close alone keeps our half open (helia's Bitswap closes
            # its write half at once and still reads); a reset ends our channel and
            # the next send opens a new stream.
            await ch.stream.net.reset()
            with trio.fail_after(10):
                while True:
                    try:
                        await a.send(b.peer_id, P, "two")
                        break
                    except SendError:  # the write on the reset stream ends the channel
                        await trio.sleep(0.01)
            assert await inbox.wait(2) == ["one", "two"]
            assert a.stats.streams_opened == 2
            assert b.stats.streams_dropped == {}  # EOF is not a fault

    run(main)


def test_unreachable_peer_bounded_queue_and_send_failed_event() -> None:
    async def main() -> None:
        config = cfg(queue_frames=8, queue_bytes_per_peer=10_000, dial_timeout_s=5)
        async with topen(KeyPair.generate(), [LOOP], config) as a:
            ghost = KeyPair.generate().peer_id
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()  # nothing listens there now
            a.add_addrs(ghost, [f"/ip4/127.0.0.1/tcp/{port}"])
            accepted = [a.post(ghost, P, b"x" * 100) for _ in range(20)]
            assert accepted[:8] == [True] * 8 and not any(accepted[8:])  # 8 frames max
            assert a.stats.frames_dropped_queue_full == 12
            assert a.stats.queue_full_by_protocol == {P: 12}  # /v1/stats "drops"
            failed = await next_event(a, SendFailed)
            assert failed.peer == ghost and failed.frames_dropped == 8
            assert failed.reason.startswith("dial_failed")
            # Our back-off now refuses at once; new addresses lift it.
            with pytest.raises(SendError, match="backing off"):
                await a.send(ghost, P, 1)
            with pytest.raises(DialError, match="no known address"):
                await a.connect(KeyPair.generate().peer_id)
            # Byte budget: one frame bigger than the per-peer budget is refused.
            assert not a.post(ghost, P, b"x" * 20_000)
            assert a._sender.queued_bytes.get(ghost, 0) <= config.queue_bytes_per_peer

    run(main)


def test_hearsay_addresses_never_push_first_hand_ones_out_or_ahead() -> None:
    """A hostile DHT answer naming 32 dead addresses for a peer: they go after the
    addresses its signed gossip gave and are the first dropped at the cap."""
    async def main() -> None:
        async with pair() as (a, b):
            real = list(b.listen_addrs)
            junk = [f"/ip4/10.9.9.{i}/tcp/4001" for i in range(32)]
            a.add_addrs(b.peer_id, junk, hearsay=True)
            a.add_addrs(b.peer_id, real)
            a.add_addrs(b.peer_id, junk[::-1], hearsay=True)
            known = a.known_addrs(b.peer_id)
            assert known[:len(real)] == real[::-1] or known[:len(real)] == real
            assert len(known) == a.config.max_addrs_per_peer
            if STACK == "native":  # py-libp2p's peerstore orders addresses its own way
                await a.connect(b.peer_id)  # the real address is tried first

    run(main)


def test_a_dial_waiting_for_addresses_ends_when_the_peer_dials_in() -> None:
    """b has no address for a and waits its grace for one; a dials b meanwhile: b's
    connect returns on that connection instead of failing "no known address"."""
    async def main() -> None:
        async with pair() as (a, b):
            async with trio.open_nursery() as n:
                n.start_soon(b.connect, a.peer_id)
                await trio.sleep(0.1)
                await a.connect(b.peer_id)
            assert b.is_connected(a.peer_id) and b.stats.dials == 0

    run(main)


def test_disconnect_events_ping_and_identify() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            b.set_handler(P, on_request=echo)
            rtts = await a.ping(b.peer_id, count=3)
            assert len(rtts) == 3 and all(r > 0 for r in rtts)
            info = await a.identify(b.peer_id)
            assert P in info.protocols and "/ipfs/ping/1.0.0" in info.protocols
            agent = "py-libp2p" if STACK == "py-libp2p" else "colony/"
            assert info.agent_version is not None and info.agent_version.startswith(agent)
            # identify's observedAddr: where b sees us connect from (loopback).
            assert info.observed_addr is not None
            assert info.observed_addr.startswith("/ip4/127.0.0.1/tcp/")
            assert any(addr.startswith(b.listen_addrs[0]) for addr in info.addrs)
            assert (await next_event(b, PeerConnected)).peer == a.peer_id
            await a.disconnect(b.peer_id, "test")
            assert (await next_event(b, PeerDisconnected)).peer == a.peer_id
            assert (await next_event(a, PeerDisconnected)).peer == b.peer_id
            # Reconnects on demand.
            assert await echoed(a, b.peer_id, 2) == 2

    run(main)
