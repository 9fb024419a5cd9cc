"""`colony sync push` of a directory where 1 % changed: bytes that move vs bytes changed.

Two daemons on 127.0.0.1. Node A pushes a directory of F files (default 1,000 files
of 1 MiB = 1 GiB... scaled by --mib), node B pulls it; A changes 1 % of the files and
pushes again; B pulls the new version. Printed:

  * blocks and bytes B fetched for the second pull vs the bytes that changed
    (goal ≤ 1.1×: only the changed files' blocks, plus the directory nodes);
  * the second push's time vs a full publish of the same tree in the same run
    (the limit: what a push costs with nothing to deduplicate).

Run: .venv/bin/python bench/sync.py [--mib 256] [--files 256]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, colony_cmd  # noqa: E402


def stored(node: object) -> tuple[int, int]:
    s = node.api(30).call("GET", "/v1/stats")  # type: ignore[attr-defined]
    return int(s["store"]["blocks"]), int(s["store"]["bytes"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256, help="total size of the tree")
    ap.add_argument("--files", type=int, default=256)
    args = ap.parse_args()
    rng = random.Random(7)
    size = args.mib * (1 << 20) // args.files
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", 2) as c:
        c.wait_converged(60)
        time.sleep(3.0)  # let the DHT tables fill
        a, b = c.nodes
        tree = Path(tmp) / "tree"
        tree.mkdir()
        for i in range(args.files):
            (tree / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))
        colony_cmd(a.home, "sync", "push", "bench", str(tree), timeout=1800)
        colony_cmd(b.home, "sync", "pull", "bench", str(Path(tmp) / "b1"), timeout=1800)
        changed = max(1, args.files // 100)
        for i in rng.sample(range(args.files), changed):
            (tree / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))
        t = time.perf_counter()
        colony_cmd(a.home, "sync", "push", "bench", str(tree), timeout=1800)
        push_s = time.perf_counter() - t
        before = stored(b)
        t = time.perf_counter()
        colony_cmd(b.home, "sync", "pull", "bench", str(Path(tmp) / "b2"), timeout=1800)
        pull_s = time.perf_counter() - t
        after = stored(b)
        fetched, fetched_bytes = after[0] - before[0], after[1] - before[1]
        fresh = Cluster(Path(tmp) / "f", 1)
        fresh.start()
        try:
            t = time.perf_counter()
            r = colony_cmd(fresh.nodes[0].home, "publish", str(tree), "--json", timeout=1800)
            full_s = time.perf_counter() - t
            json.loads(r.stdout)
        finally:
            fresh.close()
    changed_bytes = changed * size
    print(f"load average {os.getloadavg()[0]:.1f}; tree {args.files} files × "
          f"{size >> 10} KiB = {args.mib} MiB; {changed} files changed ({changed_bytes >> 20} MiB)")
    print(f"second pull stored {fetched} new blocks, {fetched_bytes / (1 << 20):.2f} MiB: "
          f"{fetched_bytes / changed_bytes:.2f}× the changed bytes (goal ≤ 1.1×), {pull_s:.2f} s")
    print(f"second push {push_s:.2f} s vs full publish of the same tree on a fresh node "
          f"{full_s:.2f} s (ratio {push_s / full_s:.2f})")


if __name__ == "__main__":
    main()
