"""Datagram packetization-layer path MTU discovery (DPLPMTUD) for our QUIC: RFC 9000
§14.3 over RFC 8899, in the manner of quinn's `mtud.rs`. Sans-IO: the connection
(overlay/p2p/quic_credit.py) asks `probe_size(now)`, builds a PING + PADDING packet of
that size and reports what became of it; every input takes `now`.

Why: aioquic costs Python per packet, so at QUIC's safe 1200-byte datagrams a stream
on loopback reaches ~0.03 of our TCP+Noise+Yamux stream, at 16 KiB ~0.3 (bench/quic.py);
on an Ethernet path 1452..1472-byte datagrams carry ~20 % more per packet.

* Search (RFC 8899 §5.3): from the current size (BASE_PLPMTU or the configured start)
  up to `upper` = min(configured maximum, local route MTU - IP/UDP headers, the peer's
  `max_udp_payload_size`). The first probe is `upper` itself (on loopback and LANs the
  search ends in one round trip; above FIRST_PROBE_BYTES, two: that size first, then
  `upper`); if it fails, binary search, ending when the interval
  is under SEARCH_MIN_STEP_BYTES. A size fails after MAX_PROBES lost probes (RFC 8899
  MAX_PROBES = 3), so a random loss does not lower the ceiling.
* A probe is ack-eliciting and in flight (congestion controlled, RFC 8899 §3 item 7)
  but its loss is not a congestion signal (RFC 9000 §14.4): the connection removes it
  from bytes in flight only.
* An acknowledged probe raises the connection's datagram size at once (§5.2
  SEARCH_COMPLETE when the interval closes); the search runs again every
  REPROBE_INTERVAL_S (quinn: 600 s), the path may have grown.
* Black holes (RFC 8899 §4.3): a loss burst is suspicious when it loses a packet
  larger than BASE_PLPMTU sent after the last large packet that was acknowledged
  (a random loss on a path that carries large packets is followed by acked large
  packets). BLACK_HOLE_BURSTS suspicious bursts in a row fall back to BASE_PLPMTU and
  search again after REPROBE_INTERVAL_S.

Invariants: BASE_PLPMTU <= current <= upper; at most one probe in flight; a probe is
never larger than `upper`, and `upper` never exceeds the peer's advertised limit.
"""

from __future__ import annotations

import enum

#: QUIC's minimum: every path must carry 1200-byte UDP payloads (RFC 9000 §14).
BASE_PLPMTU = 1200
#: The largest UDP payload (RFC 9000 §18.2 max_udp_payload_size default, 65527).
MAX_UDP_PAYLOAD = 65527
#: Default configured maximum: any size the path carries (the route's MTU bounds the
#: search: 1472 on Ethernet, 65508 on loopback). aioquic writes STREAM and CRYPTO frame
#: lengths as 2-byte varints (< 16384); above 16 KiB our connection writes several
#: frames per packet (quic_credit.Libp2pQuicConnection._write_stream_frame).
DEFAULT_MAX_BYTES = MAX_UDP_PAYLOAD
#: The first probe of a search is at most this; once it is acknowledged the next tries
#: the ceiling itself. Why: a probe waits for room in the congestion window (RFC 8899
#: §3 item 7), and a slow path's window may never hold a 64 KiB probe, so a search
#: from a 64 KiB ceiling could stall where one from 16 KiB finishes.
FIRST_PROBE_BYTES = 16384
MAX_PROBES = 3
SEARCH_MIN_STEP_BYTES = 20
REPROBE_INTERVAL_S = 600.0
BLACK_HOLE_BURSTS = 3


class State(enum.Enum):
    SEARCHING = "searching"
    COMPLETE = "complete"


class Pmtud:
    """One connection's path MTU search (module docstring). Sizes are UDP payloads."""

    def __init__(self, *, start: int = BASE_PLPMTU, max_bytes: int = DEFAULT_MAX_BYTES,
                 now: float = 0.0) -> None:
        if not BASE_PLPMTU <= start <= max_bytes <= MAX_UDP_PAYLOAD:
            raise ValueError(f"PMTUD bounds {start}..{max_bytes} not within "
                             f"{BASE_PLPMTU}..{MAX_UDP_PAYLOAD}")
        self.current = start
        self.start = start
        self.upper = max_bytes
        self.state = State.SEARCHING
        self.next_search_at = now
        self._low = start
        self._high = max_bytes
        self._first = True  # the first probe of a search tries `_high` itself
        self._failures = 0
        #: (packet number, size) of the probe in flight.
        self.in_flight: tuple[int, int] | None = None
        self._large_acked_pn = -1
        self._bursts = 0
        self.probes_sent = 0
        self.probes_lost = 0
        self.black_holes = 0

    # ------------------------------------------------------------ bounds

    def limit(self, max_bytes: int) -> None:
        """Lower the ceiling (the peer's max_udp_payload_size, the local route MTU).
        The handshake already refused a peer limit below BASE_PLPMTU (RFC 9000 §7.4:
        TRANSPORT_PARAMETER_ERROR); anything smaller here is clamped, never trusted."""
        self.upper = max(BASE_PLPMTU, min(self.upper, max_bytes))
        self._high = min(self._high, self.upper)
        if self.current > self.upper:
            self.current = self._low = self.upper
        if self._low > self._high:
            self._low = self._high
        if self.in_flight is not None and self.in_flight[1] > self.upper:
            self.in_flight = None  # its answer no longer matters

    # ------------------------------------------------------------ probing

    def probe_size(self, now: float) -> int | None:
        """The size to probe now, or None (a probe in flight, search over, or idle)."""
        if self.in_flight is not None:
            return None
        if self.state is State.COMPLETE:
            if now < self.next_search_at or self.current >= self.upper:
                return None
            self._restart()
        if self._high - self._low < SEARCH_MIN_STEP_BYTES:
            self._complete(now)
            return None
        if self._first:
            return FIRST_PROBE_BYTES if self._low < FIRST_PROBE_BYTES < self._high \
                else self._high
        return (self._low + self._high + 1) // 2

    def on_probe_sent(self, pn: int, size: int) -> None:
        self.in_flight = (pn, size)
        self.probes_sent += 1

    def on_probe_acked(self, pn: int, now: float) -> int:
        """The probe arrived: the path carries its size. Returns the new datagram size."""
        if self.in_flight is None or self.in_flight[0] != pn:
            return self.current
        size = self.in_flight[1]
        self.in_flight = None
        self._failures = 0
        # The FIRST_PROBE_BYTES stage passed: the next probe tries the ceiling.
        self._first = size == FIRST_PROBE_BYTES < self._high
        self._low = max(self._low, size)
        self.current = max(self.current, size)
        self._large_acked_pn = max(self._large_acked_pn, pn)
        self._bursts = 0
        if self._high - self._low < SEARCH_MIN_STEP_BYTES:
            self._complete(now)
        return self.current

    def on_probe_lost(self, pn: int, now: float) -> None:
        if self.in_flight is None or self.in_flight[0] != pn:
            return
        size = self.in_flight[1]
        self.in_flight = None
        self.probes_lost += 1
        self._failures += 1
        if self._failures >= MAX_PROBES:  # RFC 8899 §5.1.3: the size is too large
            self._failures = 0
            self._first = False
            self._high = size - 1
            if self._high - self._low < SEARCH_MIN_STEP_BYTES:
                self._complete(now)

    # ------------------------------------------------------------ black holes

    def on_large_acked(self, pn: int) -> None:
        """A packet larger than BASE_PLPMTU, number `pn`, was acknowledged."""
        if pn > self._large_acked_pn:
            self._large_acked_pn = pn
            self._bursts = 0

    def on_loss_burst(self, lost_large_pns: list[int], now: float) -> bool:
        """Packets larger than BASE_PLPMTU (not probes) were declared lost together.
        True when that makes a black hole: the datagram size fell to BASE_PLPMTU."""
        if not any(pn > self._large_acked_pn for pn in lost_large_pns):
            return False
        self._bursts += 1
        if self._bursts < BLACK_HOLE_BURSTS or self.current <= BASE_PLPMTU:
            return False
        self.black_holes += 1
        self._bursts = 0
        self.current = self._low = BASE_PLPMTU
        self._high = self.upper
        self.in_flight = None
        self._complete(now)
        return True

    # ------------------------------------------------------------ internals

    def _restart(self) -> None:
        self.state = State.SEARCHING
        self._low = self.current
        self._high = self.upper
        self._first = True
        self._failures = 0

    def _complete(self, now: float) -> None:
        self.state = State.COMPLETE
        self.next_search_at = now + REPROBE_INTERVAL_S

