"""aioquic's `QuicConnection` with the things libp2p over QUIC needs and aioquic
has no option for (overlay/p2p/quic.py drives it):

* the server requests the client's certificate (libp2p authenticates both sides);
* a stream's receive window (MAX_STREAM_DATA) follows what the application has
  read (`consumed`), not what has arrived (aioquic's default doubles it on arrival),
  so a slow reader holds at most STREAM_WINDOW unread bytes;
* with our BBR controller ("bbr", overlay/p2p/quic_bbr.py) the pacer sends at the
  controller's pacing rate (aioquic's paces at cwnd / srtt), and the controller hears
  when the sender left cwnd unused for want of data (app-limited rate samples).
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import NetworkAddress, QuicConnection

from overlay.p2p.quic_bbr import BbrCongestionControl, BbrPacer

#: Unread bytes a stream may hold: its receive window beyond what was read.
STREAM_WINDOW = 4 * 1024 * 1024


class Libp2pQuicConnection(QuicConnection):
    """aioquic's connection with the two libp2p needs it has no option for: the
    server requests the client's certificate, and stream credit follows reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.consumed: dict[int, int] = {}
        super().__init__(*args, **kwargs)
        cc = self._loss._cc
        self._bbr = cc if isinstance(cc, BbrCongestionControl) else None
        if self._bbr is not None:
            self._loss._pacer = BbrPacer(self._bbr, max_datagram_size=self._max_datagram_size)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        out = super().datagrams_to_send(now)
        bbr = self._bbr
        # Neither the pacer (it sets _pacing_at) nor cwnd stopped the send: the
        # application had no more to give, so rate samples until then are app-limited.
        if bbr is not None and self._pacing_at is None \
                and bbr.bytes_in_flight + self._max_datagram_size <= bbr.congestion_window:
            bbr.on_app_limited()
        return out

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
