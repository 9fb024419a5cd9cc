"""libp2p over QUIC v1 (`/ip4/…/udp/…/quic-v1`, libp2p specs quic/README.md): aioquic's
sans-IO QuicConnection driven from one trio UDP socket per endpoint.

    ep = QuicEndpoint(keypair, on_stream=handler)          # handler(QuicStream)
    async with trio.open_nursery() as n:
        await n.start(ep.run, ("127.0.0.1", 0))
        conn = await ep.dial(("127.0.0.1", port), expected_peer=peer)
        s = await conn.open_stream(["/ipfs/ping/1.0.0"])
        await s.write(b"…"); data = await s.read()

TLS 1.3 with the libp2p certificate (overlay.p2p.quic_tls), ALPN "libp2p", both
sides present a certificate (the server asks for the client's); the peer id comes
from the verified certificate. QUIC gives security and streams, so there is no Noise
and no Yamux: each bidirectional QUIC stream is one libp2p stream whose protocol is
negotiated with multistream-select, and `QuicStream` has P2PStream's interface
(read, read_exact, write, close, reset, protocol, peer).

Flow control follows the reader: a stream's receive window (MAX_STREAM_DATA) is
extended by what the application has read, not by what has arrived (aioquic's
default doubles it on arrival), so a slow reader holds at most STREAM_WINDOW
unread bytes. A writer waits while more than HIGH_WATER_BYTES of its stream are
unacknowledged. Bad input (a datagram that does not parse, a handshake that fails,
a peer certificate that does not verify, an exception inside aioquic) fails that
connection or drops that datagram with a counted reason; never the endpoint.

Invariant: one task per endpoint reads the socket (and drives timers); sends are
synchronous non-blocking `sendto`s with a queue for when the kernel buffer is full.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket as stdsocket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Any

import structlog
import trio
from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p import multistream, quic_path, quic_stream, quic_tls
from overlay.p2p.errors import HandshakeError, NegotiationError
from overlay.p2p.quic_conn import ERR_HANDSHAKE, QuicConn
from overlay.p2p.quic_credit import STREAM_WINDOW, Libp2pQuicConnection
from overlay.p2p.quic_pmtud import DEFAULT_MAX_BYTES, MAX_UDP_PAYLOAD, Pmtud
from overlay.p2p.quic_stream import QuicStream

__all__ = ["QuicConn", "QuicEndpoint", "negotiate_inbound"]

log = structlog.get_logger("colony.p2p.quic")

CONNECTION_WINDOW = 16 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
MAX_PENDING_HANDSHAKES = 64
#: QUIC's safe minimum path MTU payload: where every connection starts. With `pmtud`
#: (default) the search (quic_pmtud.py) raises it per connection to what the path
#: carries, up to PMTUD_MAX_BYTES; without, it stays (then set it only for paths known
#: to carry it: loopback, a LAN with jumbo frames).
MAX_DATAGRAM_SIZE = 1200
PMTUD_MAX_BYTES = DEFAULT_MAX_BYTES
#: The largest start (and fixed) size: handshake packets' length field (aioquic's,
#: 2 bytes) holds < 16384.
MAX_START_BYTES = 16384
#: Path MTU discovery for new endpoints (default on); an endpoint's own `pmtud` wins.
PMTUD = True
_CID_LENGTH = 8
_MIN_INITIAL_BYTES = 1200
_RECV_BYTES = 65536
#: Ours (quic_bbr.py); aioquic's "reno"/"cubic" sit at the Mathis bound on lossy paths.
CONGESTION_CONTROL = "bbr"
#: A hole-punch packet (DCUtR over QUIC: "UDP packets filled with random bytes").
PUNCH_PACKET_BYTES = 64

OnQuicStream = Callable[[QuicStream], Awaitable[None]]


class QuicEndpoint:
    """One UDP socket: listens for and dials QUIC connections, demultiplexed by
    destination connection id."""

    def __init__(
        self,
        keypair: KeyPair,
        *,
        on_stream: OnQuicStream | None = None,
        on_connection: Callable[[QuicConn], None] | None = None,
        wall_clock: Callable[[], float] | None = None,
        max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
        max_datagram_size: int = MAX_DATAGRAM_SIZE,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        pmtud: bool | None = None,
        pmtud_max_bytes: int = PMTUD_MAX_BYTES,
    ) -> None:
        self.handshake_timeout_s = handshake_timeout_s
        pmtud = PMTUD if pmtud is None else pmtud
        cap = max(pmtud_max_bytes, max_datagram_size) if not pmtud else pmtud_max_bytes
        if not 1200 <= max_datagram_size <= MAX_START_BYTES \
                or not max_datagram_size <= cap <= MAX_UDP_PAYLOAD:
            # Handshake packets have long headers, whose 2-byte length field aioquic
            # fills with the packet's (< 16384): the start size is bounded by that.
            # After the handshake only short headers: the search may go to 65527.
            raise ValueError(f"datagram sizes {max_datagram_size}..{pmtud_max_bytes}: the "
                             f"start not within 1200..{MAX_START_BYTES} or the ceiling "
                             f"not within it..{MAX_UDP_PAYLOAD}")
        #: Start size (fixed without `pmtud`); `pmtud_max_bytes` caps the search.
        self.max_datagram_size = max_datagram_size
        self.pmtud = pmtud
        self.pmtud_max_bytes = pmtud_max_bytes
        #: Congestion controller for new connections ("bbr", "reno", "cubic").
        self.congestion_control = CONGESTION_CONTROL
        self.keypair = keypair
        self.on_stream = on_stream
        self.on_connection = on_connection
        # Wall-clock time for certificate validity (aioquic runs on trio's clock).
        self.wall_clock = wall_clock or time.time
        self.max_pending_handshakes = max_pending_handshakes
        now = dt.datetime.fromtimestamp(self.wall_clock(), dt.UTC)
        self.certificate, self.private_key = quic_tls.make_certificate(keypair, now)
        self.drops: Counter[str] = Counter()
        self.conns: dict[bytes, QuicConn] = {}
        self.connections: set[QuicConn] = set()
        self.sock: trio.socket.SocketType | None = None
        self._raw: stdsocket.socket | None = None
        self.local_addr: tuple[str, int] = ("", 0)
        self._outq: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._out_wake = trio.Event()
        self._timer_wake = trio.Event()
        #: The deadline the timer task sleeps until (-inf while it runs timers): only
        #: an earlier one wakes it (a wake per receive batch cost a task switch).
        self._timer_at = -math.inf
        self._nursery: trio.Nursery | None = None

    def _config(self, client: bool) -> QuicConfiguration:
        cfg = QuicConfiguration(
            is_client=client,
            alpn_protocols=[quic_tls.ALPN],
            connection_id_length=_CID_LENGTH,
            idle_timeout=IDLE_TIMEOUT_S,
            max_data=CONNECTION_WINDOW,
            max_stream_data=STREAM_WINDOW,
            verify_mode=0,  # ssl.CERT_NONE: libp2p verifies the certificate itself
            supported_versions=[QuicProtocolVersion.VERSION_1],
            max_datagram_size=self.max_datagram_size,
            congestion_control_algorithm=self.congestion_control,
        )
        cfg.certificate = self.certificate
        cfg.private_key = self.private_key
        return cfg

    def _connection(self, client: bool, addr: tuple[str, int],
                    **kwargs: Any) -> Libp2pQuicConnection:
        search = None
        if self.pmtud:
            search = Pmtud(start=self.max_datagram_size, max_bytes=self.pmtud_max_bytes,
                           now=trio.current_time())
            if (route := quic_path.route_payload_limit(addr)) is not None:
                search.limit(route)
        return Libp2pQuicConnection(configuration=self._config(client), pmtud=search,
                                    **kwargs)

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.local_addr[0]}/udp/{self.local_addr[1]}/quic-v1"

    # ------------------------------------------------------------ running

    async def bind(self, addr: tuple[str, int]) -> tuple[str, int]:
        """Open the UDP socket (OSError if the address is taken); `run` serves it."""
        sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        try:
            for opt in (stdsocket.SO_RCVBUF, stdsocket.SO_SNDBUF):
                with suppress(OSError):
                    sock.setsockopt(stdsocket.SOL_SOCKET, opt, 4 * 1024 * 1024)
            if self.pmtud:
                quic_path.set_dont_fragment(sock)
            await sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.local_addr = sock.getsockname()[:2]
        return self.local_addr

    async def run(
        self, bind: tuple[str, int] = ("127.0.0.1", 0), *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; `task_status.started` gets the bound (host, port)."""
        if self.sock is None:
            await self.bind(bind)
        sock = self.sock
        assert sock is not None
        with sock:
            # Non-blocking calls on the same descriptor: a batch of datagrams costs no
            # task switch per datagram (trio's socket methods checkpoint on each).
            raw = stdsocket.socket(fileno=sock.fileno())
            raw.setblocking(False)
            self._raw = raw
            try:
                await self._serve(sock, raw, task_status)
            finally:
                self._raw = None
                self.sock = None
                raw.detach()

    async def _serve(
        self, sock: trio.socket.SocketType, raw: stdsocket.socket, task_status: Any
    ) -> None:
        async with trio.open_nursery() as n:
            self._nursery = n
            n.start_soon(self._timer_loop)
            n.start_soon(self._sender_loop)
            task_status.started(self.local_addr)
            try:
                await self._receive_loop(sock, raw)
            finally:
                for c in list(self.connections):
                    c.quic.close(error_code=0, reason_phrase="endpoint closing")
                    self.transmit(c)
                    c._shutdown("endpoint closed")
                n.cancel_scope.cancel()

    async def _receive_loop(self, sock: trio.socket.SocketType, raw: stdsocket.socket) -> None:
        touched: set[QuicConn] = set()
        while True:
            await trio.lowlevel.wait_readable(raw.fileno())
            # One clock read per batch: the batch is received within microseconds.
            now = trio.current_time()
            for _ in range(256):  # bounded batch, then let other tasks run
                try:
                    data, addr = raw.recvfrom(_RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP errors surface here on Linux: ignore
                    continue
                c = self._datagram(data, addr[:2], now)
                if c is not None:
                    touched.add(c)
            for c in touched:
                self.transmit(c)  # wakes the timer task if c's timer is now earlier
                c.progress.set()
            touched.clear()
            await trio.lowlevel.checkpoint()

    def _datagram(self, data: bytes, addr: tuple[str, int], now: float) -> QuicConn | None:
        # A short-header (1-RTT) packet of a known connection, nearly every datagram
        # of a stream: its destination connection id sits at bytes 1..8, so the demux
        # needs no header parse (aioquic parses it again anyway).
        c = self.conns.get(data[1:1 + _CID_LENGTH]) if data and not data[0] & 0x80 else None
        if c is None:
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=_CID_LENGTH)
            except ValueError as e:
                self.drops["malformed_header"] += 1
                log.debug("quic_datagram_dropped", addr=addr, reason=str(e)[:100])
                return None
            c = self.conns.get(header.destination_cid)
            if c is None:
                c = self._accept(data, header, addr)
                if c is None:
                    return None
        try:
            c.quic.receive_datagram(data, addr, now=now)
        except Exception as e:  # a bug or a hostile packet inside aioquic: this conn only
            self._fail(c, f"aioquic: {e!r}"[:200])
            return None
        self._drain_events(c)
        return c

    def _accept(self, data: bytes, header: Any, addr: tuple[str, int]) -> QuicConn | None:
        if header.packet_type != QuicPacketType.INITIAL:
            self.drops["unknown_connection"] += 1
            return None
        if header.version != QuicProtocolVersion.VERSION_1:
            self.drops["unsupported_version"] += 1
            self._send(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=[QuicProtocolVersion.VERSION_1]), addr)
            return None
        if len(data) < _MIN_INITIAL_BYTES:
            self.drops["short_initial"] += 1
            return None
        if self.on_stream is None:
            self.drops["not_listening"] += 1
            return None
        pending = sum(1 for x in self.connections if not x.verified and not x.initiator)
        if pending >= self.max_pending_handshakes:
            self.drops["too_many_handshakes"] += 1
            return None
        quic = self._connection(
            False, addr, original_destination_connection_id=header.destination_cid)
        c = QuicConn(self, quic, addr, initiator=False, expected_peer=None)
        self._register(c, header.destination_cid)
        return c

    def _register(self, c: QuicConn, *extra_cids: bytes) -> None:
        self.connections.add(c)
        self.conns[c.quic.host_cid] = c
        for cid in extra_cids:
            self.conns[cid] = c
        if self._nursery is not None:
            self._nursery.start_soon(self._watch, c)

    async def _watch(self, c: QuicConn) -> None:
        """Drop a connection whose handshake does not finish; then announce it."""
        with trio.move_on_after(self.handshake_timeout_s):
            await c.ready.wait()
        if not c.ready.is_set():
            self.drops["handshake_timeout"] += 1
            self._fail(c, "handshake timed out")
            return
        if c.verified and not c.initiator and self.on_connection is not None:
            self.on_connection(c)

    def _fail(self, c: QuicConn, reason: str) -> None:
        log.info("quic_connection_failed", addr=c.remote_addr, reason=reason)
        self.drops["connection_failed"] += 1
        with suppress(Exception):
            c.quic.close(error_code=ERR_HANDSHAKE, reason_phrase=reason[:100])
            self.transmit(c)
        c._shutdown(reason)
        self._forget(c)

    def _forget(self, c: QuicConn) -> None:
        self.connections.discard(c)
        for cid in [k for k, v in self.conns.items() if v is c]:
            del self.conns[cid]

    def _drain_events(self, c: QuicConn) -> None:
        while (ev := c.quic.next_event()) is not None:
            if isinstance(ev, events.ConnectionIdIssued):
                self.conns[ev.connection_id] = c
            elif isinstance(ev, events.ConnectionIdRetired):
                self.conns.pop(ev.connection_id, None)
            else:
                c.handle(ev)
                if isinstance(ev, events.ConnectionTerminated):
                    self._forget(c)

    def spawn_stream(self, s: QuicStream) -> None:
        if self.on_stream is None or self._nursery is None:
            s.conn.reset_stream(s.sid)
            return
        self._nursery.start_soon(quic_stream.serve, self.on_stream, s)

    # ------------------------------------------------------------ sending, timers

    def transmit(self, c: QuicConn) -> None:
        try:
            out = c.quic.datagrams_to_send(now=trio.current_time())
        except Exception as e:  # never let one connection's state stop the endpoint
            self._fail(c, f"aioquic send: {e!r}"[:200])
            return
        for data, addr in out:
            self._send(data, addr)
        t = c.quic.get_timer()
        if t is not None and t < self._timer_at:
            self._timer_wake.set()

    def send_punch(self, addr: tuple[str, int]) -> None:
        """Random bytes to `addr` from our socket: it opens our NAT's mapping toward
        the peer, whose QUIC Initial then gets in (DCUtR for QUIC). The fixed bit and
        the long-header bit are clear, so no QUIC stack takes it for a packet: the
        peer's endpoint drops it (counted there as `malformed_header`)."""
        data = bytearray(os.urandom(PUNCH_PACKET_BYTES))
        data[0] &= 0x3F
        self.drops["punch_packets_sent"] += 1
        self._send(bytes(data), addr)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._raw is None:
            return
        if not self._outq:
            try:
                self._raw.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self.drops["send_error"] += 1
                log.debug("quic_send_failed", addr=addr, error=str(e))
                return
        self._outq.append((data, addr))
        self._out_wake.set()

    async def _sender_loop(self) -> None:
        assert self.sock is not None
        while True:
            await self._out_wake.wait()
            self._out_wake = trio.Event()
            while self._outq:
                data, addr = self._outq[0]
                try:
                    await self.sock.sendto(data, addr)
                except OSError:
                    self.drops["send_error"] += 1
                self._outq.popleft()

    async def _timer_loop(self) -> None:
        while True:
            deadline = min(
                (t for c in self.connections if (t := c.quic.get_timer()) is not None),
                default=trio.current_time() + 1.0,
            )
            self._timer_at = deadline
            with trio.move_on_at(deadline):
                await self._timer_wake.wait()
            self._timer_wake = trio.Event()
            self._timer_at = -math.inf  # this pass recomputes the deadline anyway
            now = trio.current_time()
            for c in list(self.connections):
                t = c.quic.get_timer()
                if t is not None and t <= now:
                    try:
                        c.quic.handle_timer(now)
                    except Exception as e:
                        self._fail(c, f"aioquic timer: {e!r}"[:200])
                        continue
                    self._drain_events(c)
                    self.transmit(c)
                    c.progress.set()

    # ------------------------------------------------------------ dialling

    async def dial(
        self, addr: tuple[str, int], expected_peer: PeerId | None,
        timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> QuicConn:
        """A verified connection to the peer at `addr`; HandshakeError otherwise."""
        if self._raw is None:
            raise RuntimeError("endpoint is not running")
        quic = self._connection(True, addr)
        c = QuicConn(self, quic, addr, initiator=True, expected_peer=expected_peer)
        self._register(c)
        quic.connect(addr, now=trio.current_time())
        self._drain_events(c)
        self.transmit(c)
        with trio.move_on_after(timeout_s):
            await c.ready.wait()
        if not c.verified:
            reason = c.close_reason or "handshake timed out"
            if not c.closed:
                self._fail(c, reason)
            raise HandshakeError(f"QUIC to {addr[0]}:{addr[1]}: {reason}")
        return c


async def negotiate_inbound(s: QuicStream, protocols: Iterable[str]) -> str:
    """Listener side of multistream-select on an inbound QUIC stream."""
    try:
        return await multistream.select_listener(s, protocols)
    except NegotiationError:
        await s.reset()
        raise
