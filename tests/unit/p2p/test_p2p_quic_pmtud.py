"""Path MTU discovery (overlay.p2p.quic_pmtud): the sans-IO search driven by hand with
fake time and a fake path that carries datagrams up to `mtu` bytes; then two real
endpoints on 127.0.0.1 (the search reaches the ceiling, a peer's
max_udp_payload_size caps it, a too-small one is a protocol error)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from aioquic._buffer import Buffer
from aioquic.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from unit.p2p.test_p2p_quic import echo, roundtrip, run_endpoints, run_pair

from overlay.core.crypto import KeyPair
from overlay.p2p import quic_path
from overlay.p2p.errors import HandshakeError
from overlay.p2p.quic import QuicConn, QuicEndpoint
from overlay.p2p.quic_credit import Libp2pQuicConnection
from overlay.p2p.quic_pmtud import (
    BASE_PLPMTU,
    BLACK_HOLE_BURSTS,
    FIRST_PROBE_BYTES,
    MAX_PROBES,
    REPROBE_INTERVAL_S,
    SEARCH_MIN_STEP_BYTES,
    Pmtud,
    State,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus


def search(p: Pmtud, mtu: int, now: float = 0.0, lose_first: int = 0) -> list[int]:
    """Drive `p` over a path carrying up to `mtu` bytes (the first `lose_first` probes
    lost at random whatever their size); the sizes probed, in order."""
    probed: list[int] = []
    pn = 0
    while (size := p.probe_size(now)) is not None:
        assert len(probed) < 100, "search does not end"
        probed.append(size)
        pn += 1
        p.on_probe_sent(pn, size)
        now += 0.1
        if size <= mtu and len(probed) > lose_first:
            p.on_probe_acked(pn, now)
        else:
            p.on_probe_lost(pn, now)
    return probed


@pytest.mark.parametrize("mtu", [1200, 1252, 1452, 1472, 8972, 16384, 65507])
def test_search_ends_within_step_of_the_path_mtu_and_never_above(mtu: int) -> None:
    p = Pmtud(max_bytes=16384)
    probed = search(p, mtu)
    assert p.state is State.COMPLETE
    assert p.current <= mtu
    assert p.current > min(mtu, 16384) - SEARCH_MIN_STEP_BYTES
    assert max(probed) <= 16384
    # Each size too large costs MAX_PROBES probes; binary search: ~log2(15184/20) sizes.
    assert len(probed) <= 1 + 11 * MAX_PROBES


@pytest.mark.parametrize("mtu", [1472, 16384, 30000, 65508])
def test_default_ceiling_probes_16k_first_then_the_ceiling(mtu: int) -> None:
    p = Pmtud()  # ceiling 65527 (the route bounds it in a connection)
    probed = search(p, mtu)
    assert probed[0] == FIRST_PROBE_BYTES
    assert p.state is State.COMPLETE
    assert mtu - SEARCH_MIN_STEP_BYTES < p.current <= mtu
    if mtu >= FIRST_PROBE_BYTES:
        assert probed[1] == 65527  # then the ceiling itself
    if mtu == 65508:
        assert len(probed) <= 2 + MAX_PROBES + 12 * MAX_PROBES


def test_first_probe_is_the_ceiling_so_a_capable_path_takes_one_round_trip() -> None:
    p = Pmtud(max_bytes=16384)
    assert search(p, 65507) == [16384]
    assert p.current == 16384


def test_a_random_probe_loss_does_not_lower_the_ceiling() -> None:
    p = Pmtud(max_bytes=16384)
    probed = search(p, 65507, lose_first=MAX_PROBES - 1)
    assert probed == [16384] * MAX_PROBES
    assert p.current == 16384
    assert p.probes_lost == MAX_PROBES - 1


def test_limits_clamp_the_search_and_never_go_below_base() -> None:
    p = Pmtud(max_bytes=16384)
    p.limit(1452)  # the route: 1500 - 48
    p.limit(100_000)  # a larger limit later does not raise it
    assert search(p, 65507) == [1452]
    assert p.current == 1452
    q = Pmtud(start=16384, max_bytes=16384)
    q.limit(0)  # absurd: clamped to QUIC's minimum, never trusted below it
    assert q.current == q.upper == BASE_PLPMTU
    assert q.probe_size(0.0) is None


def test_a_probe_in_flight_blocks_the_next_and_stale_answers_are_ignored() -> None:
    p = Pmtud(max_bytes=16384)
    size = p.probe_size(0.0)
    assert size == 16384
    p.on_probe_sent(7, size)
    assert p.probe_size(0.0) is None
    assert p.on_probe_acked(6, 0.1) == BASE_PLPMTU  # not the probe
    p.on_probe_lost(5, 0.1)
    assert p.in_flight == (7, 16384) and p.probes_lost == 0
    assert p.on_probe_acked(7, 0.1) == 16384


def test_search_runs_again_after_the_reprobe_interval() -> None:
    p = Pmtud(max_bytes=16384)
    search(p, 1472)
    found = p.current
    assert p.probe_size(1.0) is None
    assert p.probe_size(REPROBE_INTERVAL_S + 10.0) == 16384  # the path may have grown
    search(p, 9000, now=REPROBE_INTERVAL_S + 10.0)
    assert found < p.current <= 9000


def test_black_hole_falls_back_to_base_after_suspicious_bursts_only() -> None:
    p = Pmtud(max_bytes=16384)
    search(p, 65507)
    assert p.current == 16384
    p.on_large_acked(100)
    # Losses below a large packet that was acknowledged are random, not a black hole.
    for _ in range(10):
        assert not p.on_loss_burst([90, 95], 5.0)
    assert p.current == 16384
    # Large packets lost after the last acked one: suspicious; an ack resets the count.
    for _ in range(BLACK_HOLE_BURSTS - 1):
        assert not p.on_loss_burst([101], 5.0)
    p.on_large_acked(102)
    for _ in range(BLACK_HOLE_BURSTS - 1):
        assert not p.on_loss_burst([103], 6.0)
    assert p.on_loss_burst([104, 105], 6.0)
    assert p.current == BASE_PLPMTU and p.black_holes == 1
    assert p.probe_size(7.0) is None  # no re-probe storm on a path that just failed
    assert p.probe_size(6.0 + REPROBE_INTERVAL_S) == 16384


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Pmtud(start=1000)
    with pytest.raises(ValueError):
        Pmtud(start=2000, max_bytes=1500)
    with pytest.raises(ValueError):
        QuicEndpoint(KeyPair.from_rng_seed(b"c" * 32), pmtud_max_bytes=70_000)


# ---------------------------------------------------------------- real endpoints


def test_loopback_connection_reaches_the_ceiling_and_keeps_working() -> None:
    sizes: list[int] = []

    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        payload = bytes(range(256)) * 4096  # 1 MiB
        assert await roundtrip(conn, payload) == payload
        sizes.append(conn.quic.max_datagram_size)
        sizes.extend(c.quic.max_datagram_size for c in a.connections)
        assert conn.quic.pmtud is not None and conn.quic.pmtud.probes_sent >= 1
        assert await roundtrip(conn, payload) == payload  # at the raised size

    run_pair(body)
    # The default ceiling is any size: loopback's route MTU (65536 - headers) bounds it.
    route = quic_path.route_payload_limit(("127.0.0.1", 1))
    assert route is not None and route > 16384
    assert sizes == [route, route]


def test_pmtud_off_keeps_the_configured_size() -> None:
    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        payload = b"z" * 300_000
        assert await roundtrip(conn, payload) == payload
        assert conn.quic.max_datagram_size == 1200 and conn.quic.pmtud is None

    run_endpoints(QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=echo, pmtud=False),
                  QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32), pmtud=False), body)


def _advertise(ep: QuicEndpoint, max_udp_payload_size: int) -> None:
    """Make `ep`'s connections advertise `max_udp_payload_size` (as another QUIC stack
    would; ours leaves it at the default, 65527)."""
    make = ep._connection

    def connection(client: bool, addr: tuple[str, int], **kw: object) -> Libp2pQuicConnection:
        quic = make(client, addr, **kw)
        serialize = quic._serialize_transport_parameters

        def patched() -> bytes:
            params = pull_quic_transport_parameters(Buffer(data=serialize()))
            params.max_udp_payload_size = max_udp_payload_size
            buf = Buffer(capacity=4096)
            push_quic_transport_parameters(buf, params)
            return buf.data

        # aioquic has no hook for its transport parameters: replace its private method.
        quic._serialize_transport_parameters = patched  # type: ignore[method-assign]
        return quic

    ep._connection = connection  # type: ignore[method-assign]


def test_peer_max_udp_payload_size_caps_the_search() -> None:
    sizes: list[int] = []

    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        conn = await b.dial(addr, a.keypair.peer_id)
        payload = b"y" * 1_000_000
        assert await roundtrip(conn, payload) == payload
        sizes.append(conn.quic.max_datagram_size)
        assert conn.quic.peer_max_udp_payload == 4000

    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=echo)
    _advertise(a, 4000)
    run_endpoints(a, QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32)), body)
    assert sizes == [4000]


def test_peer_max_udp_payload_size_below_1200_fails_the_handshake_only() -> None:
    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=echo)
    _advertise(a, 1000)

    async def body(a: QuicEndpoint, b: QuicEndpoint, addr: tuple[str, int]) -> None:
        with pytest.raises(HandshakeError, match="max_udp_payload_size"):
            await b.dial(addr, a.keypair.peer_id, timeout_s=10)

    run_endpoints(a, QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32)), body)


class Relay:
    """A UDP forwarder between a dialler and a listener on 127.0.0.1 that drops every
    datagram larger than `mtu` (a path with a smaller MTU, or a black hole when `mtu`
    falls mid-connection)."""

    def __init__(self, target: tuple[str, int], mtu: int) -> None:
        self.target = target
        self.mtu = mtu
        self.dropped = 0

    async def run(self, task_status: TaskStatus[tuple[str, int]]) -> None:
        front = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        back = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with front, back:
            await front.bind(("127.0.0.1", 0))
            await back.bind(("127.0.0.1", 0))
            client: list[tuple[str, int]] = []

            async def pump(src: trio.socket.SocketType, dst: trio.socket.SocketType,
                           to_client: bool) -> None:
                while True:
                    data, addr = await src.recvfrom(65536)
                    if not to_client and not client:
                        client.append(addr)
                    if len(data) > self.mtu:
                        self.dropped += 1
                        continue
                    await dst.sendto(data, client[0] if to_client else self.target)

            async with trio.open_nursery() as n:
                n.start_soon(pump, front, back, False)
                n.start_soon(pump, back, front, True)
                task_status.started(front.getsockname())


def run_relayed(mtu: int, body: object) -> None:
    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), on_stream=echo)
    b = QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32))

    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                addr = await n.start(a.run, ("127.0.0.1", 0))
                await n.start(b.run, ("127.0.0.1", 0))
                relay = Relay(addr, mtu)
                front = await n.start(relay.run)
                conn = await b.dial(front, a.keypair.peer_id)
                await body(relay, conn)  # type: ignore[operator]
                n.cancel_scope.cancel()

    trio.run(main)


def test_search_finds_a_1500_byte_path_by_probing_and_carries_data() -> None:
    async def body(relay: Relay, conn: QuicConn) -> None:
        payload = bytes(range(256)) * 4096
        for _ in range(2):  # traffic lets lost probes be detected and the search go on
            assert await roundtrip(conn, payload) == payload
        pm = conn.quic.pmtud
        assert pm is not None
        with trio.move_on_after(20):  # the rest of the search, on PTOs if idle
            while pm.state is not State.COMPLETE:
                await trio.sleep(0.05)
        assert pm.state is State.COMPLETE
        assert 1472 - SEARCH_MIN_STEP_BYTES < conn.quic.max_datagram_size <= 1472
        assert relay.dropped >= MAX_PROBES  # the large probes, not the data
        assert await roundtrip(conn, payload) == payload

    run_relayed(1472, body)


def test_black_hole_mid_connection_falls_back_to_1200_and_data_still_arrives() -> None:
    async def body(relay: Relay, conn: QuicConn) -> None:
        payload = bytes(range(256)) * 4096
        assert await roundtrip(conn, payload) == payload
        with trio.move_on_after(20):  # the search's second step (16 KiB, then 64 KiB)
            while conn.quic.max_datagram_size <= 16384:
                await trio.sleep(0.05)
        assert conn.quic.max_datagram_size > 16384  # several STREAM frames per packet
        assert await roundtrip(conn, payload) == payload
        relay.mtu = 1200  # the route changed: large datagrams vanish
        assert await roundtrip(conn, payload) == payload
        pm = conn.quic.pmtud
        assert pm is not None and pm.black_holes >= 1
        assert conn.quic.max_datagram_size == 1200

    run_relayed(70_000, body)
