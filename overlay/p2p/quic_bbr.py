"""A BBR (v1) congestion controller for aioquic, registered as "bbr".

Model-based congestion control after Cardwell et al., "BBR: Congestion-Based
Congestion Control" (ACM Queue 14(5), 2016), draft-cardwell-iccrg-bbr-congestion-
control-00 (BBRv1) and Linux net/ipv4/tcp_bbr.c + tcp_rate.c, which it follows where
the two differ. Why we have it: NewReno and CUBIC cut their window on every loss, so
on a path with ~2 % random (non-congestive) loss and 80 ms RTT they sit at the Mathis
bound, ~0.13 MB/s, while the path carries 5 MB/s (docs/edge-nat.md, "loss response").
BBR instead estimates the path:

* per acked packet a delivery-rate sample (tcp_rate.c: bytes delivered between the
  packet's send and its ACK over the longer of the send and ACK intervals); app-limited
  samples only raise the estimate (the driver reports app-limited moments,
  `on_app_limited`);
* BtlBw = windowed max of the samples over 10 round trips (Kathleen Nichols' running
  min/max, lib/win_minmax.c); RTprop = min RTT over 10 s;
* STARTUP (gain 2/ln 2) until BtlBw grows < 25 % for 3 rounds, DRAIN (1/gain) until
  in flight ≤ BDP, PROBE_BW cycling pacing gains 5/4, 3/4, 1 ×6 (one phase per min RTT,
  starting at a random phase), PROBE_RTT (cwnd 4 packets for 200 ms and a round)
  when RTprop was not refreshed for 10 s;
* cwnd = cwnd_gain × BDP + ACK-aggregation allowance (tcp_bbr.c `extra_acked`, capped
  at 100 ms of BtlBw), pacing rate = pacing_gain × BtlBw (`pacing_rate`, which
  `BbrPacer` feeds to aioquic's pacer: aioquic's own paces at cwnd / srtt).

Loss: an isolated loss is not congestion here, so it changes nothing but bytes in
flight (Linux BBRv1 holds cwnd to packet conservation for a round; we do not, since on
a randomly lossy path that round repeats every few RTTs). Congestion shows as slower
delivery (the max filter forgets the old rate within 10 rounds) and, when a loss
sample (at least one round and LOSS_SAMPLE_PACKETS packets) loses more than
LOSS_THRESH of its bytes (a policer or an overflowing queue: the spirit of
tcp_bbr.c's long-term "lt_bw" policer mode, threshold 50/256), the bandwidth filter
restarts from the sample's delivery rate and cwnd from what it delivered per round.
The BDP uses an RTT of at least MIN_RTT_FLOOR_S (why: at that constant). Persistent
congestion (RFC 9002 §7.6) drops cwnd to the minimum, like an RTO in Linux; it
regrows at one ACKed byte per byte up to the model's target.

Invariants: MIN_CWND_PACKETS × datagram ≤ cwnd ≤ MAX_CWND_BYTES; pacing_rate > 0 once
an RTT is known; per-packet state is dropped on every exit aioquic reports (acked,
lost, expired) and bounded by MAX_TRACKED_PACKETS. Sans-IO: time comes from aioquic's
callbacks (`now`, `packet.sent_time`), randomness from the injected `rng`.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from typing import Any

from aioquic.quic.congestion.base import (
    K_INITIAL_WINDOW,
    QuicCongestionControl,
    register_congestion_control,
)
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import QuicPacketPacer

HIGH_GAIN = 2 / math.log(2)  # 2.885: doubles the delivery rate each round (STARTUP)
DRAIN_GAIN = 1 / HIGH_GAIN
CWND_GAIN = 2.0
PACING_GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW_S = 10.0
PROBE_RTT_DURATION_S = 0.2
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
MIN_CWND_PACKETS = 4
#: Our connection window (overlay/p2p/quic.py CONNECTION_WINDOW) caps a flight anyway.
MAX_CWND_BYTES = 16 * 1024 * 1024
#: A round losing more than this share of its bytes is congestion (tcp_bbr.c 50/256).
LOSS_THRESH = 50 / 256
#: The BDP uses at least this RTT. Below it the path is not what bounds a flight: our
#: sender and receiver are Python event loops on shared cores, descheduled for ms at a
#: time, so a cwnd of 2 x BtlBw x (0.2 ms loopback RTT) stalls the sender (loopback
#: bench: 1 ms floor 0.5-0.6 of NewReno's rate, 20 ms on a par). Costs BBR's small
#: queue on paths shorter than this: up to 2 x BtlBw x 20 ms in flight.
MIN_RTT_FLOOR_S = 0.020
#: ... judged over at least one round and this many packets (2 % random loss almost
#: never reaches 20 % of 64 packets: P < 1e-6 per sample).
LOSS_SAMPLE_PACKETS = 64
EXTRA_ACKED_WINDOW_ROUNDS = 5
EXTRA_ACKED_MAX_S = 0.1
MAX_TRACKED_PACKETS = 1 << 16


class Mode(enum.Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


class WindowedMax:
    """Max of (round, value) samples over the last `window` rounds, in O(1) memory
    (Linux lib/win_minmax.c: best, 2nd best and 3rd best in sub-windows)."""

    __slots__ = ("s", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.s: list[tuple[int, float]] = [(0, 0.0)] * 3

    def get(self) -> float:
        return self.s[0][1]

    def reset(self, t: int, v: float) -> None:
        self.s = [(t, v)] * 3

    def update(self, t: int, v: float) -> None:
        s = self.s
        if v >= s[0][1] or t - s[2][0] > self.window:
            self.reset(t, v)
            return
        if v >= s[1][1]:
            s[1] = s[2] = (t, v)
        elif v >= s[2][1]:
            s[2] = (t, v)
        # Age the sub-window choices (win_minmax.c minmax_subwin_update).
        dt = t - s[0][0]
        if dt > self.window:
            s[0], s[1], s[2] = s[1], s[2], (t, v)
            if t - s[0][0] > self.window:
                s[0], s[1] = s[1], s[2]
        elif s[1][0] == s[0][0] and dt > self.window / 4:
            s[1] = s[2] = (t, v)
        elif s[2][0] == s[1][0] and dt > self.window / 2:
            s[2] = (t, v)


class BbrCongestionControl(QuicCongestionControl):
    """BBRv1 behind aioquic's QuicCongestionControl interface (module docstring)."""

    def __init__(self, *, max_datagram_size: int, rng: random.Random | None = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.mds = max_datagram_size
        # Only the PROBE_BW start phase is random (anti phase-locking across flows).
        self.rng = rng if rng is not None else random.Random()
        self.min_cwnd = MIN_CWND_PACKETS * max_datagram_size
        self.initial_cwnd = K_INITIAL_WINDOW * max_datagram_size
        self.mode = Mode.STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self.bw = WindowedMax(BW_WINDOW_ROUNDS)
        self.min_rtt = math.inf
        self.min_rtt_stamp = 0.0
        self.smoothed_rtt: float | None = None
        # Delivery-rate bookkeeping (tcp_rate.c).
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited_until = 0  # `delivered` mark; 0: not app-limited
        self.packets: dict[int, tuple[int, float, float, bool]] = {}
        # Rounds.
        self.round_count = 0
        self.next_round_delivered = 0
        self.round_start = False
        self.sample_app_limited = False
        # Loss share over >= 1 round and LOSS_SAMPLE_PACKETS packets.
        self.loss_lost = 0
        self.loss_acked = 0
        self.loss_t0: float | None = None
        self.loss_rounds_start = 0
        self.lost_since_ack = False
        # STARTUP exit.
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.full_bw_reached = False
        # PROBE_BW / PROBE_RTT.
        self.cycle_index = 0
        self.cycle_stamp = 0.0
        self.probe_rtt_done = 0.0
        self.probe_rtt_round_done = False
        self.prior_cwnd = 0
        self.idle_restart = False
        # ACK aggregation (tcp_bbr.c bbr_update_ack_aggregation).
        self.extra_acked = WindowedMax(EXTRA_ACKED_WINDOW_ROUNDS)
        self.ack_epoch_stamp = 0.0
        self.ack_epoch_acked = 0
        # Counters for tests, logs and docs.
        self.congestion_rounds = 0
        self.untracked_acks = 0

    # ------------------------------------------------------------ the model

    def btl_bw(self) -> float:
        """Bottleneck bandwidth estimate, bytes/s (0 until the first sample)."""
        return self.bw.get()

    def bdp(self, gain: float) -> int:
        bw = self.btl_bw()
        if bw <= 0 or math.isinf(self.min_rtt):
            return self.initial_cwnd  # tcp_bbr.c bbr_bdp: no model yet
        return int(gain * bw * max(self.min_rtt, MIN_RTT_FLOOR_S))

    @property
    def pacing_rate(self) -> float:
        """Bytes/s the pacer should send at; 0 before any RTT is known."""
        bw = self.btl_bw()
        if bw > 0:
            return self.pacing_gain * bw
        rtt = self.smoothed_rtt or (None if math.isinf(self.min_rtt) else self.min_rtt)
        if not rtt:
            return 0.0
        return HIGH_GAIN * self.congestion_window / max(rtt, MIN_RTT_FLOOR_S)

    def set_max_datagram_size(self, size: int) -> None:
        """Path MTU discovery changed the datagram size (overlay/p2p/quic_pmtud.py).
        The model is in bytes, so only the packet-counted bounds follow; the window
        is never left below the new minimum (RFC 9002 §7.2: it is in datagrams)."""
        self.mds = size
        self.min_cwnd = MIN_CWND_PACKETS * size
        self.initial_cwnd = K_INITIAL_WINDOW * size
        self.congestion_window = self._clamp(self.congestion_window)

    def _clamp(self, cwnd: float) -> int:
        return int(min(max(cwnd, self.min_cwnd), MAX_CWND_BYTES))

    # ------------------------------------------------------------ aioquic callbacks

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        now = packet.sent_time or 0.0
        if self.bytes_in_flight == 0:
            # Restart from idle: the send interval starts now (tcp_rate.c), and
            # PROBE_BW paces at 1 × BtlBw rather than probing into an empty pipe.
            self.first_sent_time = now
            self.delivered_time = now
            if self.app_limited_until:
                self.idle_restart = True
                if self.mode is Mode.PROBE_BW:
                    self.pacing_gain = 1.0
        self.bytes_in_flight += packet.sent_bytes
        if len(self.packets) >= MAX_TRACKED_PACKETS:
            # Cannot happen while aioquic reports every exit; bounded all the same.
            self.packets.pop(next(iter(self.packets)))
        self.packets[id(packet)] = (
            self.delivered, self.delivered_time, self.first_sent_time,
            self.app_limited_until != 0,
        )

    def on_app_limited(self) -> None:
        """The sender had less to send than cwnd allowed (the driver calls this after
        building datagrams): samples of packets sent from now until all now in flight
        are delivered say little about the path (tcp_rate.c tcp_rate_check_app_limited)."""
        self.app_limited_until = max(self.delivered + self.bytes_in_flight, 1)

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self.packets.pop(id(packet), None)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self.loss_lost += packet.sent_bytes
            self.packets.pop(id(packet), None)
            self.lost_since_ack = True

    def on_persistent_congestion(self) -> None:
        # RFC 9002 §7.6.2; Linux BBR after an RTO likewise starts from a small window.
        self.prior_cwnd = max(self.prior_cwnd, self.congestion_window)
        self.congestion_window = self.min_cwnd

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        self.smoothed_rtt = rtt if self.smoothed_rtt is None else (
            0.875 * self.smoothed_rtt + 0.125 * rtt)
        if math.isinf(self.min_rtt):
            self.min_rtt, self.min_rtt_stamp = rtt, now
            return
        expired = now > self.min_rtt_stamp + MIN_RTT_WINDOW_S
        if rtt <= self.min_rtt or expired:
            self.min_rtt = rtt
            self.min_rtt_stamp = now
        if expired and not self.idle_restart and self.mode is not Mode.PROBE_RTT:
            self._enter_probe_rtt()

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.bytes_in_flight -= packet.sent_bytes
        acked = packet.sent_bytes
        self.delivered += acked
        self.delivered_time = now
        self.loss_acked += acked
        state = self.packets.pop(id(packet), None)
        if state is None:
            self.untracked_acks += 1
            return
        p_delivered, p_delivered_time, p_first_sent, p_app_limited = state
        if self.app_limited_until and self.delivered > self.app_limited_until:
            self.app_limited_until = 0
        sent_time = packet.sent_time or 0.0
        self.first_sent_time = sent_time
        # Rounds: a round ends when a packet sent after its start is acked.
        self.round_start = False
        if p_delivered >= self.next_round_delivered:
            self._end_round(now)
        # Delivery-rate sample (tcp_rate.c tcp_rate_gen): the longer interval wins
        # so ACK compression cannot inflate the rate; shorter than min RTT: noise.
        interval = max(sent_time - p_first_sent, now - p_delivered_time)
        self.sample_app_limited = p_app_limited
        if interval > 0 and interval >= min(self.min_rtt, 1.0):
            sample = (self.delivered - p_delivered) / interval
            if not p_app_limited or sample >= self.btl_bw():
                self.bw.update(self.round_count, sample)
        self._update_ack_aggregation(now, acked)
        self._update_mode(now, acked)
        self.lost_since_ack = False
        self.idle_restart = False
        self._set_cwnd(acked)

    # ------------------------------------------------------------ state machine

    def _end_round(self, now: float) -> None:
        self.next_round_delivered = self.delivered
        self.round_count += 1
        self.round_start = True
        total = self.loss_acked + self.loss_lost
        if self.loss_t0 is None or total >= LOSS_SAMPLE_PACKETS * self.mds:
            if self.loss_t0 is not None and self.loss_lost > LOSS_THRESH * total:
                self._on_congested_round(now, now - self.loss_t0)
            self.loss_acked = self.loss_lost = 0
            self.loss_t0 = now
            self.loss_rounds_start = self.round_count
        if self.mode is Mode.PROBE_RTT and self.probe_rtt_done:
            self.probe_rtt_round_done = True

    def _on_congested_round(self, now: float, span: float) -> None:
        """Heavy loss over a sample is congestion, not noise: believe only what was
        delivered meanwhile, and let the window follow (spirit of tcp_bbr.c lt_bw)."""
        self.congestion_rounds += 1
        if span > 0:
            rate = self.loss_acked / span
            if rate < self.btl_bw():
                self.bw.reset(self.round_count, rate)
        rounds = max(1, self.round_count - self.loss_rounds_start)
        self.congestion_window = self._clamp(
            min(self.congestion_window, self.loss_acked / rounds))
        if self.mode is Mode.STARTUP:
            self.full_bw_reached = True  # growth stopped: the pipe is full or policed
            self._enter_drain()

    def _update_ack_aggregation(self, now: float, acked: int) -> None:
        bw = self.btl_bw()
        expected = bw * (now - self.ack_epoch_stamp)
        if self.ack_epoch_acked <= expected or self.ack_epoch_stamp == 0.0:
            self.ack_epoch_acked = 0
            self.ack_epoch_stamp = now
            expected = 0.0
        self.ack_epoch_acked += acked
        extra = min(self.ack_epoch_acked - expected, self.congestion_window)
        self.extra_acked.update(self.round_count, extra)

    def _update_mode(self, now: float, acked: int) -> None:
        if self.mode is Mode.STARTUP:
            if self.round_start and not self.sample_app_limited:
                bw = self.btl_bw()
                if bw >= self.full_bw * FULL_BW_GROWTH:
                    self.full_bw, self.full_bw_count = bw, 0
                else:
                    self.full_bw_count += 1
                    if self.full_bw_count >= FULL_BW_ROUNDS:
                        self.full_bw_reached = True
            if self.full_bw_reached:
                self._enter_drain()
        if self.mode is Mode.DRAIN and self.bytes_in_flight <= self.bdp(1.0):
            self._enter_probe_bw(now, random_phase=True)
        elif self.mode is Mode.PROBE_BW and self._next_phase_due(now):
            self.cycle_index = (self.cycle_index + 1) % len(PACING_GAIN_CYCLE)
            self.cycle_stamp = now
            self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index]
        elif self.mode is Mode.PROBE_RTT:
            if not self.probe_rtt_done and self.bytes_in_flight <= self.min_cwnd:
                self.probe_rtt_done = now + PROBE_RTT_DURATION_S
                self.probe_rtt_round_done = False
                self.next_round_delivered = self.delivered
            elif self.probe_rtt_done and self.probe_rtt_round_done \
                    and now >= self.probe_rtt_done:
                self.min_rtt_stamp = now
                self.congestion_window = self._clamp(
                    max(self.congestion_window, self.prior_cwnd))
                if self.full_bw_reached:
                    self._enter_probe_bw(now, random_phase=False)
                else:
                    self.mode = Mode.STARTUP
                    self.pacing_gain = self.cwnd_gain = HIGH_GAIN

    def _next_phase_due(self, now: float) -> bool:
        full_length = now - self.cycle_stamp > self.min_rtt
        gain = self.pacing_gain
        if gain == 1.0:
            return full_length
        if gain > 1.0:
            # Probe until a full RTT passed and either the pipe held gain × BDP or
            # the probe caused loss (tcp_bbr.c bbr_is_next_cycle_phase).
            return full_length and (
                self.lost_since_ack or self.bytes_in_flight >= self.bdp(gain))
        return full_length or self.bytes_in_flight <= self.bdp(1.0)

    def _enter_drain(self) -> None:
        if self.mode is Mode.STARTUP:
            self.mode = Mode.DRAIN
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = HIGH_GAIN

    def _enter_probe_bw(self, now: float, *, random_phase: bool) -> None:
        self.mode = Mode.PROBE_BW
        self.cwnd_gain = CWND_GAIN
        n = len(PACING_GAIN_CYCLE)
        # Any phase but the 3/4 one (tcp_bbr.c: CYCLE_LEN - 1 - random(CYCLE_LEN - 1)).
        self.cycle_index = (n - 1 - self.rng.randrange(n - 1)) if random_phase else 2
        self.cycle_stamp = now
        self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index]

    def _enter_probe_rtt(self) -> None:
        self.mode = Mode.PROBE_RTT
        self.pacing_gain = 1.0
        self.cwnd_gain = 1.0
        self.prior_cwnd = self.congestion_window
        self.probe_rtt_done = 0.0
        self.probe_rtt_round_done = False

    def _set_cwnd(self, acked: int) -> None:
        target = self.bdp(self.cwnd_gain) + 3 * self.mds
        if self.full_bw_reached and self.btl_bw() > 0:
            target += int(min(self.extra_acked.get(), self.btl_bw() * EXTRA_ACKED_MAX_S))
        cwnd = self.congestion_window
        if self.full_bw_reached:
            cwnd = min(cwnd + acked, target)
        elif cwnd < target or self.delivered < self.initial_cwnd:
            cwnd += acked
        if self.mode is Mode.PROBE_RTT:
            cwnd = min(cwnd, self.min_cwnd)
        self.congestion_window = self._clamp(cwnd)

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.update(mode=self.mode.value, btl_bw=int(self.btl_bw()),
                    min_rtt=self.min_rtt, pacing_gain=self.pacing_gain,
                    rounds=self.round_count, congestion_rounds=self.congestion_rounds,
                    extra_acked=int(self.extra_acked.get()))
        return data


class BbrPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer at the controller's `pacing_rate` (aioquic's own
    computes cwnd / smoothed RTT, which for BBR is 2 × BtlBw: no pacing at all).
    Falls back to aioquic's rule until the controller has a rate."""

    def __init__(self, cc: BbrCongestionControl, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.cc = cc

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = self.cc.pacing_rate
        if rate <= 0:
            super().update_rate(congestion_window, smoothed_rtt)
            return
        mds = self._max_datagram_size
        self.packet_time = max(1e-6, min(mds / rate, 1.0))
        burst = max(2 * mds, min(congestion_window // 4, 16 * mds))
        self.bucket_max = burst / rate
        self.bucket_time = min(self.bucket_time, self.bucket_max)


def _factory(*, max_datagram_size: int) -> QuicCongestionControl:
    return BbrCongestionControl(max_datagram_size=max_datagram_size)


register_congestion_control("bbr", _factory)
