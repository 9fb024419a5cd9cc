"""Capsule simulation cost: CPU per capsule and per event, against limits measured here.

Runs the bundled capsule-scale scenario scaled to `--nodes` and `--capsules` (same
rate per node, same churn and run times), in this process, and prints:

1. CPU seconds per 1,000 capsules and the projection to 10^5 capsules, against the
   issue's budget of 20 min for the full size: ratio = projected / 1,200 s. The
   projection is linear in capsules at this N, a lower bound for N = 10^4 (more
   records per node, a larger heap); docs/simulation.md has the measured full run.
2. Simulated events per CPU second against a bare heapq hold loop measured in the same
   run (`bench/sim.py`'s limit): the share of time spent outside the cores and engine.
3. Completion rate and messages per capsule of the scaled run (the full run's figures
   are in docs/simulation.md).

CPU time (process time) is used, not wall time: this machine is shared, and wall time
over-states the cost when other jobs run. Run: .venv/bin/python bench/capsule_sim.py
[--nodes 2000 --capsules 10000]
"""

from __future__ import annotations

import argparse
import heapq
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim import scenario
from sim.simulations import simulation_for

FULL_NODES = 10_000
FULL_CAPSULES = 100_000
BUDGET_S = 20 * 60


def bare_hold(n_events: int, heap_size: int, seed: int) -> float:
    """Events/s of a bare heapq hold loop (the limit bench/sim.py uses): pop, call, push."""
    rng = random.Random(seed)
    count = [0]

    def fn(arg: object) -> None:
        count[0] += 1

    heap = [(rng.random(), i, fn, None) for i in range(heap_size)]
    heapq.heapify(heap)
    seq = heap_size
    pop, push, rand = heapq.heappop, heapq.heappush, rng.random
    t0 = time.process_time()
    for _ in range(n_events):
        when, _, f, arg = pop(heap)
        f(arg)
        seq += 1
        push(heap, (when + rand(), seq, f, arg))
    return n_events / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000, help="nodes (default 1000)")
    ap.add_argument("--capsules", type=int, default=10_000, help="capsules (default 10000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    base = scenario.load(scenario.resolve("capsule-scale"))
    (w,) = base.workloads
    # Keep the load per node of the full scenario: rate scales with the node count.
    rate = w.rate_per_s * args.nodes / FULL_NODES
    span = args.capsules / rate
    wl = type(w)(w.kind, rate, w.start_s, w.start_s + span * 1.2, limit=args.capsules)
    sc = base.with_(nodes=args.nodes, seed=args.seed, workloads=(wl,),
                    duration_s=w.start_s + span + 100.0)  # fmt: skip

    bare = bare_hold(300_000, 50_000, args.seed)
    c0 = time.process_time()
    sim = simulation_for(sc)
    m = sim.run()
    cpu = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = m.counters["capsules_submitted"]
    per_k = cpu / n * 1000
    # Per-capsule cost grows slowly with N (log N index walks); linear in capsules.
    projected = per_k * FULL_CAPSULES / 1000
    evs = sim.engine.events_run / cpu
    print(f"capsule sim N={args.nodes} capsules={n}: {cpu:.1f} s CPU, "
          f"{sim.engine.events_run:,} events, max RSS {rss:.0f} MiB")
    print(f"  CPU per 1,000 capsules: {per_k:.2f} s → 10^5 capsules ≈ {projected:.0f} s CPU "
          f"(linear in capsules: a lower bound, the cost per capsule grows with N); "
          f"budget {BUDGET_S} s: ratio {projected / BUDGET_S:.2f}")
    print(f"  simulated events per CPU s: {evs:,.0f}; bare heapq loop {bare:,.0f} events/s; "
          f"ratio {evs / bare:.3f}")
    print(f"  completion rate {m.info['capsule_completion_rate']:.4f}, "
          f"{m.info['capsule_messages_per_capsule']:.1f} messages per capsule, "
          f"{m.counters['capsules_accepted_twice']} accepted twice")


if __name__ == "__main__":
    main()
