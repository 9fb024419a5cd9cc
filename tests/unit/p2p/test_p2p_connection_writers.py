"""Writers on one native connection: a cancelled send, many blocked writers.

A sender cancelled in the middle of a socket write must not cut a Noise message.

The native connection writes inline from the sending task when its socket is free.
A send timeout (or a stream reset that cancels its writer) can cancel that task after
`sendmsg` took only part of the ciphertext. Before the fix the rest was dropped: the
peer waited forever for the end of a Noise message and every later frame on the
connection vanished into it (the hostile-client test's 170 s slow path; a stalled
connection in general). Here a real socket pair with small buffers and a receiver
that stops reading makes the partial send certain.

Many writers waiting at once for the socket to drain must all wake. Each waiter used
to replace the connection's "drained" event with its own, so the sender woke only the
last one; the others waited forever with their data already sent (the relayed
DAG-stream stall: the provider's circuit writer never returned).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p import multistream
from overlay.p2p.connection import HIGH_WATER_BYTES, Connection, P2PStream, upgrade

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


async def _pair(
    n: trio.Nursery, on_stream: Callable[[P2PStream], Awaitable[None]]
) -> tuple[Connection, GatedStream]:
    """A connected (sender, receiver) pair over a socket pair with small buffers; the
    sender writes a real socket (the inline path), the receiver reads through a gate."""
    a, b = socket.socketpair()
    _small_buffers(a, b)
    ka, kb = KeyPair.generate(), KeyPair.generate()
    sender_io = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    gated = GatedStream(trio.SocketStream(trio.socket.from_stdlib_socket(b)))
    conns: list[Connection] = []

    async def up(io: trio.abc.Stream, key: KeyPair, peer: PeerId | None) -> None:
        conns.append(await upgrade(io, key, initiator=peer is not None, expected_peer=peer))

    async with trio.open_nursery() as hs:
        hs.start_soon(up, sender_io, ka, kb.peer_id)
        hs.start_soon(up, gated, kb, None)
    sender = next(c for c in conns if c.initiator)
    receiver = next(c for c in conns if not c.initiator)
    await n.start(sender.run)
    await n.start(receiver.run, on_stream)
    assert isinstance(sender.stream, trio.SocketStream)  # the inline path
    return sender, gated


def test_cancelled_inline_send_leaves_the_connection_whole() -> None:
    async def main() -> None:
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
                sender, gated = await _pair(n, on_stream)
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


def test_every_writer_waiting_for_the_socket_wakes() -> None:
    writers = 24  # 24 × 200 KiB queued > HIGH_WATER_BYTES (4 MiB): writers must wait
    assert writers * PAYLOAD > HIGH_WATER_BYTES

    async def main() -> None:
        async def sink(s: P2PStream) -> None:
            s.protocol = await multistream.select_listener(s, [PROTO])
            while await s.read():
                pass

        async with trio.open_nursery() as n:
            sender, gated = await _pair(n, sink)
            streams = [await sender.open_stream([PROTO]) for _ in range(writers)]
            gated.gate_open = trio.Event()  # the receiver stops reading
            done = 0

            async def write(s: P2PStream) -> None:
                nonlocal done
                await s.write(b"y" * PAYLOAD)
                done += 1

            with trio.move_on_after(15) as scope:
                async with trio.open_nursery() as w:
                    for s in streams:
                        w.start_soon(write, s)
                    await trio.sleep(0.3)  # all queued, most waiting for the drain
                    assert done < writers
                    gated.gate_open.set()
            assert not scope.cancelled_caught, f"{writers - done} writers never woke"
            assert done == writers
            n.cancel_scope.cancel()

    trio.run(main)
