"""One libp2p-over-QUIC connection (overlay/p2p/quic.py's endpoint drives it): its
streams, the libp2p certificate check at handshake, aioquic's events turned into
stream deliveries. Moved out of quic.py (600-line cap), unchanged."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Protocol

import structlog
import trio
from aioquic.quic import events

from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.p2p import multistream, quic_tls
from overlay.p2p.errors import ConnectionClosedError, HandshakeError
from overlay.p2p.quic_credit import STREAM_WINDOW, Libp2pQuicConnection
from overlay.p2p.quic_stream import QuicStream

log = structlog.get_logger("colony.p2p.quic")

#: Application error code we close with when the peer's certificate is refused.
ERR_HANDSHAKE = 0x1


class Endpoint(Protocol):
    """What a connection uses of its QuicEndpoint (no import cycle)."""

    keypair: KeyPair
    drops: Counter[str]

    def transmit(self, c: QuicConn) -> None: ...
    wall_clock: Callable[[], float]
    def spawn_stream(self, s: QuicStream) -> None: ...


class QuicConn:
    """One QUIC connection to a peer; streams are `QuicStream`s."""

    def __init__(
        self, endpoint: Endpoint, quic: Libp2pQuicConnection, addr: tuple[str, int],
        *, initiator: bool, expected_peer: PeerId | None,
    ) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.addr = addr
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.local_peer = endpoint.keypair.peer_id
        self.remote_peer: PeerId = expected_peer or self.local_peer  # set on handshake
        self.remote_addr: str | None = f"/ip4/{addr[0]}/udp/{addr[1]}/quic-v1"
        self.streams: dict[int, QuicStream] = {}
        self.verified = False
        self.closed = False
        self.close_reason: str | None = None
        self.ready = trio.Event()
        self.progress = trio.Event()
        self._done = trio.Event()
        self._early: list[events.QuicEvent] = []
        self._max_inbound_sid = -1
        self.bytes_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------ streams

    async def open_stream(self, protocols: Iterable[str]) -> QuicStream:
        """A new bidirectional stream negotiated to the first of `protocols` accepted."""
        if self.closed:
            raise ConnectionClosedError(self.close_reason or "connection closed")
        sid = self.quic.get_next_available_stream_id()
        s = self._add_stream(sid)
        try:
            s.protocol = await multistream.select_dialer(s, protocols)
        except BaseException:
            with trio.CancelScope(shield=True):
                await s.reset()
            raise
        return s

    def _add_stream(self, sid: int) -> QuicStream:
        s = self.streams[sid] = QuicStream(self, sid)
        self.quic.consumed[sid] = 0
        return s

    # -- what QuicStream calls

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.quic.send_stream_data(sid, data, end)
        self.bytes_out += len(data)
        self.endpoint.transmit(self)

    def unacked(self, sid: int) -> int:
        stream = self.quic._streams.get(sid)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def consumed(self, sid: int, n: int) -> None:
        if sid in self.quic.consumed:
            before = self.quic.consumed[sid]
            self.quic.consumed[sid] = before + n
            if (before + n) // (STREAM_WINDOW // 4) != before // (STREAM_WINDOW // 4):
                self.endpoint.transmit(self)

    def reset_stream(self, sid: int) -> None:
        # Either half may be finished already in aioquic (it then raises): best effort.
        with suppress(Exception):
            self.quic.reset_stream(sid, 0)
        with suppress(Exception):
            self.quic.stop_stream(sid, 0)
        self.forget(sid)
        self.endpoint.transmit(self)

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.quic.consumed.pop(sid, None)

    def _locally_initiated(self, sid: int) -> bool:
        return (sid & 1) == (0 if self.initiator else 1)

    # ------------------------------------------------------------ lifecycle

    async def close(self, reason: str = "closed") -> None:
        if not self.closed:
            self.quic.close(error_code=0, reason_phrase=reason[:100])
            self.endpoint.transmit(self)
            self._shutdown(reason)

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def wait_progress(self) -> None:
        """Until the next batch of datagrams or timer (ACKs free the send buffer)."""
        if self.progress.is_set():
            self.progress = trio.Event()
        await self.progress.wait()

    def _shutdown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for s in list(self.streams.values()):
            s._kill(f"connection closed: {reason}")
        self.streams.clear()
        self.ready.set()
        self.progress.set()
        self._done.set()

    # ------------------------------------------------------------ events

    def handle(self, ev: events.QuicEvent) -> None:
        if isinstance(ev, events.HandshakeCompleted):
            self._verify(ev)
        elif isinstance(ev, events.ConnectionTerminated):
            self._shutdown(ev.reason_phrase or f"terminated (code {ev.error_code})")
        elif isinstance(ev, events.StreamDataReceived | events.StreamReset):
            if not self.verified:
                self._early.append(ev)  # 1-RTT data can overtake the client's Finished
            else:
                self._stream_event(ev)

    def _verify(self, ev: events.HandshakeCompleted) -> None:
        try:
            if ev.alpn_protocol != quic_tls.ALPN:
                raise HandshakeError(f"ALPN {ev.alpn_protocol!r}, not {quic_tls.ALPN!r}")
            tls = self.quic.tls
            cert = tls._peer_certificate
            chain = ([cert] if cert is not None else []) + list(tls._peer_certificate_chain)
            now = dt.datetime.fromtimestamp(self.endpoint.wall_clock(), dt.UTC)
            self.remote_peer = quic_tls.verify_chain(chain, now, self.expected_peer)
        except WireError as e:
            self.endpoint.drops["handshake_refused"] += 1
            log.info("quic_handshake_refused", addr=self.remote_addr, reason=str(e)[:200])
            self.quic.close(error_code=ERR_HANDSHAKE, reason_phrase=str(e)[:100])
            self.endpoint.transmit(self)
            self._shutdown(f"{type(e).__name__}: {e}")
            return
        self.verified = True
        self.ready.set()
        early, self._early = self._early, []
        for queued in early:
            self._stream_event(queued)

    def _stream_event(self, ev: events.QuicEvent) -> None:
        if isinstance(ev, events.StreamReset):
            s = self.streams.pop(ev.stream_id, None)
            if s is not None:
                s._kill("reset by peer")
            return
        assert isinstance(ev, events.StreamDataReceived)
        sid = ev.stream_id
        s = self.streams.get(sid)
        if s is None:
            if self._locally_initiated(sid) or sid & 2:
                # Data on a stream we closed, or a unidirectional stream (libp2p uses none).
                if sid & 2:
                    self.endpoint.drops["unidirectional_stream"] += 1
                return
            if sid <= self._max_inbound_sid:  # one we reset and forgot: late data
                return
            self._max_inbound_sid = sid
            s = self._add_stream(sid)
            self.endpoint.spawn_stream(s)
        self.bytes_in += len(ev.data)
        if ev.data:
            s._deliver(ev.data)
        if ev.end_stream:
            s._end()
