"""A negotiated libp2p stream as a `trio.abc.Stream` (for relays, splicing, tests).

`Transport.open_stream(peer, protocol)` and `Transport.set_stream_handler(protocol,
handler)` hand these out: a plain byte stream, no Colony framing. Works the same
on either network stack.
"""

from __future__ import annotations

from contextlib import suppress

import trio

from overlay.core.ids import PeerId
from overlay.p2p.errors import StreamError
from overlay.runtime.net.transport_backend import BackendStream

READ_BYTES = 256 * 1024


class TransportStream(trio.abc.Stream):
    def __init__(self, net: BackendStream, peer: PeerId, protocol: str) -> None:
        self.net = net
        self.peer = peer
        self.protocol = protocol
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            return bytes(await self.net.read(max_bytes or READ_BYTES))
        except StreamError as e:
            raise trio.BrokenResourceError(str(e)) from None

    async def receive_pieces(self, max_bytes: int) -> list[bytes | memoryview]:
        """Up to `max_bytes` as the pieces received, uncopied: waits for the first,
        then takes whatever else is already received without waiting (on the native
        stack: read-only views of decrypted Noise messages, which stay valid; one
        piece on py-libp2p). [] at EOF. For bulk readers, which copy each byte once
        into what they keep, where `receive_some` copies every ≤ 64 KiB message and
        wakes the reader once per message."""
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            piece = await self.net.read(max_bytes)
            if not piece:
                return []
            out = [piece]
            n = len(piece)
            more = getattr(self.net, "read_nowait", None)
            while more is not None and n < max_bytes:
                piece = more(max_bytes - n)
                if not piece:
                    break
                out.append(piece)
                n += len(piece)
        except StreamError as e:
            raise trio.BrokenResourceError(str(e)) from None
        return out

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            await self.net.write(bytes(data))
        except StreamError as e:
            raise trio.BrokenResourceError(str(e)) from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """Half-close: the peer reads EOF; we may still receive."""
        try:
            await self.net.close()
        except StreamError as e:
            raise trio.BrokenResourceError(str(e)) from None

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            try:
                await self.net.close()
            except Exception:
                await self.reset()

    async def reset(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Exception):
            await self.net.reset()
