"""Placement quality across cells: the real `CellPlacer` against an omniscient placer
on the same trace (sim/placement_quality.py; issue #17).

For each offered load, one seeded trace of capsules (Poisson arrivals, exponential
service, heterogeneous cells, origins in proportion to cell size) goes through four
placers: the core's two choices (digests read every `--digest-interval` s, then a
probe of its own cell and one other), an omniscient placer (least backlog per slot,
exact and current), one random cell, and the origin cell. Printed per placer: mean and
p99 wait for a slot, the share that waited, the longest queue, the share forwarded,
and the mean wait against the omniscient placer's in the same run, plus the share of
the gap between staying home and the omniscient placer that the two choices close.
Then balls into bins (n capsules into n one-slot cells, no departures): the core's two
choices against one random choice and the ln ln n / ln 2 bound.

Run: .venv/bin/python bench/placement.py [--cells 16 --capsules 20000 --seed 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.placement_quality import PlacementRun, balls_into_bins, compare, format_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--capsules", type=int, default=20_000)
    ap.add_argument("--loads", default="0.5,0.7,0.9,0.95")
    ap.add_argument("--digest-interval", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bins", default="100,1000,3000")
    args = ap.parse_args()
    for load in (float(x) for x in args.loads.split(",")):
        run = PlacementRun(cells=args.cells, capsules=args.capsules, load=load,
                           digest_interval_s=args.digest_interval, seed=args.seed)
        t0 = time.process_time()
        figs = compare(run)
        for line in format_table(run, figs):
            print(line)
        home, best = figs["local"].mean_wait_s, figs["omniscient"].mean_wait_s
        gap = home - best
        closed = (home - figs["two-choice"].mean_wait_s) / gap if gap > 0 else 1.0
        print(f"  two choices close {closed:.2f} of the gap between staying home and the "
              f"omniscient placer ({time.process_time() - t0:.1f} s CPU)")
    for n in (int(x) for x in args.bins.split(",")):
        t0 = time.process_time()
        two, one = balls_into_bins(n, seed=args.seed)
        bound = math.log(math.log(n)) / math.log(2)
        print(f"balls into bins n={n}: max load two choices {two} (ln ln n / ln 2 = "
              f"{bound:.2f}, + O(1); goal ≤ 4), one choice {one} "
              f"({time.process_time() - t0:.1f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
