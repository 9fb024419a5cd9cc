"""Byte I/O for a connection's negotiation phase, before the muxer runs.

`BufferedIO` reads exact counts from the raw stream (multistream-select, the Noise
handshake); `secure` negotiates the Noise suite and runs the handshake over it;
`NoiseIO` does the same over the Noise channel for the muxer's
multistream-select and hands what it read past the negotiation to the connection.
"""

from __future__ import annotations

import trio

from overlay.core.ids import PeerId
from overlay.p2p import multistream, noise, noise_cipher
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


async def _read_noise_message(io: BufferedIO) -> bytes:
    header = await io.read_exact(2)
    return await io.read_exact(int.from_bytes(header, "big"))


async def secure(
    io: BufferedIO,
    identity_seed: bytes,
    *,
    initiator: bool,
    expected_peer: PeerId | None,
    suites: tuple[noise.NoiseSuite, ...],
) -> tuple[PeerId, noise.CipherPair, noise.NoiseSuite]:
    """multistream-select a Noise suite (the dialer offers `suites` in order, the
    listener accepts any of them), then the XX handshake in it.

    The choice is not authenticated (multistream-select is plaintext, and neither
    suite's handshake covers the list offered): someone on the path can answer `na`
    to AES-GCM and get `/noise` — still an authenticated, encrypted session, only a
    slower one (docs/transport.md, Known limits)."""
    ids = [s.protocol_id for s in suites]
    if initiator:
        chosen = await multistream.select_dialer(io, ids)
    else:
        chosen = await multistream.select_listener(io, ids)
    suite = noise_cipher.suite_of(chosen, suites)
    hs = noise.Handshake(initiator, identity_seed, expected_peer, suite=suite)
    if initiator:
        await io.write(hs.write_message())
        hs.read_message(await _read_noise_message(io))
        await io.write(hs.write_message())
    else:
        hs.read_message(await _read_noise_message(io))
        await io.write(hs.write_message())
        hs.read_message(await _read_noise_message(io))
    peer, ciphers = hs.result()
    return peer, ciphers, suite


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
