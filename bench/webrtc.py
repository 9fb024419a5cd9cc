"""WebRTC data channels and relay circuits vs a direct stream.

Prints, each with its limit (measured in the same run) and the ratio:
  * the asyncio bridge: trio → asyncio → trio round trips per second (the cost of
    one `send_all` hop), vs a trio-only checkpoint round trip;
  * a raw aiortc data channel (DataChannelStream, SCTP over DTLS over UDP, both
    ends in this process on one bridge) MB/s vs raw trio TCP loopback;
  * the libp2p stack (Noise + Yamux, RAW 256 KiB frames through the adapter) over
    that data channel vs over a direct TCP connection (the overlay's view);
  * the same over a relay circuit (/colony/relay/1.0.0 through a third transport);
  * connection set-up: WebRTC (ICE with host candidates, DTLS, SCTP) and relay;
  * the raw data channel between two processes (each end its own asyncio thread and
    core, as on two machines).

`measure(size_mib)` returns the figures as a dict, for bench/edge.py to call.

With --netns (root; tests/integration/netns_topology.py: 20 ms delay lines, 1 % loss,
40 Mbit/s on the WAN): a data channel from the endpoint-independent NAT'd host to a
public member vs the libp2p stack over TCP on the same path (`measure_netns`).

Run: .venv/bin/python bench/webrtc.py [--mib 16] [--netns]
Both ends share one process and one asyncio thread (aiortc is pure Python: its
SCTP, DTLS record layer and the bridge all run there), so the data-channel figure
is a floor for two machines, each with its own core. Loopback on a shared 2-core
machine is noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.stack import open_edge
from overlay.runtime.edge.webrtc_bridge import WebRtcEndpoint, connect_pair, open_bridge
from overlay.runtime.net.stream_attach import attach_stream
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.process.config import DEFAULTS

MiB = 1024 * 1024
CHUNK = 256 * 1024
BULK = "/colony/bench-bulk/1.0.0"


def line(name: str, value: float, unit: str, limit: float | None = None, what: str = "") -> None:
    ratio = f"  ratio {value / limit:.3f} of {what} ({limit:,.1f} {unit})" if limit else ""
    print(f"{name:<52} {value:>10,.1f} {unit}{ratio}", flush=True)


async def bridge_round_trips(n: int = 3000) -> tuple[float, float]:
    async def nothing() -> None:
        return None

    async with open_bridge() as br:
        t0 = time.perf_counter()
        for _ in range(n):
            await br.call(nothing)
        bridged = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n):
        await trio.lowlevel.checkpoint()
    local = n / (time.perf_counter() - t0)
    return bridged, local


async def tcp_mbps(size: int) -> float:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    got = 0

    async def serve(s: trio.SocketStream) -> None:
        nonlocal got
        while got < size:
            d = await s.receive_some(CHUNK)
            if not d:
                break
            got += len(d)

    async with trio.open_nursery() as n:
        n.start_soon(trio.serve_listeners, serve, listeners)
        c = await trio.open_tcp_stream("127.0.0.1", port)
        t0 = time.perf_counter()
        buf = b"x" * CHUNK
        for _ in range(size // CHUNK):
            await c.send_all(buf)
        while got < size:
            await trio.sleep(0.001)
        dt = time.perf_counter() - t0
        await c.aclose()
        n.cancel_scope.cancel()
    return size / dt / 1e6


async def stream_mbps(tx: trio.abc.Stream, rx: trio.abc.Stream, size: int) -> float:
    got = 0

    async def read() -> None:
        nonlocal got
        while got < size:
            d = await rx.receive_some(CHUNK)
            if not d:
                break
            got += len(d)

    buf = b"x" * CHUNK
    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        n.start_soon(read)
        for _ in range(size // CHUNK):
            await tx.send_all(buf)
    return size / (time.perf_counter() - t0) / 1e6


async def adapter_mbps(a: Transport, b: Transport, size: int) -> float:
    """RAW 256 KiB frames a → b through the adapter (post; count at b)."""
    got = trio.Event()
    seen = 0

    def on_message(peer: PeerId, raw: Any) -> None:
        nonlocal seen
        seen += len(raw)
        if seen >= size:
            got.set()

    b.set_handler(BULK, on_message=on_message, codec=Codec.RAW)
    a.codec_for(BULK, Codec.RAW)
    frame = b"y" * CHUNK
    t0 = time.perf_counter()
    for _ in range(size // CHUNK):
        await a.send(b.peer_id, BULK, frame)
    await got.wait()
    return size / (time.perf_counter() - t0) / 1e6


CHILD = """
import json, sys, trio
sys.path.insert(0, sys.argv[1])
from overlay.runtime.edge.webrtc_bridge import WebRtcEndpoint, open_bridge
async def main():
    async with open_bridge() as br:
        ep = WebRtcEndpoint(br)
        offer = json.loads(sys.stdin.readline())["sdp"]
        answer, session = await ep.answer(offer)
        print(json.dumps({"sdp": answer}), flush=True)
        stream = await session.wait_open(30)
        size, got = int(sys.argv[2]), 0
        while got < size:
            got += len(await stream.receive_some(1 << 20))
        await stream.send_all(b"k")
        await trio.sleep(1)
trio.run(main)
"""


async def two_process_mbps(size: int) -> float:
    """Raw data channel to a child process: each end has its own asyncio thread."""
    root = str(Path(__file__).resolve().parent.parent)
    async with open_bridge() as br, trio.open_nursery() as n:
        proc = await n.start(partial(
            trio.run_process, [sys.executable, "-c", CHILD, root, str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            check=False,
        ))
        ep = WebRtcEndpoint(br)
        offer, session = await ep.offer()
        await proc.stdin.send_all(json.dumps({"sdp": offer}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            buf += await proc.stdout.receive_some(65536)
        await ep.complete(session, json.loads(buf.split(b"\n", 1)[0])["sdp"])
        stream = await session.wait_open(30)
        chunk = b"x" * CHUNK
        t0 = time.perf_counter()
        for _ in range(size // CHUNK):
            await stream.send_all(chunk)
        await stream.receive_some(1)  # the child's ack: everything arrived
        mbps = size / (time.perf_counter() - t0) / 1e6
        await stream.aclose()
        n.cancel_scope.cancel()
    return mbps


NETNS_PEER = """
import json, sys, time, trio
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from overlay.core.crypto import KeyPair
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.edge.webrtc_bridge import IceConfig, WebRtcEndpoint, open_bridge
role, d, size, mode = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
extra = sys.argv[6:]  # webrtc: STUN urls; tcp: the receiver's IP
async def wait_file(p):
    with trio.fail_after(60):
        while not p.exists():
            await trio.sleep(0.05)
    return p.read_text()
async def put(p, text):
    p.with_suffix(".tmp").write_text(text)
    p.with_suffix(".tmp").rename(p)
async def webrtc():
    async with open_bridge() as br:
        ep = WebRtcEndpoint(br, IceConfig(stun=tuple(extra)))
        if role == "send":
            sdp, s = await ep.offer()
            await put(d / "offer.sdp", sdp)
            await ep.complete(s, await wait_file(d / "answer.sdp"))
        else:
            sdp, s = await ep.answer(await wait_file(d / "offer.sdp"))
            await put(d / "answer.sdp", sdp)
        st = await s.wait_open(30)
        if role == "send":
            t0 = time.perf_counter()
            for _ in range(size // 262144):
                await st.send_all(b"x" * 262144)
            await st.receive_some(1)
            print(json.dumps({"mbps": size / (time.perf_counter() - t0) / 1e6, "path": st.path}))
        else:
            got = 0
            while got < size:
                got += len(await st.receive_some(1 << 20))
            await st.send_all(b"k")
            await trio.sleep(2)
async def tcp():
    kp = KeyPair.generate()
    listen = ["/ip4/0.0.0.0/tcp/4101"] if role == "recv" else ["/ip4/0.0.0.0/tcp/0"]
    async with Transport.open(kp, listen) as t:
        done = trio.Event()
        seen = 0
        def on_message(peer, raw):
            nonlocal seen
            seen += len(raw)
            if seen >= size:
                done.set()
        t.set_handler("/bench/1", on_message=on_message, codec=Codec.RAW)
        t.codec_for("/bench/1", Codec.RAW)
        if role == "recv":
            await put(d / "addr", f"/ip4/{extra[0]}/tcp/4101/p2p/{t.peer_id}")
            with trio.fail_after(120):
                await done.wait()
            await trio.sleep(1)
        else:
            peer = await t.connect(await wait_file(d / "addr"))
            t0 = time.perf_counter()
            for _ in range(size // 262144):
                await t.send(peer, "/bench/1", b"y" * 262144)
            await t.ping(peer)  # in order behind the frames: all have been read
            print(json.dumps({"mbps": size / (time.perf_counter() - t0) / 1e6}))
trio.run(webrtc if mode == "webrtc" else tcp)
"""


def measure_netns(size_mib: int = 4) -> dict[str, float]:
    """Data channel vs libp2p-over-TCP from the EIM-NAT'd host to a public member."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
    from netns_topology import Topology, skip_reason

    why = skip_reason()
    if why:
        raise SystemExit(f"--netns: {why}")
    root = str(Path(__file__).resolve().parent.parent)
    size = size_mib * MiB
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            Topology(Path(tmp) / "net", delay_ms=20, loss_pct=1, rate_mbit=40) as topo:
        pub_ns, pub_ip = next(iter(topo.public.items()))
        edge_ns = topo.sites["a"].host_ns
        stun = [f"stun:{s}" for s in topo.stun_servers]
        for kind, extra in (("webrtc", stun), ("tcp", [pub_ip])):
            d = Path(tmp) / kind
            d.mkdir()
            recv = topo.popen(pub_ns, [sys.executable, "-c", NETNS_PEER, root, "recv", str(d),
                                       str(size), kind, *extra], log=d / "recv.log")
            r = topo.run(edge_ns, sys.executable, "-c", NETNS_PEER, root, "send", str(d),
                         str(size), kind, *extra, timeout=300)
            recv.wait(timeout=30)
            line_out = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
            out[f"netns_{kind}_mbps"] = float(json.loads(line_out)["mbps"])
    return out


def _conf(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    c = copy.deepcopy(DEFAULTS)
    for k, v in sections.items():
        c[k].update(v)
    return c


async def measure(size_mib: int = 16) -> dict[str, float]:
    size = size_mib * MiB
    out: dict[str, float] = {}
    out["bridge_calls_per_s"], out["trio_checkpoints_per_s"] = await bridge_round_trips()
    out["tcp_loopback_mbps"] = await tcp_mbps(size)
    async with open_bridge() as br:
        t0 = time.perf_counter()
        sa, sb = await connect_pair(WebRtcEndpoint(br), WebRtcEndpoint(br))
        out["webrtc_setup_s"] = time.perf_counter() - t0
        out["datachannel_mbps"] = await stream_mbps(sa, sb, size)
        await sa.aclose()
        await sb.aclose()

    ka, kb, kr = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    loop = ["/ip4/127.0.0.1/tcp/0"]
    # Direct: a TCP connection between two transports.
    async with Transport.open(ka, loop) as a, Transport.open(kb, loop) as b:
        await a.connect(b.addrs[0])
        out["libp2p_direct_mbps"] = await adapter_mbps(a, b, size)
    # Over a data channel: the same stack attached to the channel.
    async with open_bridge() as br, Transport.open(ka, loop) as a, Transport.open(kb, loop) as b:
        sa, sb = await connect_pair(WebRtcEndpoint(br), WebRtcEndpoint(br))
        async with trio.open_nursery() as n:
            n.start_soon(lambda: attach_stream(b, sb, initiator=False))
            await attach_stream(a, sa, initiator=True, peer=b.peer_id)
        out["libp2p_webrtc_mbps"] = await adapter_mbps(a, b, size)
    # Over a relay circuit through a third transport (no rate limit).
    members = {ka.peer_id, kb.peer_id, kr.peer_id}
    relay_conf = _conf(relay={"enabled": True, "max_rate": 0, "max_bytes": 1 << 40})
    async with Transport.open(kr, loop) as r, Transport.open(ka, loop) as a, \
            Transport.open(kb, loop) as b, \
            open_edge(r, kr, relay_conf, members.__contains__), \
            open_edge(a, ka, _conf(edge={"dial_order": ["relay"]}), members.__contains__) as da, \
            open_edge(b, kb, _conf(), members.__contains__) as db:
        await a.connect(r.addrs[0])
        await b.connect(r.addrs[0])
        await db.relay.reserve(r.peer_id)
        t0 = time.perf_counter()
        await da.connect(b.peer_id)
        out["relay_setup_s"] = time.perf_counter() - t0
        out["libp2p_relayed_mbps"] = await adapter_mbps(a, b, size)
    out["datachannel_two_process_mbps"] = await two_process_mbps(size)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=16, help="bytes moved per figure (MiB)")
    ap.add_argument("--netns", action="store_true",
                    help="also measure across the NAT test topology (root)")
    args = ap.parse_args()
    if args.netns:
        n = measure_netns(max(1, args.mib // 4))
        line("netns: data channel, NAT'd host -> public member", n["netns_webrtc_mbps"],
             "MB/s", n["netns_tcp_mbps"], "libp2p over TCP on the same path")
    f = trio.run(measure, args.mib)
    line("asyncio bridge round trips (trio→asyncio→trio)", f["bridge_calls_per_s"], "calls/s",
         f["trio_checkpoints_per_s"], "trio checkpoints")
    line("raw data channel, one process", f["datachannel_mbps"], "MB/s",
         f["tcp_loopback_mbps"], "raw TCP loopback")
    line("libp2p over a data channel (RAW 256 KiB frames)", f["libp2p_webrtc_mbps"], "MB/s",
         f["libp2p_direct_mbps"], "libp2p over direct TCP")
    line("libp2p over a relay circuit (no rate limit)", f["libp2p_relayed_mbps"], "MB/s",
         f["libp2p_direct_mbps"], "libp2p over direct TCP")
    line("raw data channel, two processes", f["datachannel_two_process_mbps"], "MB/s",
         f["tcp_loopback_mbps"], "raw TCP loopback")
    line("WebRTC set-up (ICE host, DTLS, SCTP)", f["webrtc_setup_s"] * 1000, "ms")
    line("relay circuit set-up incl. Noise + Yamux", f["relay_setup_s"] * 1000, "ms")


if __name__ == "__main__":
    main()
