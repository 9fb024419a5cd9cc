"""QUIC stream throughput between two processes on loopback vs our TCP+Noise+Yamux
stream, measured in the same run (the limit QUIC is held to; goal ratio ≥ 0.3).

Each measure: a sink in another process (`--serve quic|tcp`) reads one stream to its
end and answers b"k"; this process writes `--mib` MiB in 256 KiB writes on one
negotiated stream (multistream-select; QUIC: libp2p TLS + a QUIC stream; TCP:
Noise XX + Yamux, overlay/p2p) and times until the answer. Best of `--runs`.
QUIC is measured three ways (`--modes`): fixed 1200-byte datagrams (path-MTU discovery
off: what every path got before it), with path-MTU discovery (the default: both ends
start at 1200 and probe up to the route's MTU, 65,507 bytes on loopback; the size
reached is printed), and fixed 16 KiB (the largest fixed size; loopback only).
Per-round ratios (QUIC over the TCP run of the same round) show the spread. Each of
`--cc` congestion controllers (the sender's; default: aioquic's reno and cubic, and
ours, bbr) is measured all three ways.
Also prints the connection set-up time of each (dial to verified peer), and the load
average, since the machine's two cores are shared.

Run: .venv/bin/python bench/quic.py [--mib 64] [--runs 3] [--cc reno,cubic,bbr]
                                    [--modes 1200,pmtud,16k]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p.host import Host
from overlay.p2p.quic import QuicEndpoint, negotiate_inbound

PROTO = "/colony/bench-quic/1.0.0"
WRITE = 256 * 1024
MiB = 1024 * 1024


class _Sink:
    async def __call__(self, s: Any) -> None:
        while await s.read():
            pass
        await s.write(b"k")
        await s.close()


async def _serve_quic(dgram: int, pmtud: bool) -> None:
    sink = _Sink()

    async def on_stream(s: Any) -> None:
        await negotiate_inbound(s, [PROTO])
        await sink(s)

    kp = KeyPair.generate()
    ep = QuicEndpoint(kp, on_stream=on_stream, max_datagram_size=dgram, pmtud=pmtud)
    async with trio.open_nursery() as n:
        await n.start(ep.run, ("127.0.0.1", 0))
        print(ep.multiaddr, kp.peer_id.to_base58(), flush=True)
        await trio.sleep_forever()


async def _serve_tcp() -> None:
    kp = KeyPair.generate()
    host = Host(kp)
    host.set_stream_handler(PROTO, _Sink())
    async with host.serve(["/ip4/127.0.0.1/tcp/0"]):
        print(host.listen_addrs[0], kp.peer_id.to_base58(), flush=True)
        await trio.sleep_forever()


async def _push(s: Any, total: int) -> float:
    payload = b"x" * WRITE
    t0 = time.perf_counter()
    for _ in range(total // WRITE):
        await s.write(payload)
    await s.close()
    with trio.fail_after(120):
        assert await s.read(1) == b"k"
    return total / (time.perf_counter() - t0) / MiB


async def measure(kind: str, total: int, dgram: int = 1200, cc: str = "",
                  pmtud: bool = False) -> tuple[float, float, int]:
    """(MB/s of one stream, connection set-up ms, datagram size at the end) against a
    sink in another process."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve", kind, "--dgram", str(dgram)]
        + (["--pmtud"] if pmtud else []),
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(60):
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
        addr, peer_text = buf.split(b"\n", 1)[0].decode().split()
        peer = PeerId.from_base58(peer_text)
        if kind == "quic":
            ep = QuicEndpoint(KeyPair.generate(), max_datagram_size=dgram, pmtud=pmtud)
            ep.congestion_control = cc or ep.congestion_control
            async with trio.open_nursery() as n:
                await n.start(ep.run, ("127.0.0.1", 0))
                parts = addr.split("/")
                t0 = time.perf_counter()
                conn = await ep.dial((parts[2], int(parts[4])), peer)
                setup_ms = (time.perf_counter() - t0) * 1000
                mb_s = await _push(await conn.open_stream([PROTO]), total)
                size = conn.quic.max_datagram_size
                await conn.close()
                n.cancel_scope.cancel()
            return mb_s, setup_ms, size
        host = Host(KeyPair.generate())
        async with host.serve([]):
            t0 = time.perf_counter()
            await host.dial(peer, [addr])
            setup_ms = (time.perf_counter() - t0) * 1000
            mb_s = await _push(await host.new_stream(peer, [PROTO]), total)
            await host.disconnect(peer)
        return mb_s, setup_ms, 0
    finally:
        proc.kill()
        await proc.wait()


async def main(mib: int, runs: int, ccs: list[str], modes: list[str]) -> None:
    total = mib * MiB
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} (2 shared cores)")
    results: dict[str, list[tuple[float, float, int]]] = {"tcp": []}
    for _ in range(runs):  # interleaved, so all see the same background load
        results["tcp"].append(await measure("tcp", total))
        for cc in ccs:
            for mode in modes:
                dgram, pmtud = _MODES[mode]
                results.setdefault(f"{mode} {cc}", []).append(
                    await measure("quic", total, dgram, cc=cc, pmtud=pmtud))
    tcp = max(r[0] for r in results["tcp"])
    tcp_setup = min(r[1] for r in results["tcp"])
    print(f"{'TCP+Noise+Yamux stream, 2 processes (limit)':<50} {tcp:8.1f} MB/s"
          f"  runs {_runs(results['tcp'])}")
    for cc in ccs:
        for mode in modes:
            rs = results[f"{mode} {cc}"]
            quic = max(r[0] for r in rs)
            # Per run: the ratio to the TCP run of the same round (same background load).
            per = ", ".join(f"{q[0] / t[0]:.3f}" for q, t in zip(rs, results["tcp"],
                                                                   strict=True))
            reached = f"; reached {sorted({r[2] for r in rs})} bytes" if mode == "pmtud" else ""
            print(f"{f'QUIC stream, {_LABELS[mode]}, {cc}':<50} {quic:8.1f} MB/s"
                  f"  ratio {quic / tcp:.3f} of TCP (goal ≥ 0.3){reached}")
            print(f"{'':<50} runs {_runs(rs)}; per-round ratios {per}")
    print(f"{'connection set-up TCP+Noise+Yamux':<50} {tcp_setup:8.1f} ms")
    if modes:
        quic_setup = min(r[1] for r in results[f"{modes[0]} {ccs[0]}"])
        print(f"{'connection set-up QUIC (1-RTT + libp2p TLS)':<50} {quic_setup:8.1f} ms"
              f"  ratio {quic_setup / tcp_setup:.3f} of TCP")
    print(f"{mib} MiB per run, best of {runs}; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


#: QUIC modes: (start datagram size, path-MTU discovery).
_MODES = {"1200": (1200, False), "pmtud": (1200, True), "16k": (16384, False)}
_LABELS = {"1200": "1200-byte datagrams", "pmtud": "path-MTU discovery",
           "16k": "16 KiB datagrams (loopback)"}


def _runs(rs: list[tuple[float, float, int]]) -> str:
    return "[" + ", ".join(f"{r[0]:.1f}" for r in rs) + "] MB/s"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve", choices=("quic", "tcp"))
    ap.add_argument("--dgram", type=int, default=1200)
    ap.add_argument("--pmtud", action="store_true", help="(--serve) path-MTU discovery")
    ap.add_argument("--cc", default="reno,cubic,bbr",
                    help="the sender's QUIC congestion controllers, comma-separated")
    ap.add_argument("--modes", default="1200,pmtud,16k",
                    help="QUIC modes, comma-separated: 1200, pmtud, 16k")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.serve == "quic":
        trio.run(_serve_quic, args.dgram, args.pmtud)
    elif args.serve == "tcp":
        trio.run(_serve_tcp)
    else:
        trio.run(main, args.mib, args.runs, args.cc.split(","),
                 [m for m in args.modes.split(",") if m])
