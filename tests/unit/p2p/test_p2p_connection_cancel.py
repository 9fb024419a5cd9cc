"""A sender cancelled in the middle of a socket write must not cut a Noise message.

The native connection writes inline from the sending task when its socket is free.
A send timeout (or a stream reset that cancels its writer) can cancel that task after
`sendmsg` took only part of the ciphertext. Before the fix the rest was dropped: the
peer waited forever for the end of a Noise message and every later frame on the
connection vanished into it (the hostile-client test's 170 s slow path; a stalled
connection in general). Here a real socket pair with small buffers and a receiver
that stops reading makes the partial send certain.
"""

from __future__ import annotations

import socket

import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p import multistream
from overlay.p2p.connection import Connection, P2PStream, upgrade

PROTO = "/test/sink/1.0.0"
PAYLOAD = 200 * 1024  # below one stream's 256 KiB window: all of it is queued at once


class GatedStream(trio.abc.Stream):
    """A socket stream whose reads wait while `gate` is closed (a receiver that is
    busy elsewhere, or stopped)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.gate_open = trio.Event()
        self.gate_open.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await self.gate_open.wait()
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _small_buffers(a: socket.socket, b: socket.socket) -> None:
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)


def test_cancelled_inline_send_leaves_the_connection_whole() -> None:
    async def main() -> None:
        a, b = socket.socketpair()
        _small_buffers(a, b)
        ka, kb = KeyPair.generate(), KeyPair.generate()
        sender_io = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        gated = GatedStream(trio.SocketStream(trio.socket.from_stdlib_socket(b)))
        received = 0
        got_eof = trio.Event()

        async def on_stream(s: P2PStream) -> None:
            nonlocal received
            s.protocol = await multistream.select_listener(s, [PROTO])
            while chunk := await s.read():
                received += len(chunk)
            got_eof.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                conns: list[Connection] = []

                async def up(io: trio.abc.Stream, key: KeyPair, peer: PeerId | None) -> None:
                    conns.append(await upgrade(io, key, initiator=peer is not None,
                                               expected_peer=peer))

                async with trio.open_nursery() as hs:
                    hs.start_soon(up, sender_io, ka, kb.peer_id)
                    hs.start_soon(up, gated, kb, None)
                sender = next(c for c in conns if c.initiator)
                receiver = next(c for c in conns if not c.initiator)
                await n.start(sender.run)
                await n.start(receiver.run, on_stream)
                assert isinstance(sender.stream, trio.SocketStream)  # the inline path

                s = await sender.open_stream([PROTO])
                gated.gate_open = trio.Event()  # the receiver stops reading
                with trio.move_on_after(0.3) as scope:
                    await s.write(b"x" * PAYLOAD)
                assert scope.cancelled_caught, "the socket should have filled up"
                assert sender.bytes_out > 0  # part of the ciphertext went out
                gated.gate_open.set()

                # The connection still works: a Yamux ping round-trips, and the
                # receiver gets every queued byte then the end of the stream.
                await sender.ping(timeout_s=5)
                await s.close()
                await got_eof.wait()
                assert received == PAYLOAD
                n.cancel_scope.cancel()

    trio.run(main)
