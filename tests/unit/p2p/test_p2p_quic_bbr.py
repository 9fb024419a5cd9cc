"""The BBR controller (overlay.p2p.quic_bbr) against a synthetic path on fake time: one
bottleneck (rate, FIFO queue with a byte limit: tail drop is real congestion),
propagation delay, seeded random loss, an ACK per packet, loss declared a little
after the ACK that would have come. The sender sends while cwnd and the pacer allow,
as aioquic's connection does. aioquic's own NewReno runs the same path for a
comparison made in the same test. Plus the windowed-max table, a hypothesis property
(cwnd stays within its bounds for any callback sequence) and a real QUIC pair on
127.0.0.1 with "bbr" selected."""

from __future__ import annotations

import heapq
import os
import random
from dataclasses import dataclass, field

import trio
from aioquic.quic.congestion.base import QuicCongestionControl, create_congestion_control
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.p2p.quic import QuicEndpoint, negotiate_inbound
from overlay.p2p.quic_bbr import (
    MAX_CWND_BYTES,
    MIN_CWND_PACKETS,
    BbrCongestionControl,
    BbrPacer,
    Mode,
    WindowedMax,
)
from overlay.p2p.quic_stream import QuicStream

MDS = 1200
T0 = 1000.0  # fake clock start: trio's clock is arbitrary too, never 0


def pkt(pn: int, now: float, size: int = MDS) -> QuicSentPacket:
    return QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                          is_crypto_packet=False, packet_number=pn,
                          packet_type=QuicPacketType.ONE_RTT, sent_time=now, sent_bytes=size)


@dataclass
class Path:
    """A bottleneck link in fake time. Rates in bytes/s, times in s."""

    rate: float = 1_200_000.0
    one_way_s: float = 0.040
    queue_bytes: int = 400_000
    loss: float = 0.0
    seed: int = 1
    link_free: float = T0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass
class Run:
    cc: QuicCongestionControl
    path: Path
    now: float = T0
    pn: int = 0
    delivered: int = 0
    lost: int = 0
    trace: list[tuple[float, int, float, str]] = field(default_factory=list)
    events: list[tuple[float, int, str, QuicSentPacket | None]] = field(default_factory=list)
    next_send: float = T0
    pacer_rate: float = 0.0
    app_bytes: float = float("inf")
    send_pending: bool = False
    seq: int = 0

    def pacing_rate(self) -> float:
        if isinstance(self.cc, BbrCongestionControl) and self.cc.pacing_rate > 0:
            return self.cc.pacing_rate
        return self.pacer_rate  # aioquic's: cwnd / srtt, set on RTT samples

    def send_what_fits(self) -> None:
        cc = self.cc
        while (self.app_bytes >= MDS and cc.bytes_in_flight + MDS <= cc.congestion_window
               and self.now >= self.next_send):
            p = pkt(self.pn, self.now)
            self.pn += 1
            self.app_bytes -= MDS
            cc.on_packet_sent(packet=p)
            rate = self.pacing_rate()
            self.next_send = self.now + (MDS / rate if rate > 0 else 0.0)
            path = self.path
            if path.rng.random() < path.loss:
                self._push(self.now + 2 * path.one_way_s + 0.01, "lost", p)
                continue
            start = max(self.now + path.one_way_s / 2, path.link_free)
            if (start - self.now - path.one_way_s / 2) * path.rate > path.queue_bytes:
                self._push(self.now + 2 * path.one_way_s + 0.01, "lost", p)  # tail drop
                continue
            path.link_free = start + MDS / path.rate
            self._push(path.link_free + 1.5 * path.one_way_s, "ack", p)
        if self.app_bytes < MDS and isinstance(cc, BbrCongestionControl):
            cc.on_app_limited()
        if self.next_send > self.now and not self.send_pending:
            self.send_pending = True  # one pacing wake-up at a time
            self._push(self.next_send, "send", None)

    def _push(self, at: float, kind: str, p: QuicSentPacket | None) -> None:
        self.seq += 1  # ties break in push order
        heapq.heappush(self.events, (at, self.seq, kind, p))

    def run_until(self, t: float) -> None:
        self.send_what_fits()
        while self.events and self.events[0][0] <= t:
            self.now, _, kind, p = heapq.heappop(self.events)
            if kind == "ack":
                assert p is not None
                self.cc.on_packet_acked(now=self.now, packet=p)
                rtt = self.now - (p.sent_time or 0.0)
                self.cc.on_rtt_measurement(now=self.now, rtt=rtt)
                self.pacer_rate = self.cc.congestion_window / rtt
                self.delivered += p.sent_bytes
            elif kind == "send":
                self.send_pending = False
            elif kind == "lost":
                assert p is not None
                self.cc.on_packets_lost(now=self.now, packets=[p])
                self.lost += p.sent_bytes
            mode = self.cc.mode.value if isinstance(self.cc, BbrCongestionControl) else ""
            self.trace.append((self.now, self.cc.congestion_window, self.pacing_rate(), mode))
            self.send_what_fits()
        self.now = t

    def goodput(self, since: float, until: float, delivered_at_since: int) -> float:
        return (self.delivered - delivered_at_since) / (until - since)


def bbr(seed: int = 7) -> BbrCongestionControl:
    return BbrCongestionControl(max_datagram_size=MDS, rng=random.Random(seed))


def test_bandwidth_estimate_converges_and_fills_the_pipe() -> None:
    r = Run(bbr(), Path())
    r.run_until(T0 + 3.0)
    cc = r.cc
    assert isinstance(cc, BbrCongestionControl)
    assert cc.mode is Mode.PROBE_BW
    assert 0.9 * 1.2e6 <= cc.btl_bw() <= 1.3 * 1.2e6
    assert 0.079 <= cc.min_rtt <= 0.085
    mark = r.delivered
    r.run_until(T0 + 8.0)
    assert r.goodput(T0 + 3.0, T0 + 8.0, mark) >= 0.9 * 1.2e6
    # Model-based, so no standing queue to speak of: the RTT stays near 80 ms.
    assert r.lost == 0


def test_two_percent_random_loss_does_not_collapse_cwnd() -> None:
    r = Run(bbr(), Path(loss=0.02, seed=3))
    r.run_until(T0 + 3.0)
    mark = r.delivered
    start = len(r.trace)
    r.run_until(T0 + 9.0)
    bdp = 1.2e6 * 0.080
    assert min(c for _, c, _, m in r.trace[start:] if m != "probe_rtt") >= bdp
    bbr_rate = r.goodput(T0 + 3.0, T0 + 9.0, mark)
    assert bbr_rate >= 0.8 * 0.98 * 1.2e6
    # aioquic's NewReno on the very same path (same loss seed) sits near Mathis.
    reno = Run(create_congestion_control("reno", max_datagram_size=MDS), Path(loss=0.02, seed=3))
    reno.run_until(T0 + 3.0)
    mark = reno.delivered
    reno.run_until(T0 + 9.0)
    assert bbr_rate >= 3 * reno.goodput(T0 + 3.0, T0 + 9.0, mark)


def test_a_slower_bottleneck_lowers_the_rate() -> None:
    """Real congestion as RTT growth: the bottleneck halves (a competing flow), the
    queue builds, delivery slows; within ~10 rounds the estimate follows."""
    r = Run(bbr(), Path())
    r.run_until(T0 + 4.0)
    cc = r.cc
    assert isinstance(cc, BbrCongestionControl)
    before = cc.btl_bw()
    r.path.rate = 600_000.0
    r.run_until(T0 + 9.0)  # rounds are ~0.3 s long once the queue has built
    assert cc.btl_bw() <= 0.6 * before
    assert cc.congestion_window <= 2.5 * 600_000 * 0.080 + cc.extra_acked.get() + 4 * MDS


def test_sustained_heavy_loss_is_congestion() -> None:
    r = Run(bbr(), Path())
    r.run_until(T0 + 4.0)
    cc = r.cc
    assert isinstance(cc, BbrCongestionControl)
    before = cc.btl_bw()
    r.path.loss = 0.35  # a policer, not noise
    r.run_until(T0 + 6.0)
    assert cc.congestion_rounds >= 1
    assert cc.btl_bw() <= 0.8 * before
    assert cc.pacing_rate <= 0.9 * before


def test_probe_rtt_happens_and_ends() -> None:
    r = Run(bbr(), Path())
    r.run_until(T0 + 25.0)
    modes = [m for _, _, _, m in r.trace]
    assert "probe_rtt" in modes
    first = modes.index("probe_rtt")
    assert "probe_bw" in modes[first:]
    # While probing, cwnd is at the 4-packet floor (after the flight drained).
    probing = [c for _, c, _, m in r.trace if m == "probe_rtt"]
    assert min(probing) == MIN_CWND_PACKETS * MDS
    # ... each time for about 200 ms plus a round, once per 10 s.
    starts, ends = [], []
    for (t, _, _, m), (_, _, _, prev) in zip(r.trace[1:], r.trace, strict=False):
        if m == "probe_rtt" and prev != "probe_rtt":
            starts.append(t)
        elif m != "probe_rtt" and prev == "probe_rtt":
            ends.append(t)
    assert len(starts) == len(ends) == 2
    assert all(0.2 <= e - s < 0.6 for s, e in zip(starts, ends, strict=True))
    assert 9.5 <= starts[1] - starts[0] <= 11.0


def test_app_limited_samples_do_not_lower_the_estimate() -> None:
    r = Run(bbr(), Path())
    r.run_until(T0 + 4.0)
    cc = r.cc
    assert isinstance(cc, BbrCongestionControl)
    before = cc.btl_bw()
    r.app_bytes = 0  # the application goes quiet, then trickles
    r.run_until(T0 + 5.0)
    for i in range(40):
        r.app_bytes = 2 * MDS
        r.run_until(T0 + 5.0 + 0.1 * (i + 1))
    assert cc.btl_bw() >= 0.9 * before


def test_persistent_congestion_drops_to_the_floor_then_regrows() -> None:
    r = Run(bbr(), Path())
    r.run_until(T0 + 3.0)
    cc = r.cc
    cc.on_persistent_congestion()
    assert cc.congestion_window == MIN_CWND_PACKETS * MDS
    r.run_until(T0 + 4.0)
    assert cc.congestion_window >= 1.2e6 * 0.080


def test_windowed_max_forgets_after_its_window() -> None:
    f = WindowedMax(10)
    table = [(1, 5.0, 5.0), (2, 3.0, 5.0), (5, 4.0, 5.0), (11, 2.0, 5.0), (12, 1.0, 4.0),
             (16, 1.0, 2.0), (30, 0.5, 0.5), (31, 7.0, 7.0)]
    for t, v, want in table:
        f.update(t, v)
        assert f.get() == want, (t, v)


_OPS = st.lists(st.tuples(st.sampled_from(
    ["send", "ack", "lose", "expire", "rtt", "persistent", "app_limited"]),
    st.floats(0.0, 0.5), st.integers(1, 1500), st.floats(0.0001, 3.0)), max_size=300)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS)
def test_cwnd_stays_within_bounds_for_any_sequence(
        ops: list[tuple[str, float, int, float]]) -> None:
    cc = bbr()
    now = T0
    out: list[QuicSentPacket] = []
    pn = 0
    for op, dt, size, rtt in ops:
        now += dt
        if op == "send":
            p = pkt(pn, now, size)
            pn += 1
            cc.on_packet_sent(packet=p)
            out.append(p)
        elif op in ("ack", "lose", "expire") and out:
            p = out.pop(size % len(out))
            if op == "ack":
                cc.on_packet_acked(now=now, packet=p)
            elif op == "lose":
                cc.on_packets_lost(now=now, packets=[p])
            else:
                cc.on_packets_expired(packets=[p])
        elif op == "rtt":
            cc.on_rtt_measurement(now=now, rtt=rtt)
        elif op == "persistent":
            cc.on_persistent_congestion()
        elif op == "app_limited":
            cc.on_app_limited()
        assert MIN_CWND_PACKETS * MDS <= cc.congestion_window <= MAX_CWND_BYTES
        assert cc.bytes_in_flight == sum(p.sent_bytes for p in out)
        assert len(cc.packets) == len(out)
        assert cc.pacing_rate >= 0


def test_a_real_quic_pair_runs_bbr_with_its_pacer() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    got = bytearray()

    async def sink(s: QuicStream) -> None:
        await negotiate_inbound(s, ["/colony/test-sink/1.0.0"])
        while data := await s.read():
            got.extend(data)
        await s.close()

    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=sink)
    b = QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32))
    a.congestion_control = b.congestion_control = "bbr"

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                addr = await n.start(a.run, ("127.0.0.1", 0))
                await n.start(b.run, ("127.0.0.1", 0))
                conn = await b.dial(addr, a.keypair.peer_id)
                cc = conn.quic._loss._cc
                assert isinstance(cc, BbrCongestionControl)
                assert isinstance(conn.quic._loss._pacer, BbrPacer)
                s = await conn.open_stream(["/colony/test-sink/1.0.0"])
                await s.write(payload)
                await s.close()
                assert await s.read() == b""
                # The peer's close can reach us before the ACK of the last data packet;
                # with PMTUD's 16 KiB packets, headers no longer make up for one packet
                # (seen in CI: 2,094,865 of 2,097,152 delivered at this point).
                while cc.delivered < len(payload):
                    await trio.sleep(0.01)
                assert cc.btl_bw() > 0
                n.cancel_scope.cancel()

    trio.run(main)
    assert bytes(got) == payload
