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
  the peer's max_udp_payload_size caps it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.connection import END_STATES, NetworkAddress, QuicConnection
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicSentPacket
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace

from overlay.p2p.quic_bbr import BbrCongestionControl, BbrPacer
from overlay.p2p.quic_pmtud import BASE_PLPMTU, Pmtud

#: Unread bytes a stream may hold: its receive window beyond what was read.
STREAM_WINDOW = 4 * 1024 * 1024


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
        if size is None or self._version is None \
                or self._loss.congestion_window - self._loss.bytes_in_flight < size:
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

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True

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
