"""One libp2p stream on a QUIC connection, with P2PStream's interface (overlay.p2p.connection):
`read` (b"" at EOF), `read_exact`, `write`, `close` (FIN), `reset`, `protocol`, `peer`.

The connection (overlay.p2p.quic.QuicConn) is reached through the narrow `StreamConn`
protocol: it queues data in aioquic, reports unacknowledged bytes for backpressure
and turns reads into flow-control credit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
import trio

from overlay.core.ids import PeerId
from overlay.p2p.errors import (
    ConnectionClosedError,
    NegotiationError,
    StreamClosedError,
    StreamResetError,
)

log = structlog.get_logger("colony.p2p.quic")

RECV_BYTES = 256 * 1024
#: A writer waits while more than this is unacknowledged on its stream.
HIGH_WATER_BYTES = 4 * 1024 * 1024
_WRITE_CHUNK = 256 * 1024


class StreamConn(Protocol):
    closed: bool
    close_reason: str | None
    remote_peer: PeerId
    remote_addr: str | None

    def send(self, sid: int, data: bytes, end: bool = False) -> None: ...
    def unacked(self, sid: int) -> int: ...
    def consumed(self, sid: int, n: int) -> None: ...
    def reset_stream(self, sid: int) -> None: ...
    def forget(self, sid: int) -> None: ...
    async def wait_progress(self) -> None: ...


class QuicStream:
    """A bidirectional QUIC stream. `read` returns b"" at the peer's FIN."""

    def __init__(self, conn: StreamConn, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.protocol = ""
        self._buf: deque[bytes] = deque()
        self.eof = False
        self.write_closed = False
        self.reset_reason: str | None = None
        self._readable = trio.Event()

    @property
    def peer(self) -> PeerId:
        return self.conn.remote_peer

    # -- from the connection

    def _deliver(self, data: bytes) -> None:
        self._buf.append(data)
        self._readable.set()

    def _end(self) -> None:
        self.eof = True
        self._readable.set()
        if self.write_closed:
            self.conn.forget(self.sid)

    def _kill(self, reason: str) -> None:
        if self.reset_reason is None:
            self.reset_reason = reason
        self._readable.set()

    # -- reading

    async def read(self, max_bytes: int = RECV_BYTES) -> bytes:
        while not self._buf:
            if self.reset_reason is not None:
                raise StreamResetError(self.reset_reason)
            if self.eof:
                return b""
            self._readable = trio.Event()
            await self._readable.wait()
        first = self._buf[0]
        if len(first) <= max_bytes:
            self._buf.popleft()
            out = first
        else:
            out = first[:max_bytes]
            self._buf[0] = first[max_bytes:]
        self.conn.consumed(self.sid, len(out))
        return out

    async def read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        need = n
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise NegotiationError("stream ended early")
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    # -- writing

    @property
    def gone(self) -> bool:
        """Nothing can be written any more (reset, or the connection closed)."""
        return self.reset_reason is not None or self.conn.closed

    def _check_writable(self) -> None:
        if self.reset_reason is not None:
            raise StreamResetError(self.reset_reason)
        if self.conn.closed:
            raise ConnectionClosedError(self.conn.close_reason or "connection closed")
        if self.write_closed:
            raise StreamClosedError(f"stream {self.sid} is closed for writing")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of `data`, waiting while too much is unacknowledged."""
        view = memoryview(data)
        while view:
            self._check_writable()
            while self.conn.unacked(self.sid) > HIGH_WATER_BYTES:
                await self.conn.wait_progress()
                self._check_writable()
            chunk, view = view[:_WRITE_CHUNK], view[_WRITE_CHUNK:]
            self.conn.send(self.sid, bytes(chunk))
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        """Half-close (FIN): the peer reads EOF; we may still read."""
        if self.reset_reason is None and not self.conn.closed and not self.write_closed:
            self.write_closed = True
            self.conn.send(self.sid, b"", end=True)
            if self.eof:
                self.conn.forget(self.sid)
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        if self.reset_reason is None and not self.conn.closed:
            self._kill("reset by us")
            self.conn.reset_stream(self.sid)
        await trio.lowlevel.checkpoint()


async def serve(on_stream: Callable[[QuicStream], Awaitable[None]], s: QuicStream) -> None:
    """Run an inbound stream's handler; its exception resets that stream only."""
    try:
        await on_stream(s)
    except Exception as e:
        log.info("quic_stream_handler_failed", peer=str(s.peer), protocol=s.protocol,
                 error=repr(e)[:200])
        await s.reset()
