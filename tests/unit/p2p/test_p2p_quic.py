"""QUIC transport (overlay.p2p.quic) between two endpoints on 127.0.0.1: libp2p TLS
identities, multistream-select per stream, echo, flow control with a slow reader,
and bad input (garbage datagrams, a forged certificate, the wrong peer) failing
only what it concerns."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from overlay.core.crypto import KeyPair
from overlay.p2p.errors import HandshakeError, NegotiationError, StreamResetError
from overlay.p2p.quic import QuicConn, QuicEndpoint, negotiate_inbound
from overlay.p2p.quic_stream import QuicStream

ECHO = "/colony/test-echo/1.0.0"


async def echo(s: QuicStream) -> None:
    await negotiate_inbound(s, [ECHO])
    while data := await s.read():
        await s.write(data)
    await s.close()


Body = Callable[[QuicEndpoint, QuicEndpoint, tuple[str, int]], Awaitable[None]]


def run_pair(body: Body, on_stream: Callable[[QuicStream], Awaitable[None]] = echo,
             ) -> tuple[QuicEndpoint, QuicEndpoint]:
    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=on_stream)
    b = QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32))
    run_endpoints(a, b, body)
    return a, b


def run_endpoints(a: QuicEndpoint, b: QuicEndpoint, body: Body) -> None:
    """Run `a` and `b` on 127.0.0.1 and `body(a, b, a's address)`, then stop both."""

    async def main() -> None:
        # A bound, not a timing: 3 MiB each way through aioquic's per-packet Python in
        # one process took > 15 s at load 9 (a suite run beside three other sessions).
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                addr = await n.start(a.run, ("127.0.0.1", 0))
                await n.start(b.run, ("127.0.0.1", 0))
                await body(a, b, addr)
                n.cancel_scope.cancel()

    trio.run(main)


async def roundtrip(conn: QuicConn, payload: bytes) -> bytes:
    s = await conn.open_stream(["/colony/none/1.0.0", ECHO])
    assert s.protocol == ECHO
    got = bytearray()

    async def reader() -> None:
        while data := await s.read():
            got.extend(data)

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await s.write(payload)
        await s.close()
    return bytes(got)


def test_streams_echo_bytes_and_peer_ids_come_from_certificates() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        assert conn.remote_peer == a.keypair.peer_id
        payload = os.urandom(3 * 1024 * 1024 + 17)
        async with trio.open_nursery() as n:  # three streams at once on one connection
            results: list[bool] = []

            async def one(p: bytes) -> None:
                results.append(await roundtrip(conn, p) == p)

            for p in (payload, b"x", b""):
                n.start_soon(one, p)
        assert results == [True, True, True]
        inbound = [c for c in a.connections if not c.initiator]
        assert [c.remote_peer for c in inbound] == [b.keypair.peer_id]

    a, b = run_pair(body)
    assert sum(a.drops.values()) == 0 and sum(b.drops.values()) == 0


def test_unknown_protocol_is_refused_on_that_stream_only() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        with pytest.raises(NegotiationError):
            await conn.open_stream(["/colony/none/1.0.0"])
        assert await roundtrip(conn, b"still fine") == b"still fine"

    run_pair(body)


def test_slow_reader_bounds_what_the_sender_queues() -> None:
    async def hold(s: QuicStream) -> None:
        await negotiate_inbound(s, [ECHO])
        await trio.sleep(0.5)  # read nothing for a while
        total = 0
        while data := await s.read():
            total += len(data)
        await s.write(str(total).encode())
        await s.close()

    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        s = await conn.open_stream([ECHO])
        size = 24 * 1024 * 1024
        with trio.move_on_after(0.4) as scope:
            await s.write(b"z" * size)  # cannot finish: window + high water < size
        assert scope.cancelled_caught
        receiver = next(c for c in a.connections if not c.initiator)
        unread = sum(len(x) for st in receiver.streams.values() for x in st._buf)
        assert unread <= 4 * 1024 * 1024 + 256 * 1024
        await s.close()
        assert int(await s.read()) < size  # what got through before the cancel

    run_pair(body, on_stream=hold)


def test_wrong_peer_is_refused_by_the_dialler() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        with pytest.raises(HandshakeError, match="answered"):
            await b.dial(addr, KeyPair.from_rng_seed(b"c" * 32).peer_id)
        assert (await b.dial(addr, a.keypair.peer_id)).remote_peer == a.keypair.peer_id

    _, b = run_pair(body)
    assert b.drops["handshake_refused"] == 1


def test_client_without_libp2p_extension_is_refused_by_the_listener() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b.certificate = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256())
        )
        b.private_key = key
        try:
            conn = await b.dial(addr, a.keypair.peer_id)
        except HandshakeError as e:
            assert "lacks the libp2p public key extension" in str(e)
            return
        with trio.fail_after(5):
            await conn.wait_closed()
        assert "lacks the libp2p public key extension" in (conn.close_reason or "")

    a, _ = run_pair(body)
    assert a.drops["handshake_refused"] == 1
    assert not [c for c in a.connections if c.verified]


def test_garbage_datagrams_are_dropped_and_counted() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            for d in (b"", b"\x00", os.urandom(40), b"\xc0\x00\x00\x00\x01" + os.urandom(20),
                      b"\xc0\x00\x00\x00\x01\x08" + os.urandom(1300),
                      b"\xc0\xff\x00\x00\x1d\x08" + os.urandom(8) + b"\x00" + os.urandom(1300),
                      b"\x40" + os.urandom(60)):
                junk.sendto(d, addr)
        await trio.sleep(0.2)
        conn = await b.dial(addr, a.keypair.peer_id)
        assert await roundtrip(conn, b"alive") == b"alive"

    a, b = run_pair(body)
    assert sum(a.drops.values()) >= 4
    # No junk datagram became a connection: the only verified one is b's.
    assert [c.remote_peer for c in a.connections if c.verified] == [b.keypair.peer_id]


def test_half_open_handshakes_are_bounded_and_timed_out() -> None:
    """Clients that send a genuine Initial and then fall silent: at most
    `max_pending_handshakes` are kept, each dropped after the handshake timeout."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=echo,
                     max_pending_handshakes=2, handshake_timeout_s=0.3)
    b = QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32))

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                addr = await n.start(a.run, ("127.0.0.1", 0))
                await n.start(b.run, ("127.0.0.1", 0))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
                    for _ in range(4):
                        client = QuicConnection(configuration=QuicConfiguration(
                            is_client=True, alpn_protocols=["libp2p"]))
                        client.connect(addr, now=0.0)
                        for data, _to in client.datagrams_to_send(now=0.0):
                            silent.sendto(data, addr)
                    await trio.sleep(0.1)
                    assert len([c for c in a.connections if not c.verified]) == 2
                    await trio.sleep(0.5)
                assert not a.connections
                # The listener still serves a real peer afterwards.
                conn = await b.dial(addr, a.keypair.peer_id)
                assert await roundtrip(conn, b"after the flood") == b"after the flood"
                n.cancel_scope.cancel()

    trio.run(main)
    assert a.drops["too_many_handshakes"] == 2
    assert a.drops["handshake_timeout"] == 2


def test_handler_exception_resets_its_stream_only() -> None:
    async def faulty(s: QuicStream) -> None:
        await negotiate_inbound(s, [ECHO])
        first = await s.read()
        if first == b"boom":
            raise ValueError("handler bug")
        await s.write(first)
        while data := await s.read():
            await s.write(data)
        await s.close()

    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        s = await conn.open_stream([ECHO])
        await s.write(b"boom")
        with pytest.raises(StreamResetError):
            while await s.read():
                pass
        s2 = await conn.open_stream([ECHO])
        await s2.write(b"fine")
        await s2.close()
        back = bytearray()
        while data := await s2.read():
            back += data
        assert bytes(back) == b"fine" and not conn.closed

    run_pair(body, on_stream=faulty)
