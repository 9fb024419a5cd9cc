"""The native stack (overlay/p2p) behind the transport: interop with py-libp2p hosts
in both directions, attach_stream over a foreign byte stream, the send-rate limit,
a peer breaking Yamux after the handshake, no libp2p import in native mode, and
`[network] noise_cipher` choosing the Noise suite (AES-GCM or /noise).
Real sockets on 127.0.0.1; every wait bounded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p import noise
from overlay.p2p.connection import upgrade
from overlay.runtime.net.transport import (
    AttachError,
    Codec,
    Transport,
    TransportConfig,
)

LOOP = "/ip4/127.0.0.1/tcp/0"
P = "/colony/test/1.0.0"
RAW = "/colony/test-raw/1.0.0"

pytestmark = pytest.mark.timeout(60)


def run(fn: Any) -> None:
    async def bounded() -> None:
        with trio.fail_after(45):
            await fn()

    trio.run(bounded)


async def echo(peer: PeerId, obj: Any) -> Any:
    return {"from": peer.raw, "echo": obj}


async def echoed(t: Transport, peer: PeerId, obj: object) -> object:
    """The "echo" field of `peer`'s `echo` handler's answer to `obj` on P."""
    reply = await t.request(peer, P, obj)
    assert isinstance(reply, dict), reply
    return reply["echo"]


async def reverse(peer: PeerId, body: object) -> bytes:
    assert isinstance(body, bytes)  # RAW delivers bytes
    return body[::-1]


@asynccontextmanager
async def two(stack_a: str, stack_b: str, **kw: Any) -> AsyncIterator[tuple[Transport, Transport]]:
    async with AsyncExitStack() as st:
        a = await st.enter_async_context(
            Transport.open(KeyPair.generate(), [LOOP], TransportConfig(stack=stack_a, **kw)))
        b = await st.enter_async_context(
            Transport.open(KeyPair.generate(), [LOOP], TransportConfig(stack=stack_b, **kw)))
        for t in (a, b):
            t.set_handler(P, on_request=echo)
            t.set_handler(RAW, on_request=reverse, codec=Codec.RAW)
        yield a, b


@pytest.mark.parametrize(("dialler", "listener"), [("native", "py-libp2p"),
                                                   ("py-libp2p", "native")])
def test_interop_with_py_libp2p_both_directions(dialler: str, listener: str) -> None:
    async def main() -> None:
        async with two(dialler, listener) as (a, b):
            a.add_addrs(b.peer_id, b.listen_addrs)
            assert await a.request(b.peer_id, P, [1, b"x"]) == {"from": a.peer_id.raw,
                                                                 "echo": [1, b"x"]}
            big = bytes(range(256)) * 8192  # 2 MiB: many Yamux frames and window updates
            assert await a.request(b.peer_id, RAW, big) == big[::-1]
            # The listener answers on its own outbound stream over the same connection.
            assert await b.request(a.peer_id, P, "back") == {"from": b.peer_id.raw,
                                                             "echo": "back"}
            assert len(await a.ping(b.peer_id, count=2)) == 2
            info = await a.identify(b.peer_id)
            assert P in info.protocols and RAW in info.protocols
            info_b = await b.identify(a.peer_id)
            assert "/ipfs/ping/1.0.0" in info_b.protocols
            assert a.stats.dials == 1 and b.stats.dials == 0

    run(main)


def test_attach_stream_over_a_foreign_byte_stream() -> None:
    async def main() -> None:
        async with two("native", "native") as (a, b):
            # A socketpair stands in for a WebRTC data channel or a relay circuit:
            # neither side knows an address of the other.
            sa, sb = trio.socket.socketpair()
            left, right = trio.SocketStream(sa), trio.SocketStream(sb)
            async with trio.open_nursery() as n:
                got: list[PeerId] = []

                async def responder() -> None:
                    got.append(await b.attach_stream(right, initiator=False))

                n.start_soon(responder)
                assert await a.attach_stream(left, initiator=True, peer=b.peer_id) == b.peer_id
            assert got == [a.peer_id]
            assert a.known_addrs(b.peer_id) == []
            assert await a.request(b.peer_id, P, "over the pipe") == {
                "from": a.peer_id.raw, "echo": "over the pipe"}
            assert await b.request(a.peer_id, RAW, b"abc") == b"cba"
            assert a.stats.dials == 0

            # The initiator names the peer it expects: anyone else is refused, and
            # both ends report the failed upgrade.
            sa, sb = trio.socket.socketpair()
            left, right = trio.SocketStream(sa), trio.SocketStream(sb)
            stranger = KeyPair.generate().peer_id
            errors: dict[str, AttachError] = {}

            async def refused_responder() -> None:
                try:
                    await b.attach_stream(right, initiator=False)
                except AttachError as e:
                    errors["b"] = e

            async with trio.open_nursery() as n:
                n.start_soon(refused_responder)
                try:
                    await a.attach_stream(left, initiator=True, peer=stranger)
                except AttachError as e:
                    errors["a"] = e
            assert "dialled" in str(errors["a"]) and "b" in errors

    run(main)


def test_send_rate_limit_holds_the_average() -> None:
    rate = 4_000_000  # bytes/s

    async def main() -> None:
        async with two("native", "native", max_send_rate=rate) as (a, b):
            got = trio.Event()
            total = 0

            def on_message(peer: PeerId, body: object) -> None:
                nonlocal total
                assert isinstance(body, bytes)  # RAW delivers bytes
                total += len(body)
                if total >= 6_000_000:
                    got.set()

            b.set_handler(RAW, on_message=on_message, codec=Codec.RAW)
            a.codec_for(RAW, Codec.RAW)
            a.add_addrs(b.peer_id, b.listen_addrs)
            await a.connect(b.peer_id)
            t0 = trio.current_time()
            for _ in range(24):
                await a.send(b.peer_id, RAW, bytes(250_000))
            await got.wait()
            # The bucket allows one burst (~200 KB at this rate), then the rate: 6 MB
            # cannot leave sooner than (6 MB - burst) / rate after the first write.
            # A lower bound on elapsed time: load only makes it longer. (The sum of
            # the delays the bucket imposed is not a bound: a sender slowed by load
            # refills the bucket between writes and is rightly delayed less.)
            elapsed = trio.current_time() - t0
            assert elapsed >= (6_000_000 - 250_000) / rate * 0.95
            assert a.stats.rate_limited_s > 0

    run(main)


def test_admit_holds_large_one_way_frames_in_order_and_lets_small_ones_through() -> None:
    """`set_handler(admit=…)` (how Bitswap's blocks wait for the commit thread): a RAW
    one-way frame of ADMIT_MIN_BYTES or more is delivered only once `admit` returns,
    and the frames behind it on its stream wait too (the stream is not read); a
    smaller frame on its own stream is delivered meanwhile, without asking."""
    from overlay.runtime.net.transport_types import ADMIT_MIN_BYTES

    async def main() -> None:
        async with two("native", "native") as (a, b):
            room = trio.Event()
            asked: list[int] = []
            got: list[int] = []

            async def admit(n: int) -> None:
                asked.append(n)
                await room.wait()

            def on_message(peer: PeerId, body: object) -> None:
                assert isinstance(body, bytes)  # RAW delivers bytes
                got.append(len(body))

            b.set_handler(RAW, on_message=on_message, codec=Codec.RAW, admit=admit)
            a.codec_for(RAW, Codec.RAW)
            other = "/colony/test-raw-small/1.0.0"
            a.codec_for(other, Codec.RAW)
            b.set_handler(other, on_message=on_message, codec=Codec.RAW, admit=admit)
            a.add_addrs(b.peer_id, b.listen_addrs)
            await a.connect(b.peer_id)
            big = ADMIT_MIN_BYTES + 1
            await a.send(b.peer_id, RAW, bytes(big))
            await a.send(b.peer_id, RAW, bytes(10))  # behind the big one
            await a.send(b.peer_id, other, bytes(20))  # another stream, small
            while not (asked and got):
                await trio.sleep(0.01)
            await trio.sleep(0.2)
            assert asked == [big] and got == [20]
            room.set()
            while len(got) < 3:
                await trio.sleep(0.01)
            assert got == [20, big, 10] and asked == [big]

    run(main)


def test_yamux_garbage_after_the_handshake_costs_only_that_connection() -> None:
    async def main() -> None:
        async with two("native", "native") as (a, b):
            port = int(b.listen_addrs[0].rsplit("/", 1)[1])
            evil_key = KeyPair.generate()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = await upgrade(stream, evil_key, initiator=True, expected_peer=b.peer_id)
            # A valid Noise message carrying an invalid Yamux header (version 7).
            await stream.send_all(noise.encrypt_frames(conn.ciphers.send, b"\x07" + bytes(11)))
            with trio.fail_after(10):
                while True:  # b answers with GoAway and closes: we read EOF
                    data = await stream.receive_some(65536)
                    if not data:
                        break
            assert not b.is_connected(evil_key.peer_id)
            a.add_addrs(b.peer_id, b.listen_addrs)
            assert await echoed(a, b.peer_id, 1) == 1

    run(main)


def test_native_mode_never_imports_libp2p() -> None:
    code = (
        "import sys, trio\n"
        "from overlay.core.crypto import KeyPair\n"
        "from overlay.runtime.net.transport import Transport\n"
        "async def main():\n"
        "    async with Transport.open(KeyPair.generate(), ['/ip4/127.0.0.1/tcp/0']) as t:\n"
        "        assert t.stack == 'native'\n"
        "trio.run(main)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('libp2p', 'multiaddr'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_new_streams_prefer_tcp_over_a_later_attached_connection() -> None:
    """The edge dialer may attach a (slow) WebRTC channel to a peer we also reach
    by TCP: new streams must keep using TCP."""
    from trio.testing import memory_stream_pair

    async def main() -> None:
        async with two("native", "native") as (a, b):
            a.add_addrs(b.peer_id, b.listen_addrs)
            await a.connect(b.peer_id)
            left, right = memory_stream_pair()
            async with trio.open_nursery() as n:
                n.start_soon(lambda: b.attach_stream(right, initiator=False))
                await a.attach_stream(left, initiator=True, peer=b.peer_id)
            host = a._backend.host  # type: ignore[attr-defined]
            assert len(host._conns[b.peer_id]) == 2
            assert isinstance(host.connection(b.peer_id).stream, trio.SocketStream)
            assert await echoed(a, b.peer_id, "x") == "x"

    run(main)


def test_lazy_dialer_sending_yamux_frames_with_the_negotiation() -> None:
    """A dialer may send its first Yamux frames right behind its muxer proposal,
    before our answer (lazy multistream-select): they must not be lost."""
    from overlay.p2p import multistream, yamux
    from overlay.p2p.connection import P2PStream
    from overlay.p2p.negotiation_io import BufferedIO

    async def main() -> None:
        kp_a, kp_b = KeyPair.generate(), KeyPair.generate()
        sa, sb = trio.socket.socketpair()
        left, right = trio.SocketStream(sa), trio.SocketStream(sb)
        got: list[bytes] = []
        done = trio.Event()

        async def on_stream(s: P2PStream) -> None:
            s.protocol = await multistream.select_listener(s, ["/echo/1"])
            got.append(bytes(await s.read_exact(5)))
            done.set()

        async def responder() -> None:
            conn = await upgrade(right, kp_b, initiator=False)
            await conn.run(on_stream)

        async with trio.open_nursery() as n:
            n.start_soon(responder)
            io = BufferedIO(left)
            await multistream.select_dialer(io, [noise.PROTOCOL_ID])
            hs = noise.Handshake(True, kp_a.seed, kp_b.peer_id)
            await io.write(hs.write_message())
            n2 = int.from_bytes(await io.read_exact(2), "big")
            hs.read_message(await io.read_exact(n2))
            await io.write(hs.write_message())
            _, ciphers = hs.result()
            session = yamux.Session(client=True)
            sid = session.open_stream()
            session.send(sid, multistream.encode(multistream.HEADER)
                         + multistream.encode("/echo/1") + b"hello")
            plain = (multistream.encode(multistream.HEADER)
                     + multistream.encode(yamux.PROTOCOL_ID)
                     + b"".join(bytes(p) for p in session.take_outbound()))
            await left.send_all(noise.encrypt_frames(ciphers.send, plain))  # all at once
            with trio.fail_after(10):
                await done.wait()
            n.cancel_scope.cancel()
        assert got == [b"hello"]

    run(main)


def test_a_request_after_the_connection_closed_under_a_half_closed_stream_reopens() -> None:
    """The js relay interop run of 2026-12-06: the peer half-closed our request
    stream (its reader ended at EOF, the channel kept writing, as helia needs), then
    the connection under it closed (a relayed circuit replaced by a direct
    connection). The next request must go on a new stream, not fail on the dead one."""

    async def main() -> None:
        async with two("native", "native") as (a, b):
            a.add_addrs(b.peer_id, b.listen_addrs)
            assert await echoed(a, b.peer_id, 1) == 1
            hb = b.native_host()
            assert hb is not None
            (conn_b,) = hb.connections(a.peer_id)
            inbound = [s for s in conn_b.streams.values() if s.protocol == P]
            assert len(inbound) == 1
            await inbound[0].close()  # FIN: a's reader of this stream ends at EOF
            await trio.sleep(0.2)
            ha = a.native_host()
            assert ha is not None
            (conn_a,) = ha.connections(b.peer_id)
            await conn_a.close()
            assert await echoed(a, b.peer_id, 2) == 2

    run(main)


def test_remote_ip_sees_tcp_and_quic_peers() -> None:
    """`remote_ip` (the scope of DHT answers' addresses, services/dht_addrs.py) knows
    a peer connected over QUIC, where `remote_addr` (TCP only) does not."""
    quic = "/ip4/127.0.0.1/udp/0/quic-v1"

    async def main() -> None:
        async with AsyncExitStack() as st:
            a, b, c = [await st.enter_async_context(
                Transport.open(KeyPair.generate(), [LOOP, quic], TransportConfig()))
                for _ in range(3)]
            for t in (b, c):
                t.set_handler(P, on_request=echo)
            a.add_addrs(b.peer_id, [x for x in b.listen_addrs if "quic" in x])
            a.add_addrs(c.peer_id, [x for x in c.listen_addrs if "/tcp/" in x])
            await a.request(b.peer_id, P, "over quic")
            await a.request(c.peer_id, P, "over tcp")
            assert a.remote_addr(b.peer_id) is None  # TCP only
            assert a.remote_ip(b.peer_id) == "127.0.0.1"
            assert b.remote_ip(a.peer_id) == "127.0.0.1"
            assert a.remote_ip(c.peer_id) == "127.0.0.1" == c.remote_ip(a.peer_id)
            assert a.remote_ip(KeyPair.generate().peer_id) is None

    run(main)


@pytest.mark.parametrize(("cipher_a", "cipher_b", "chosen"), [
    ("aesgcm", "aesgcm", "/colony/noise-aesgcm/1.0.0"),
    ("aesgcm", "chacha", "/noise"),  # b only speaks libp2p's /noise: a falls back
    ("chacha", "aesgcm", "/noise"),
])
def test_noise_cipher_setting_negotiates_the_suite(cipher_a: str, cipher_b: str,
                                                   chosen: str) -> None:
    """`[network] noise_cipher` between two transports: AES-GCM only when both take
    it; a request and a 2 MiB body either way. Then a hostile dialer's message with
    a bad AES-GCM tag costs only its own connection, counted by b's host."""
    from overlay.p2p.noise_cipher import AESGCM_SUITE, CHACHA

    async def main() -> None:
        async with AsyncExitStack() as st:
            a, b = [await st.enter_async_context(Transport.open(
                KeyPair.generate(), [LOOP], TransportConfig(noise_cipher=c)))
                for c in (cipher_a, cipher_b)]
            for t in (a, b):
                t.set_handler(RAW, on_request=reverse, codec=Codec.RAW)
            a.add_addrs(b.peer_id, b.listen_addrs)
            big = bytes(range(256)) * 8192
            assert await a.request(b.peer_id, RAW, big) == big[::-1]
            assert await b.request(a.peer_id, RAW, b"back") == b"kcab"
            host_a = a._backend.host  # type: ignore[attr-defined]
            host_b = b._backend.host  # type: ignore[attr-defined]
            assert host_a.connection(b.peer_id).security == chosen
            assert host_b.connection(a.peer_id).security == chosen
            if chosen == "/noise":
                return
            port = int(b.listen_addrs[0].rsplit("/", 1)[1])
            evil = KeyPair.generate()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = await upgrade(stream, evil, initiator=True, expected_peer=b.peer_id,
                                 suites=(AESGCM_SUITE, CHACHA))
            assert conn.security == AESGCM_SUITE.protocol_id
            wire = bytearray(noise.encrypt_frames(conn.ciphers.send, bytes(12)))
            wire[-1] ^= 1  # the tag
            await stream.send_all(bytes(wire))
            with trio.fail_after(10):
                # b answers with GoAway and closes: we read to EOF.
                while (await stream.receive_some(65536)) != b"":
                    continue
            with trio.fail_after(5):
                while host_b.protocol_errors < 1:
                    await trio.sleep(0.01)
            assert not b.is_connected(evil.peer_id)
            assert b.connection_drops()["protocol_error"] >= 1  # /v1/stats shows it
            assert await a.request(b.peer_id, RAW, b"still") == b"llits"

    run(main)
