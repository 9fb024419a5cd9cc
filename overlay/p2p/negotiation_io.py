"""Byte I/O for a connection's negotiation phase, before the muxer runs.

`BufferedIO` reads exact counts from the raw stream (multistream-select, the Noise
handshake); `NoiseIO` does the same over the Noise channel for the muxer's
multistream-select and hands what it read past the negotiation to the connection.
"""

from __future__ import annotations

import trio

from overlay.p2p import noise
from overlay.p2p.errors import NegotiationError

#: Bytes per socket read (the connection's reader reuses one buffer of this size).
RECV_BYTES = 256 * 1024


class BufferedIO:
    """`read_exact`/`write` over a trio stream, for the negotiation phase."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some(RECV_BYTES)
            if not chunk:
                raise NegotiationError("connection closed during negotiation")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def take_leftover(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class NoiseIO:
    """Plaintext `read_exact`/`write` over the Noise channel (for the muxer's
    multistream-select); hands over its leftovers to the connection."""

    def __init__(self, io: BufferedIO, ciphers: noise.CipherPair) -> None:
        self.io = io
        self.ciphers = ciphers
        self.reader = noise.FrameReader(ciphers.recv)
        self.plain = bytearray()
        self.leftover = io.take_leftover()

    async def read_exact(self, n: int) -> bytes:
        while len(self.plain) < n:
            if self.leftover:
                chunk, self.leftover = self.leftover, b""
            else:
                chunk = await self.io.stream.receive_some(RECV_BYTES)
                if not chunk:
                    raise NegotiationError("connection closed during muxer negotiation")
            for p in self.reader.feed_and_decrypt(chunk):
                self.plain += p
        out = bytes(self.plain[:n])
        del self.plain[:n]
        return out

    async def write(self, data: bytes) -> None:
        await self.io.stream.send_all(noise.encrypt_frames(self.ciphers.send, data))
