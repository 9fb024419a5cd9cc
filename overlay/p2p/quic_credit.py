"""aioquic's `QuicConnection` with the things libp2p over QUIC needs and aioquic
has no option for (overlay/p2p/quic.py drives it):

* the server requests the client's certificate (libp2p authenticates both sides);
* a stream's receive window (MAX_STREAM_DATA) follows what the application has
  read (`consumed`), not what has arrived (aioquic's default doubles it on arrival),
  so a slow reader holds at most STREAM_WINDOW unread bytes;
* with our BBR controller ("bbr", overlay/p2p/quic_bbr.py) the pacer sends at the
  controller's pacing rate (aioquic's paces at cwnd / srtt), and the controller hears
  when the sender left cwnd unused for want of data (app-limited rate samples);
* path MTU discovery (overlay/p2p/quic_pmtud.py, the search itself): PING + PADDING
  probes, a lost probe is not congestion (RFC 9000 §14.4), the datagram size of the
  packet builder, the pacer and the congestion controller follows the search, and
  the peer's max_udp_payload_size caps it;
* a stream's send buffer (`SendBuffer`) that does not copy what is unacknowledged
  on every write (aioquic's bytearray does: see the class).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.buffer import size_uint_var
from aioquic.quic.connection import END_STATES, NetworkAddress, QuicConnection
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicPacketBuilderStop,
    QuicSentPacket,
)
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStream

from overlay.p2p.quic_bbr import BbrCongestionControl, BbrPacer
from overlay.p2p.quic_pmtud import BASE_PLPMTU, Pmtud

#: Unread bytes a stream may hold: its receive window beyond what was read.
STREAM_WINDOW = 4 * 1024 * 1024
#: aioquic writes a STREAM or CRYPTO frame's length as a 2-byte varint: at most this
#: many data bytes per frame. Larger datagrams carry several frames (see
#: `_write_stream_frame`).
MAX_FRAME_DATA = 16383
#: Another frame in the same packet only with at least this much room (header ≤ 19).
_MIN_FRAME_ROOM = 64
#: Stream writes smaller than this are gathered into one chunk of a SendBuffer.
COALESCE_BYTES = 64 * 1024


class SendBuffer:
    """The send buffer of an aioquic stream (`QuicStreamSender._buffer`): the same
    three operations aioquic uses (`+=` a write, `[a:b]` a frame's bytes, `del [:n]`
    the acknowledged front), without the copies aioquic's bytearray makes.

    Why: `del bytearray[:n]` only moves the array's start, and the next `+=` that must
    grow it mallocs a new block and copies everything still unacknowledged (up to
    HIGH_WATER_BYTES, 4 MiB) into fresh pages: a 256 KiB write cost ~0.5-1 ms. With
    this buffer a sender's CPU per 16 KiB packet fell from ~140 to ~125 µs (our
    connections back to back in one process, no sockets). Here a write is kept
    as it came (a list of chunks; writes under COALESCE_BYTES are gathered into one
    bytearray so tiny writes do not make a long list), a frame's bytes are a view of
    one chunk (aioquic copies them into `bytes` at once) or, across chunks, joined;
    the acknowledged front is dropped chunk by chunk. Nothing unacknowledged is ever
    copied. Lookup by offset: bisect over the chunks' start offsets."""

    __slots__ = ("_chunks", "_end", "_first", "_start", "_starts")

    def __init__(self, data: bytes | bytearray = b"") -> None:
        self._chunks: list[bytes | bytearray] = []
        self._starts: list[int] = []  # offset of each chunk's first byte
        self._first = 0  # index of the first chunk not wholly acknowledged
        self._start = 0  # offset of the first unacknowledged byte
        self._end = 0
        self.__iadd__(data)

    def __len__(self) -> int:
        return self._end - self._start

    def __iadd__(self, data: bytes | bytearray | memoryview) -> SendBuffer:
        n = len(data)
        if not n:
            return self
        chunks = self._chunks
        if n < COALESCE_BYTES:
            last = chunks[-1] if len(chunks) > self._first else None
            if isinstance(last, bytearray) and len(last) < COALESCE_BYTES:
                last += data
            else:
                chunks.append(bytearray(data))
                self._starts.append(self._end)
        else:
            chunks.append(bytes(data))  # no copy when it is bytes already
            self._starts.append(self._end)
        self._end += n
        return self

    def __getitem__(self, key: slice) -> bytes | memoryview:
        # aioquic asks for [a:b] with 0 <= a <= b <= len: no slice.indices needed.
        start = key.start or 0
        stop = len(self) if key.stop is None else min(key.stop, len(self))
        if stop <= start:
            return b""
        a, b = self._start + start, self._start + stop
        i = bisect_right(self._starts, a, self._first) - 1
        off = a - self._starts[i]
        chunk = self._chunks[i]
        if off + (b - a) <= len(chunk):
            return memoryview(chunk)[off:off + b - a]
        parts: list[memoryview] = []
        while a < b:
            chunk = self._chunks[i]
            off = a - self._starts[i]
            take = min(len(chunk) - off, b - a)
            parts.append(memoryview(chunk)[off:off + take])
            a += take
            i += 1
        return b"".join(parts)

    def __delitem__(self, key: slice) -> None:
        if key.start not in (None, 0) or key.step is not None:
            raise ValueError("SendBuffer deletes from the front only")
        self._start += min(max(key.stop or 0, 0), len(self))
        chunks, starts = self._chunks, self._starts
        while self._first < len(chunks) \
                and starts[self._first] + len(chunks[self._first]) <= self._start:
            chunks[self._first] = b""  # its memory goes now
            self._first += 1
        if self._first >= 64 and self._first * 2 >= len(chunks):
            del chunks[:self._first]
            del starts[:self._first]
            self._first = 0


class PmtudRecovery(QuicPacketRecovery):
    """aioquic's loss recovery that tells the path MTU search what became of large
    packets, and takes a lost probe out of flight without a congestion event."""

    def __init__(self, pmtud: Pmtud, on_black_hole: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pmtud = pmtud
        self.on_black_hole = on_black_hole
        #: Packet numbers of probes in flight (at most a few: one at a time).
        self.probe_pns: set[int] = set()

    def on_ack_received(self, *, ack_rangeset: Any, ack_delay: float, now: float,
                        space: QuicPacketSpace) -> None:
        # One look per ACK frame, not per packet: its largest packet, if large, shows
        # the path carries large packets (resets black-hole suspicion).
        if space.is_application_data:
            pkt = space.sent_packets.get(ack_rangeset.bounds().stop - 1)
            if pkt is not None and pkt.sent_bytes > BASE_PLPMTU:
                self.pmtud.on_large_acked(pkt.packet_number)
        super().on_ack_received(ack_rangeset=ack_rangeset, ack_delay=ack_delay, now=now,
                                space=space)

    def _on_packets_lost(self, *, congestion_event: bool = True, now: float,
                         packets: Iterable[QuicSentPacket],
                         persistent_congestion: bool = False,
                         space: QuicPacketSpace) -> None:
        if not space.is_application_data:
            super()._on_packets_lost(congestion_event=congestion_event, now=now,
                                     packets=packets,
                                     persistent_congestion=persistent_congestion,
                                     space=space)
            return
        rest: list[QuicSentPacket] = []
        probes: list[QuicSentPacket] = []
        for p in packets:
            (probes if p.packet_number in self.probe_pns else rest).append(p)
        if probes:  # RFC 9000 §14.4: not a congestion signal
            self.probe_pns.difference_update(p.packet_number for p in probes)
            super()._on_packets_lost(congestion_event=False, now=now, packets=probes,
                                     space=space)
        if rest:
            super()._on_packets_lost(congestion_event=congestion_event, now=now,
                                     packets=rest,
                                     persistent_congestion=persistent_congestion,
                                     space=space)
            large = [p.packet_number for p in rest if p.sent_bytes > BASE_PLPMTU]
            if large and self.pmtud.on_loss_burst(large, now):
                self.on_black_hole()


class Libp2pQuicConnection(QuicConnection):
    """aioquic's connection with the two libp2p needs it has no option for: the
    server requests the client's certificate, and stream credit follows reads;
    and path MTU discovery when given a `pmtud` search."""

    def __init__(self, *args: Any, pmtud: Pmtud | None = None, **kwargs: Any) -> None:
        self.consumed: dict[int, int] = {}
        self.pmtud = pmtud
        self.peer_max_udp_payload: int | None = None
        self._now = 0.0
        super().__init__(*args, **kwargs)
        if pmtud is not None:
            cfg = kwargs["configuration"]
            # Ours replaces aioquic's before anything holds it (spaces come later).
            self._loss = PmtudRecovery(
                pmtud, self._pmtud_black_hole,
                congestion_control_algorithm=cfg.congestion_control_algorithm,
                initial_rtt=cfg.initial_rtt, max_datagram_size=self._max_datagram_size,
                peer_completed_address_validation=not self._is_client,
                quic_logger=self._quic_logger, send_probe=self._send_probe,
                logger=self._logger)
        cc = self._loss._cc
        self._bbr = cc if isinstance(cc, BbrCongestionControl) else None
        if self._bbr is not None:
            self._loss._pacer = BbrPacer(self._bbr, max_datagram_size=self._max_datagram_size)

    @property
    def max_datagram_size(self) -> int:
        return int(self._max_datagram_size)

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        self._now = now  # for the probe's delivery callback, which gets no time
        super().receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        self._now = now
        super().handle_timer(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        self._now = now
        # The probe goes first: stream data would otherwise fill the window it needs.
        probe = self._send_pmtud_probe(now) if self.pmtud is not None else []
        out = super().datagrams_to_send(now)
        bbr = self._bbr
        # Neither the pacer (it sets _pacing_at) nor cwnd stopped the send: the
        # application had no more to give, so rate samples until then are app-limited.
        if bbr is not None and self._pacing_at is None \
                and bbr.bytes_in_flight + self._max_datagram_size <= bbr.congestion_window:
            bbr.on_app_limited()
        return probe + out if probe else out

    # ------------------------------------------------------------ path MTU

    def _send_pmtud_probe(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """One PING + PADDING datagram of the search's probe size, when one is due and
        the congestion window has room for it (RFC 8899 §3 item 7)."""
        pmtud = self.pmtud
        assert pmtud is not None
        if not self._handshake_confirmed or self._state in END_STATES \
                or self._close_pending or not self._network_paths[0].is_validated:
            return []
        size = pmtud.probe_size(now)
        # The probe needs room in the window; one larger than the whole window (a slow
        # path's, with a 64 KiB ceiling) goes alone when nothing else is in flight, or
        # the search would never end.
        loss = self._loss
        if size is None or self._version is None or (
                loss.congestion_window - loss.bytes_in_flight < size
                and (loss.bytes_in_flight or size <= loss.congestion_window)):
            return []
        builder = QuicPacketBuilder(
            host_cid=self.host_cid, is_client=self._is_client, max_datagram_size=size,
            packet_number=self._packet_number, peer_cid=self._peer_cid.cid,
            peer_token=self._peer_token, quic_logger=self._quic_logger,
            spin_bit=self._spin_bit, version=self._version)
        pn = builder.packet_number
        builder.start_packet(QuicPacketType.ONE_RTT, self._cryptos[tls.Epoch.ONE_RTT])
        builder.start_frame(QuicFrameType.PING, capacity=1,
                            handler=self._on_pmtud_probe, handler_args=(pn,))
        # The builder pads a 1-RTT packet to the datagram's end (RFC 9000 §14.4).
        builder._datagram_needs_padding = True
        out = self._flush_builder(builder=builder, network_path=self._network_paths[0],
                                  peer_cid=self._peer_cid.cid, now=now)
        pmtud.on_probe_sent(pn, size)
        assert isinstance(self._loss, PmtudRecovery)
        self._loss.probe_pns.add(pn)
        return out

    def _on_pmtud_probe(self, delivery: QuicDeliveryState, pn: int) -> None:
        pmtud = self.pmtud
        assert pmtud is not None
        if delivery == QuicDeliveryState.ACKED:
            assert isinstance(self._loss, PmtudRecovery)
            self._loss.probe_pns.discard(pn)
            size = pmtud.on_probe_acked(pn, self._now)
            if size != self._max_datagram_size:
                self._set_datagram_size(size)
        else:
            pmtud.on_probe_lost(pn, self._now)

    def _pmtud_black_hole(self) -> None:
        assert self.pmtud is not None
        self._set_datagram_size(self.pmtud.current)

    def _set_datagram_size(self, size: int) -> None:
        """The size every part of aioquic that sizes packets uses from now on."""
        self._max_datagram_size = size
        loss = self._loss
        loss._pacer._max_datagram_size = size
        cc: Any = loss._cc
        if self._bbr is not None:
            self._bbr.set_max_datagram_size(size)
        else:  # aioquic's reno and cubic
            cc._max_datagram_size = size
            if hasattr(cc, "additive_increase_factor"):
                cc.additive_increase_factor = size
            cc.congestion_window = max(cc.congestion_window, 2 * size)

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False
                                    ) -> None:
        # aioquic refuses max_udp_payload_size < 1200 (TRANSPORT_PARAMETER_ERROR) but
        # keeps no value: read it again so the search never probes above it.
        super()._parse_transport_parameters(data, from_session_ticket)
        params = pull_quic_transport_parameters(Buffer(data=data))
        limit = params.max_udp_payload_size
        if limit is not None:
            self.peer_max_udp_payload = limit
            if self.pmtud is not None:
                self.pmtud.limit(limit)
                if self._max_datagram_size > self.pmtud.current:
                    self._set_datagram_size(self.pmtud.current)

    # ------------------------------------------------------------ libp2p

    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        stream = super()._get_or_create_stream_for_send(stream_id)
        sender = stream.sender
        if type(sender._buffer) is bytearray:  # not swapped yet (before any write)
            # aioquic types it bytearray; SendBuffer has the operations it uses.
            sender._buffer = SendBuffer(sender._buffer)  # type: ignore[assignment]
        return stream

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True

    def _write_stream_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                            stream: QuicStream, max_offset: int) -> int:
        # aioquic writes one STREAM frame per stream per packet, its length in 2 bytes:
        # so datagrams above 16 KiB corrupted frames. Here each frame stops at
        # MAX_FRAME_DATA and frames follow one another while the packet has room, so a
        # datagram of up to 64 KiB carries several (fewer packets: aioquic's cost is
        # per packet). Returns the new bytes sent, as aioquic's does (its caller
        # charges them to the connection's flow-control credit).
        sender = stream.sender
        used = 0
        while True:
            last = self._write_last_stream_frame(builder, stream, max_offset)
            if last is not None:
                return used + last
            room = builder.remaining_buffer_space
            cap = min(max_offset, sender.next_offset + MAX_FRAME_DATA)
            try:
                used += super()._write_stream_frame(builder, space, stream, cap)
            except QuicPacketBuilderStop:
                if used or room != builder.remaining_buffer_space:
                    return used
                raise
            if room == builder.remaining_buffer_space or sender.buffer_is_empty \
                    or builder.remaining_flight_space < _MIN_FRAME_ROOM:
                return used

    def _write_last_stream_frame(self, builder: QuicPacketBuilder, stream: QuicStream,
                                 max_offset: int) -> int | None:
        """One STREAM frame without a length field (RFC 9000 §19.8: it runs to the
        packet's end) filling the rest of the packet, when that is more than a framed
        one may carry and the stream can fill all of it now; else None. One frame per
        64 KiB packet instead of four: aioquic's cost is per frame too. Filling the
        packet exactly is what makes it safe: nothing (another frame, PADDING) can
        follow it. Returns the new bytes sent, like `_write_stream_frame`."""
        sender, sid = stream.sender, stream.stream_id
        assert sid is not None
        start = sender.next_offset
        overhead = 1 + size_uint_var(sid) + (size_uint_var(start) if start else 0)
        room = builder.remaining_flight_space - overhead
        if room <= MAX_FRAME_DATA or builder.remaining_buffer_space < room + overhead:
            return None
        pending = sender._pending
        if not len(pending) or min(pending[0].stop, max_offset) - pending[0].start < room:
            return None  # less than the packet's room to send now: framed ones do
        before = sender.highest_offset
        frame = sender.get_frame(room, max_offset)
        assert frame is not None and len(frame.data) == room and frame.offset == start
        frame_type = QuicFrameType.STREAM_BASE | (4 if start else 0) | (1 if frame.fin else 0)
        buf = builder.start_frame(frame_type, capacity=overhead,
                                  handler=sender.on_data_delivery,
                                  handler_args=(start, start + room, frame.fin))
        buf.push_uint_var(sid)
        if start:
            buf.push_uint_var(start)
        buf.push_bytes(frame.data)
        return int(sender.highest_offset - before)

    def _write_crypto_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                            stream: QuicStream) -> bool:
        # One frame of at most MAX_FRAME_DATA (aioquic sizes it to the packet's room).
        excess = builder.remaining_flight_space - MAX_FRAME_DATA - 3 \
            - size_uint_var(stream.sender.next_offset)
        if excess <= 0:
            return bool(super()._write_crypto_frame(builder, space, stream))
        builder._flight_capacity -= excess
        try:
            return bool(super()._write_crypto_frame(builder, space, stream))
        finally:
            builder._flight_capacity += excess

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        consumed = self.consumed.get(stream.stream_id)
        if consumed is not None and stream.max_stream_data_local:
            target = consumed + STREAM_WINDOW
            if target - stream.max_stream_data_local >= STREAM_WINDOW // 4:
                stream.max_stream_data_local = target
            # Neutralise the doubling in the base class (it only triggers above half).
            saved = stream.receiver.highest_offset
            stream.receiver.highest_offset = 0
            try:
                super()._write_stream_limits(builder, space, stream)
            finally:
                stream.receiver.highest_offset = saved
            return
        super()._write_stream_limits(builder, space, stream)
