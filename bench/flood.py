"""A fetch while a peer floods the provider with ~10^4 frames/s, vs the same fetch
unflooded in the same run (the limit), plus the provider's RSS growth and its drop
counters (tests/integration/flood.py is the flooder; test_faults_flood.py the short
suite version). Goal: the flooded fetch ≥ 0.5 of the unflooded one.

Run: .venv/bin/python bench/flood.py [--mib 64] [--rate 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import trio  # noqa: E402
from colony_cluster import Cluster, colony_cmd, deterministic_bytes  # noqa: E402
from flood import FloodReport, flood  # noqa: E402

from overlay.core.ids import PeerId  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rate", type=int, default=10_000)
    args = ap.parse_args()
    mib: int = args.mib
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", 2) as c:
        target, good = c.nodes
        c.wait_converged(60)
        data = Path(tmp) / "d.bin"
        data.write_bytes(deterministic_bytes(args.mib << 20, seed=4))
        cid = json.loads(colony_cmd(target.home, "publish", str(data), "--json",
                                    timeout=300).stdout)["cid"]

        def fetch(tag: str) -> float:
            colony_cmd(good.home, "gc", timeout=300)
            t = time.perf_counter()
            colony_cmd(good.home, "fetch", cid, "-o", str(Path(tmp) / tag), timeout=600)
            return (mib << 20) / (time.perf_counter() - t) / 1e6

        calm = fetch("calm")
        rss0 = target.rss_kib()
        report = FloodReport()
        rates: list[float] = []

        async def run() -> None:
            async with trio.open_nursery() as n:
                n.start_soon(flood, PeerId.from_base58(target.peer_id), target.addr,
                             args.rate, 1e9, report)
                await trio.sleep(1.0)
                rates.append(await trio.to_thread.run_sync(fetch, "flooded"))
                n.cancel_scope.cancel()

        t0 = time.perf_counter()
        trio.run(run)
        offered = report.offered / (time.perf_counter() - t0)
        growth = target.rss_kib() - rss0
        drops = {k: v for k, v in target.api().call("GET", "/v1/stats")["drops"].items() if v}
        alive = target.proc is not None and target.proc.poll() is None
    print(f"load average {os.getloadavg()[0]:.1f}; {args.mib} MiB, flood offered "
          f"{offered:,.0f} frames/s")
    print(f"fetch unflooded (limit)  {calm:8.1f} MB/s")
    print(f"fetch while flooded      {rates[0]:8.1f} MB/s  ratio {rates[0] / calm:.2f} "
          f"(goal ≥ 0.5)")
    print(f"provider alive {alive}; RSS growth {growth / 1024:.1f} MiB; drops {drops}")


if __name__ == "__main__":
    main()
