"""A libp2p connection over any trio byte stream: multistream-select → Noise XX →
multistream-select → Yamux, then streams (trio driver of the sans-IO cores).

    conn = await upgrade(tcp_stream, keypair, initiator=True, expected_peer=peer)
    async with trio.open_nursery() as n:
        await n.start(conn.run, on_stream)     # reader and writer tasks
        s = await conn.open_stream(["/ipfs/ping/1.0.0"])
        await s.write(b"…"); data = await s.read()

`upgrade` works on a TCP stream, a WebRTC data channel or a relay circuit alike:
anything that is a `trio.abc.Stream`. overlay.p2p.host uses it for TCP; the
transport adapter exposes it as `Transport.attach_stream`.

Tasks: one reader per connection (socket → Noise → Yamux → stream buffers; it
never blocks on anything but the socket, so two peers sending to each other
cannot deadlock) and one writer (Yamux output → Noise frames → one `send_all`).
A stream's `write` flushes inline when the socket is free, saving the task
switch on request/response traffic. A peer's protocol error (bad Noise tag, bad
Yamux frame) closes the connection with a GoAway and a logged reason; it never
escapes `run`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Any

import structlog
import trio

from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.p2p import multistream, noise, yamux
from overlay.p2p.errors import (
    ConnectionClosedError,
    HandshakeError,
    MuxerError,
    NegotiationError,
    StreamClosedError,
    StreamResetError,
)
from overlay.p2p.negotiation_io import RECV_BYTES, BufferedIO, NoiseIO, secure

log = structlog.get_logger("colony.p2p")

#: A writer waits while more than this is queued for the socket on its connection.
HIGH_WATER_BYTES = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
#: A received piece shorter than this is copied rather than kept as a view of the
#: (up to 1 MiB) plaintext of its socket read: a view keeps all of it alive, and
#: a bulk stream's pieces are mostly whole Yamux frames of 256 KiB.
SMALL_PIECE_BYTES = 64 * 1024
#: The largest seal buffer a connection keeps between sends (`Connection._seal`).
SEAL_KEEP_BYTES = 8 * 1024 * 1024
#: Buffers per sendmsg call (Linux IOV_MAX is 1024).
_IOV_MAX = 512


async def _close_quietly(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0), suppress(
        trio.BrokenResourceError, trio.ClosedResourceError, OSError
    ):
        await stream.aclose()


async def upgrade(
    stream: trio.abc.Stream,
    keypair: KeyPair,
    *,
    initiator: bool,
    expected_peer: PeerId | None = None,
    remote_addr: str | None = None,
    max_window: int = yamux.DEFAULT_MAX_WINDOW,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
    suites: tuple[noise.NoiseSuite, ...] = (noise.CHACHA,),
) -> Connection:
    """Secure (Noise XX in the first of `suites` both ends speak) and multiplex
    (Yamux) `stream`; return the connection.

    The dialler (`initiator=True`) should name the peer it wants: a different
    peer answering is a HandshakeError. Raises only WireError subclasses (the
    peer misbehaved) or trio.TooSlowError; the caller closes `stream` then.
    """
    io = BufferedIO(stream)
    with trio.fail_after(timeout_s):
        try:
            peer, ciphers, suite = await secure(io, keypair.seed, initiator=initiator,
                                                expected_peer=expected_peer, suites=suites)
            nio = NoiseIO(io, ciphers)
            if initiator:
                await multistream.select_dialer(nio, [yamux.PROTOCOL_ID])
            else:
                await multistream.select_listener(nio, [yamux.PROTOCOL_ID])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise HandshakeError(f"connection lost during the handshake: {e}") from None
    # Plaintext that arrived with the negotiation (the peer's first Yamux frames),
    # then anything still encrypted: the connection's reader starts with these.
    leftover = b"".join([bytes(nio.plain), *nio.reader.feed_and_decrypt(nio.leftover)])
    return Connection(
        stream, ciphers, nio.reader, leftover, peer, keypair.peer_id,
        initiator=initiator, remote_addr=remote_addr, max_window=max_window,
        security=suite.protocol_id,
    )


class P2PStream:
    """One Yamux stream. `read` returns b"" at the peer's EOF."""

    __slots__ = ("_buf", "_buffered", "_readable", "_writable", "conn", "eof", "protocol",
                 "reset_reason", "sid")

    def __init__(self, conn: Connection, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.protocol = ""
        self._buf: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self.eof = False
        self.reset_reason: str | None = None
        self._readable = trio.Event()
        self._writable = trio.Event()

    @property
    def peer(self) -> PeerId:
        return self.conn.remote_peer

    # ------------------------------------------------------------ reading

    def _deliver(self, data: bytes | memoryview) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self._readable.set()

    def _end(self) -> None:
        self.eof = True
        self._readable.set()

    def _kill(self, reason: str) -> None:
        if self.reset_reason is None:
            self.reset_reason = reason
        self._readable.set()
        self._writable.set()

    async def read(self, max_bytes: int = RECV_BYTES) -> bytes | memoryview:
        """Up to `max_bytes` bytes; b"" at EOF; StreamResetError if reset.

        Returns a read-only view into a received Noise message when it can (no
        copy; the message is immutable and stays alive while the view does)."""
        while not self._buf:
            if self.reset_reason is not None:
                raise StreamResetError(self.reset_reason)
            if self.eof:
                return b""
            self._readable = trio.Event()
            await self._readable.wait()
        return self._take(max_bytes)

    def read_nowait(self, max_bytes: int) -> bytes | memoryview:
        """What `read` would return without waiting: b"" when nothing is buffered
        (also at EOF or after a reset, which the next `read` reports). Lets a bulk
        reader take every piece already received in one go, not one per wakeup."""
        return self._take(max_bytes) if self._buf else b""

    def _take(self, max_bytes: int) -> bytes | memoryview:
        first = self._buf[0]
        if len(first) <= max_bytes:
            self._buf.popleft()
            out = first
        else:
            out = first[:max_bytes]
            self._buf[0] = first[max_bytes:]
        self._buffered -= len(out)
        self.conn._consumed(self.sid, len(out))
        return out

    async def read_exact(self, n: int) -> bytes:
        parts: list[bytes | memoryview] = []
        need = n
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise NegotiationError("stream ended early")
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    # ------------------------------------------------------------ writing

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of `data` (waiting for window and socket room as needed)."""
        if not isinstance(data, bytes):
            data = bytes(data)  # the session keeps a view until it is sent
        view = memoryview(data)
        conn = self.conn
        while view:
            if self.reset_reason is not None:
                raise StreamResetError(self.reset_reason)
            if conn.closed:
                raise ConnectionClosedError(conn.close_reason or "connection closed")
            try:
                n = conn.session.send(self.sid, view)
            except MuxerError:
                if self.reset_reason is not None:
                    raise StreamResetError(self.reset_reason) from None
                raise StreamClosedError(f"stream {self.sid} is closed for writing") from None
            if n:
                view = view[n:]
                await conn._flush()
            else:
                await self._writable.wait()  # set and replaced by the window update

    @property
    def gone(self) -> bool:
        """Nothing can be written any more: the stream was reset or its connection
        closed. The transport checks this before reusing a stream, so that a request
        goes on a new stream instead of failing on a connection known to be dead."""
        return self.reset_reason is not None or self.conn.closed

    async def close(self) -> None:
        """Half-close (FIN): the peer reads EOF; we may still read."""
        if self.reset_reason is None and not self.conn.closed:
            self.conn.session.close_stream(self.sid)
            self.conn._forget_if_done(self)
            await self.conn._flush()

    async def reset(self) -> None:
        if self.reset_reason is None and not self.conn.closed:
            self.conn.session.reset_stream(self.sid)
            self._kill("reset by us")
            self.conn.streams.pop(self.sid, None)
            self.conn._wake_writer()


OnStream = Callable[[P2PStream], Awaitable[None]]


class Connection:
    """A secured, multiplexed connection; run it with `await nursery.start(conn.run, …)`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ciphers: noise.CipherPair,
        reader: noise.FrameReader,
        leftover_plaintext: bytes,
        remote_peer: PeerId,
        local_peer: PeerId,
        *,
        initiator: bool,
        remote_addr: str | None,
        max_window: int,
        security: str = noise.PROTOCOL_ID,
    ) -> None:
        self.stream = stream
        #: The Noise suite's multistream id (`/noise` or `/colony/noise-aesgcm/1.0.0`).
        self.security = security
        self.ciphers = ciphers
        self.reader = reader
        self._leftover = leftover_plaintext
        self.remote_peer = remote_peer
        self.local_peer = local_peer
        self.initiator = initiator
        self.remote_addr = remote_addr
        self.session = yamux.Session(client=initiator, max_window=max_window)
        self.streams: dict[int, P2PStream] = {}
        self.closed = False
        self.close_reason: str | None = None
        #: Why the peer's bytes were refused (a bad Noise tag, a bad Yamux frame), if so.
        self.protocol_error: str | None = None
        self._send_lock = trio.Lock()
        self._writer_wake = trio.Event()
        self._drained = trio.Event()
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._pings: dict[int, trio.Event] = {}
        #: Ciphertext taken from the session and not yet sent, in order.
        self._unsent: list[bytes | memoryview] = []
        self._sealbuf = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------ lifecycle

    async def run(
        self,
        on_stream: OnStream | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the connection until it closes; inbound streams go to `on_stream`
        (each in its own task; an exception there resets that stream only)."""
        try:
            async with trio.open_nursery() as n:
                self._nursery = n
                n.start_soon(self._writer)
                task_status.started()
                try:
                    await self._reader(n, on_stream)
                finally:
                    n.cancel_scope.cancel()
        finally:
            self._shutdown(self.close_reason or "closed")
            await _close_quietly(self.stream)
            self._done.set()

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def close(self, reason: str = "closed") -> None:
        """GoAway, then close the socket (the reader then ends `run`)."""
        if self.closed:
            return
        self.session.go_away(yamux.GO_AWAY_NORMAL)
        # Best effort: the peer may be gone already; closing must not fail.
        with trio.move_on_after(1.0), suppress(ConnectionClosedError):
            await self._flush()
        self._shutdown(reason)
        await _close_quietly(self.stream)

    def _shutdown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for s in list(self.streams.values()):
            s._kill(f"connection closed: {reason}")
        self.streams.clear()
        self._writer_wake.set()
        self._drained.set()
        for ev in self._pings.values():
            ev.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------ streams

    async def open_stream(self, protocols: Iterable[str]) -> P2PStream:
        """A new stream, negotiated to the first of `protocols` the peer accepts."""
        if self.closed:
            raise ConnectionClosedError(self.close_reason or "connection closed")
        try:
            sid = self.session.open_stream()
        except MuxerError as e:
            raise ConnectionClosedError(str(e)) from None
        s = P2PStream(self, sid)
        self.streams[sid] = s
        try:
            s.protocol = await multistream.select_dialer(s, protocols)
        except BaseException:
            with trio.CancelScope(shield=True):
                await s.reset()
            raise
        return s

    def _consumed(self, sid: int, n: int) -> None:
        before = self.session.outbound_bytes
        self.session.consumed(sid, n)
        if self.session.outbound_bytes != before:
            self._wake_writer()

    def _forget_if_done(self, s: P2PStream) -> None:
        if not self.session.is_open(s.sid) and s.eof:
            self.streams.pop(s.sid, None)

    async def ping(self, timeout_s: float = 10.0) -> float:
        """Round-trip time of a Yamux ping (not /ipfs/ping: no stream needed)."""
        value = (len(self._pings) + int(trio.current_time() * 1000)) & 0xFFFFFFFF
        ev = self._pings[value] = trio.Event()
        started = trio.current_time()
        try:
            self.session.ping(value)
            self._wake_writer()
            with trio.fail_after(timeout_s):
                await ev.wait()
        finally:
            self._pings.pop(value, None)
        if self.closed:
            raise ConnectionClosedError(self.close_reason or "connection closed")
        return trio.current_time() - started

    # ------------------------------------------------------------ reading

    async def _reader(self, nursery: trio.Nursery, on_stream: OnStream | None) -> None:
        reason = "eof"
        try:
            if self._leftover:
                self._handle(self.session.receive_data(self._leftover), nursery, on_stream)
                self._leftover = b""
            if isinstance(self.stream, trio.SocketStream):
                await self._read_socket(self.stream.socket, nursery, on_stream)
            else:
                decrypt = self.reader.feed_and_decrypt
                receive = self._receiver()
                while True:
                    data = await receive()
                    if not data:
                        break
                    self.bytes_in += len(data)
                    for plain in decrypt(data):
                        self._handle(self.session.receive_data(plain), nursery, on_stream)
        except WireError as e:
            reason = self.protocol_error = f"{type(e).__name__}: {e}"
            log.info("connection_dropped", peer=str(self.remote_peer), reason=reason[:200])
            code = yamux.GO_AWAY_PROTOCOL_ERROR
            self.session.go_away(code)
            with trio.move_on_after(1.0), suppress(ConnectionClosedError):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            reason = f"connection lost: {e}"
        self._shutdown(reason)

    async def _read_socket(self, sock: trio.socket.SocketType, nursery: trio.Nursery,
                           on_stream: OnStream | None) -> None:
        """The TCP path: read into the Noise reader's ring, decrypt what arrived whole
        into one buffer, parse it as Yamux in one call (`FrameReader.recv_buffer`)."""
        reader = self.reader
        while True:
            n = await sock.recv_into(reader.recv_buffer())
            if not n:
                return
            self.bytes_in += n
            plain = reader.decrypt_received(n)
            if plain is not None:
                self._handle(self.session.receive_data(plain), nursery, on_stream)

    def _receiver(self) -> Callable[[], Awaitable[bytes | memoryview]]:
        """`receive_some`, or on a TCP socket `recv_into` one reused buffer: a
        fresh 256 KiB bytes object per read costs page faults (it is above
        malloc's mmap threshold); the Noise reader copies out what it keeps."""
        if not isinstance(self.stream, trio.SocketStream):
            stream = self.stream

            async def receive_some() -> bytes | memoryview:
                return await stream.receive_some(RECV_BYTES)

            return receive_some
        sock = self.stream.socket
        buf = memoryview(bytearray(RECV_BYTES))

        async def recv_into() -> bytes | memoryview:
            n = await sock.recv_into(buf)
            return buf[:n]

        return recv_into

    def _handle(
        self, events: list[yamux.Event], nursery: trio.Nursery, on_stream: OnStream | None
    ) -> None:
        streams = self.streams
        for ev in events:
            if isinstance(ev, yamux.DataReceived):
                s = streams.get(ev.sid)
                if s is not None:
                    # A piece is a view of everything one socket read decrypted (up
                    # to 1 MiB): a small one is copied, so a reader that leaves it
                    # unread does not keep the whole buffer alive.
                    data = ev.data
                    s._deliver(data if len(data) >= SMALL_PIECE_BYTES else bytes(data))
                else:  # nobody will read it: give the window back at once
                    self.session.consumed(ev.sid, len(ev.data))
            elif isinstance(ev, yamux.SendWindowOpened):
                s = streams.get(ev.sid)
                if s is not None:  # wake every writer waiting, then re-arm
                    s._writable.set()
                    s._writable = trio.Event()
            elif isinstance(ev, yamux.StreamOpened):
                s = streams[ev.sid] = P2PStream(self, ev.sid)
                if on_stream is None:
                    self.session.reset_stream(ev.sid)
                    streams.pop(ev.sid, None)
                else:
                    nursery.start_soon(self._serve_stream, on_stream, s)
            elif isinstance(ev, yamux.StreamEnded):
                s = streams.get(ev.sid)
                if s is not None:
                    s._end()
                    self._forget_if_done(s)
            elif isinstance(ev, yamux.StreamReset):
                s = streams.pop(ev.sid, None)
                if s is not None:
                    s._kill("reset by peer")
            elif isinstance(ev, yamux.PingAcked):
                waiter = self._pings.get(ev.value)
                if waiter is not None:
                    waiter.set()
            elif isinstance(ev, yamux.GoAwayReceived):
                log.debug("go_away_received", peer=str(self.remote_peer), code=ev.code)
        if self.session.outbound_bytes:
            self._wake_writer()  # ACKs, window updates, ping answers

    async def _serve_stream(self, on_stream: OnStream, s: P2PStream) -> None:
        try:
            await on_stream(s)
        except Exception as e:  # a handler bug or a bad peer costs this stream only
            log.info("stream_handler_failed", peer=str(self.remote_peer),
                     protocol=s.protocol, error=repr(e)[:200])
            await s.reset()

    # ------------------------------------------------------------ writing

    def _wake_writer(self) -> None:
        self._writer_wake.set()

    async def _flush(self) -> None:
        """Send what the session has queued: inline when the socket is free,
        else leave it to the writer task (and wait while too much is queued).

        Only a TCP socket is written inline: there a cancelled sender leaves the
        exact unsent bytes in `_unsent` for the next one. Another stream (a relay
        circuit, a WebRTC channel) cannot say how much a cancelled `send_all` sent,
        so only the writer task, cancelled with the connection alone, writes it."""
        if self.closed:
            raise ConnectionClosedError(self.close_reason or "connection closed")
        if not self._send_lock.locked() and isinstance(self.stream, trio.SocketStream):
            await self._send_pending()
            return
        self._wake_writer()
        while self.session.outbound_bytes > HIGH_WATER_BYTES and not self.closed:
            # Writers share the event; the sender sets and replaces it (one per waiter
            # lost all wake-ups but the last: docs/reliability.md, relayed stall;
            # tests/unit/p2p/test_connection_drain.py, test_p2p_connection_writers.py).
            await self._drained.wait()

    async def _send_pending(self) -> None:
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no extra checkpoint: the send below is one
        try:
            while (self._unsent or self.session.outbound_bytes) and not self.closed:
                if not self._unsent:
                    self._unsent.append(self._seal(self.session.take_outbound()))
                try:
                    await self._send_parts(self._unsent)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    self._shutdown(f"send failed: {e}")
                    raise ConnectionClosedError(f"send failed: {e}") from None
            self._drained.set()
            self._drained = trio.Event()
        finally:
            lock.release()
            if self._unsent and not self.closed:
                # A sender cancelled mid-frame: the writer task sends the rest (the
                # peer would otherwise wait forever for the end of a Noise message).
                self._wake_writer()

    def _seal(self, out: list[bytes | memoryview]) -> memoryview:
        """`out` sealed into the connection's buffer (`noise.seal_into`); called only
        with `_unsent` empty, i.e. when nothing refers to the buffer's bytes."""
        need = noise.sealed_bytes_max(out)
        buf = self._sealbuf
        if len(buf) < need:
            buf = bytearray(need)
            self._sealbuf = buf if need <= SEAL_KEEP_BYTES else bytearray()
        n = noise.seal_into(self.ciphers.send, out, buf)
        return memoryview(buf)[:n]

    async def _send_parts(self, views: list[bytes | memoryview]) -> None:
        """Send `views` in order, removing what was sent: one vectored send
        (sendmsg) at a time on a TCP socket, no join of a megabyte of ciphertext
        into yet another buffer. Other streams get one `send_all`."""
        if not isinstance(self.stream, trio.SocketStream):
            data = b"".join(views)
            views.clear()
            await self.stream.send_all(data)
            self.bytes_out += len(data)
            return
        sock = self.stream.socket
        while views:
            sent = await sock.sendmsg(views[:_IOV_MAX])
            self.bytes_out += sent
            i = 0
            while i < len(views) and sent >= len(views[i]):
                sent -= len(views[i])
                i += 1
            del views[:i]
            if sent:
                views[0] = memoryview(views[0])[sent:]

    async def _writer(self) -> None:
        while not self.closed:
            await self._writer_wake.wait()
            self._writer_wake = trio.Event()
            try:
                await self._send_pending()
            except ConnectionClosedError:
                return
