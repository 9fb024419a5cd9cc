"""Circuit relay v2 vs our /colony/relay/1.0.0, on 127.0.0.1, in one run.

Three transports with the edge stack (R relays, B reserves, A dials B through R).
Prints, each with the same figure for our protocol as its limit and the ratio:
  * a reservation round trip (v2: with the voucher signed at R and verified at B);
  * the circuit hand-shake alone (hop CONNECT → stop → OK; no Noise);
  * a relayed connection set-up (the hand-shake + Noise + Yamux over the circuit);
  * bulk MB/s over the relayed connection (RAW 256 KiB frames, no rate limit),
    against the libp2p stack over direct TCP.
Medians of `--rounds` tries. Loopback on a shared 2-core machine is noisy: compare
within a run.

Run: .venv/bin/python bench/relay_v2.py [--rounds 20] [--mib 16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.relay_v2 import RESERVE_PER_WINDOW
from overlay.runtime.edge.stack import open_edge
from overlay.runtime.net.stream_attach import attach_stream
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.process.config import DEFAULTS

MiB = 1024 * 1024
CHUNK = 256 * 1024
BULK = "/colony/bench-bulk/1.0.0"
LOOP = ["/ip4/127.0.0.1/tcp/0"]


def line(name: str, value: float, unit: str, limit: float, what: str) -> None:
    print(f"{name:<44} {value:>9,.2f} {unit}  ratio {value / limit:.3f} of {what} "
          f"({limit:,.2f} {unit})", flush=True)


def _conf(**sections: dict[str, Any]) -> dict[str, Any]:
    c = copy.deepcopy(DEFAULTS)
    for k, v in sections.items():
        c.setdefault(k, {}).update(v)
    return c


async def median_s(rounds: int, fn: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def bulk_mbps(a: Transport, b: Transport, size: int) -> float:
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


async def measure(rounds: int, size: int) -> dict[str, float]:
    ka, kb, kr = (KeyPair.generate() for _ in range(3))
    members = {ka.peer_id, kb.peer_id, kr.peer_id}
    out: dict[str, float] = {}
    relay = _conf(relay={"enabled": True, "max_rate": 0, "max_bytes": 1 << 40,
                         "max_circuits_per_peer": 64, "max_circuits": 64})
    quiet = _conf(edge={"holepunch": False})
    async with Transport.open(kr, LOOP) as r, Transport.open(ka, LOOP) as a, \
            Transport.open(kb, LOOP) as b, \
            open_edge(r, kr, relay, members.__contains__), \
            open_edge(a, ka, quiet, members.__contains__) as da, \
            open_edge(b, kb, quiet, members.__contains__) as db:
        await a.connect(r.addrs[0])
        await b.connect(r.addrs[0])
        out["direct_mbps"] = await bulk_mbps(a, r, size)
        v2a, v2b = da.relay_v2, db.relay_v2
        assert v2a is not None and v2b is not None
        # Reservations (B renews: the same work each time). v2 last: B keeps it.
        # (At most RESERVE_PER_WINDOW - 1 v2 renewals a minute: the relay refuses more.)
        n = min(rounds, RESERVE_PER_WINDOW - 1)
        out["reserve_ours_s"] = await median_s(n, lambda: db.relay.reserve(r.peer_id))
        out["reserve_v2_s"] = await median_s(n, lambda: v2b.reserve(r.peer_id))

        async def shake(connect: Callable[[PeerId, PeerId], Awaitable[Any]]) -> None:
            s = await connect(r.peer_id, b.peer_id)
            await s.aclose()

        out["shake_ours_s"] = await median_s(rounds, lambda: shake(da.relay.connect))
        out["shake_v2_s"] = await median_s(rounds, lambda: shake(v2a.connect))

        async def setup(connect: Callable[[PeerId, PeerId], Awaitable[Any]]) -> None:
            s = await connect(r.peer_id, b.peer_id)
            await attach_stream(a, s, initiator=True, peer=b.peer_id, relayed=True)
            await a.disconnect(b.peer_id, "bench: next round")
            while b.is_connected(a.peer_id):
                await trio.sleep(0.001)

        out["setup_ours_s"] = await median_s(rounds, lambda: setup(da.relay.connect))
        out["setup_v2_s"] = await median_s(rounds, lambda: setup(v2a.connect))
        for name, connect in (("ours", da.relay.connect), ("v2", v2a.connect)):
            s = await connect(r.peer_id, b.peer_id)
            await attach_stream(a, s, initiator=True, peer=b.peer_id, relayed=True)
            out[f"bulk_{name}_mbps"] = await bulk_mbps(a, b, size)
            await a.disconnect(b.peer_id, "bench: next protocol")
            while b.is_connected(a.peer_id):
                await trio.sleep(0.001)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--mib", type=int, default=16)
    args = ap.parse_args()
    f = trio.run(measure, args.rounds, args.mib * MiB)
    line("reservation round trip, v2 (voucher)", f["reserve_v2_s"] * 1e3, "ms",
         f["reserve_ours_s"] * 1e3, "ours")
    line("circuit hand-shake, v2 hop+stop", f["shake_v2_s"] * 1e3, "ms",
         f["shake_ours_s"] * 1e3, "ours")
    line("relayed connection set-up, v2", f["setup_v2_s"] * 1e3, "ms",
         f["setup_ours_s"] * 1e3, "ours")
    line("bulk over a v2 circuit", f["bulk_v2_mbps"], "MB/s", f["bulk_ours_mbps"], "ours")
    line("bulk over our circuit", f["bulk_ours_mbps"], "MB/s", f["direct_mbps"],
         "libp2p over direct TCP")


if __name__ == "__main__":
    main()
