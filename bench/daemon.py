"""Daemon footprint and colony formation.

Prints:
  * idle RSS of a running `colony daemon` (one node, joined to nobody, after it has
    been up a few seconds) vs a bare Python process that only imports the same
    third-party dependencies (the default native stack does not import libp2p),
    both measured here; bench/edge.py has the edge profile, both stacks and idle CPU;
  * time for 20 daemons (separate processes, started together, bootstrapped through
    one seed) from launch to every node listing all 20 alive.

Run: .venv/bin/python bench/daemon.py [--nodes 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, wait_for  # noqa: E402

# What the daemon imports from outside the repo with `[network] stack = "native"`.
DEPS = ("import trio, structlog, cbor2, nacl.signing, lmdb, h11, prometheus_client, "
        "cryptography.hazmat.primitives.ciphers.aead")


def bare_rss_kib() -> int:
    code = (DEPS + "\nfor l in open('/proc/self/status'):\n"
            "    l.startswith('VmRSS:') and print(l.split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    args = ap.parse_args()

    bare = bare_rss_kib()
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "one", 1) as c:
        node = c.nodes[0]
        # Let it settle into idle (timers running, nothing to do), then sample.
        deadline = time.monotonic() + 5
        wait_for(lambda: time.monotonic() > deadline, 10, "idle settle")
        idle = node.rss_kib()
    print(f"{'bare process importing the same deps':<44} {bare / 1024:>8.1f} MiB RSS")
    print(f"{'idle colony daemon':<44} {idle / 1024:>8.1f} MiB RSS  "
          f"(+{(idle - bare) / 1024:.1f} MiB over the imports; ratio {idle / bare:.2f})")

    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp) / "c", args.nodes)
        try:
            t0 = time.perf_counter()
            c.start()
            up = time.perf_counter() - t0
            c.wait_converged(180)
            conv = time.perf_counter() - t0
            rss = sum(n.rss_kib() for n in c.nodes) / len(c.nodes)
        finally:
            c.close()
    print(f"{args.nodes} daemons: every API up after {up:.1f} s (init + start, 2 shared cores); "
          f"all see all {args.nodes} alive after {conv:.1f} s; mean RSS {rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
