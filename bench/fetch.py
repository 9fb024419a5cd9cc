"""Fetch throughput of real daemons vs the transport baselines (issue 8).

Prints, each with its limit and ratio:
  * raw trio TCP loopback MB/s (the ceiling);
  * one bare py-libp2p Noise+Yamux stream MB/s (bench/transport.py), the limit for
    a fetch over one connection;
  * `fetch` of a 64 MiB dataset between separate daemon processes from 1 provider
    and from 3 providers (the publisher plus two earlier fetchers, found by the DHT),
    each as a ratio to the bare stream.

The rate-limited case (each provider capped at 20 MB/s) is not measured: it needs a
send-path knob in overlay/runtime/transport.py, which this bench does not add.

Run: .venv/bin/python bench/fetch.py [--mib 64]
Loopback on a shared 2-core machine is noisy; all daemons and the client share it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for  # noqa: E402
from transport import MiB, _pair_run, bare_stream_mb_s, best, line, raw_tcp_mb_s  # noqa: E402


def timed_fetch(node: Node, cid: str) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    final: dict[str, object] = {}
    for item in node.api(300).stream("POST", "/v1/fetch", {"cid": cid}):
        final = item
    dt = time.perf_counter() - t0
    assert final.get("done") and not final.get("error"), final
    return int(final["bytes_fetched"]) / dt / 1e6, final  # type: ignore[call-overload]


def wait_providers(node: Node, cid: str, want: set[str]) -> None:
    def ok() -> bool:
        r = node.api(60).call("POST", "/v1/dht/findprovs", {"cid": cid})
        return want <= set(r["providers"])

    wait_for(ok, 60, f"{len(want)} providers of {cid}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    args = ap.parse_args()
    size = args.mib * MiB

    tcp = trio.run(best(3, lambda: raw_tcp_mb_s(256 * MiB)))
    line("raw trio TCP loopback", tcp, "MB/s")
    bare = trio.run(best(3, lambda: _pair_run(lambda a, b: bare_stream_mb_s(a, b, size))))
    line("bare py-libp2p stream (1 process)", bare, "MB/s", tcp, "raw TCP")

    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", 4) as c:
        c.wait_converged(60)
        data = Path(tmp) / "data.bin"
        data.write_bytes(deterministic_bytes(size, seed=64))
        t0 = time.perf_counter()
        r = colony_cmd(c.nodes[0].home, "publish", str(data), "--json", timeout=300)
        cid = json.loads(r.stdout)["cid"]
        line(f"publish {args.mib} MiB (import + provide)", size / (time.perf_counter() - t0) / 1e6,
             "MB/s")
        n0, n1, n2, n3 = c.nodes
        one, f1 = timed_fetch(n1, cid)
        line(f"fetch {args.mib} MiB from 1 provider", one, "MB/s", bare, "bare stream")
        wait_providers(n2, cid, {n0.peer_id, n1.peer_id})
        _, f2 = timed_fetch(n2, cid)
        wait_providers(n3, cid, {n0.peer_id, n1.peer_id, n2.peer_id})
        three, f3 = timed_fetch(n3, cid)
        line(f"fetch {args.mib} MiB from 3 providers", three, "MB/s", bare, "bare stream")
        for name, f in (("1 provider", f1), ("2 providers", f2), ("3 providers", f3)):
            print(f"  blocks by provider, {name}: "
                  f"{sorted(f['providers'].values(), reverse=True)}")  # type: ignore[attr-defined]
    print("rate-limited providers (20 MB/s each): not measured (needs a transport knob)")


if __name__ == "__main__":
    main()
