"""Real-daemon fault run: a colony in network namespaces, partitioned 3/7 and healed.

A 10-node colony (one namespace per daemon, one bridge; tests/integration/
fault_colony.py) runs 200 small shell capsules, submitted round-robin, the last two
thirds while nodes 0–2 are cut off from nodes 3–9 (iptables DROP both ways) for 60 s;
then the partition heals. The receipt checker (sim/campaign_check's invariants over
snapshots of every node's custody records, polled about once a second) reports:
violations of `one_receipt` / `token_increase` (limit 0), capsules acknowledged and
not finished `--bound` seconds after heal (limit 0), and the time from heal until the
last acknowledged capsule ended, with its ratio to the bound.

Needs root and `ip netns` (the figure is skipped otherwise, with the reason).
The short version runs in the suite: tests/integration/test_faults_partition.py.

Run: make faults-real   (or: python bench/faults_real.py [--nodes 10 --capsules 200
     --hold 60 --small 3 --bound 120])
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/sim.py would shadow the `sim` package the checker comes from: the repo first.
sys.path[0:1] = [str(ROOT), str(ROOT / "tests" / "integration")]

from fault_colony import BridgeColony, run_partition  # noqa: E402
from netns_topology import skip_reason  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--capsules", type=int, default=200)
    ap.add_argument("--hold", type=float, default=60.0, help="partition held, seconds")
    ap.add_argument("--small", type=int, default=3, help="nodes on the small side")
    ap.add_argument("--bound", type=float, default=120.0,
                    help="every acknowledged capsule ends within this many s of heal")
    a = ap.parse_args()
    why = skip_reason()
    if why:
        print(f"faults_real: skipped: {why}")
        return 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d, BridgeColony(Path(d), a.nodes) as c:
        up_s = time.monotonic() - t0
        r = run_partition(c, a.capsules, a.hold, a.small, a.bound)
    load = os.getloadavg()
    print(f"partition {a.small}/{a.nodes - a.small}, held {a.hold:g} s, {a.capsules} capsules "
          f"(colony up in {up_s:.0f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    print(f"  acknowledged {r.acked}, refused {r.refused}, snapshots {r.snapshots}")
    print(f"  violations {len(r.violations)} (limit 0)")
    for v in r.violations:
        print(f"    {v}")
    print(f"  unfinished after heal+{a.bound:g} s: {len(r.unfinished)} (limit 0) "
          f"{r.unfinished[:5]}")
    print(f"  heal → last acknowledged capsule ended: {r.heal_to_done_s:.1f} s "
          f"(bound {a.bound:g} s, ratio {r.heal_to_done_s / a.bound:.2f})")
    return 1 if r.violations or r.unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
