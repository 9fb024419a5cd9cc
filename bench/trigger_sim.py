"""Trigger simulation cost and figures, against limits measured in the same run.

Runs the bundled trigger-scale scenario scaled to `--nodes` and `--events` (the same
events per node per second, 1 trigger per 10 nodes as 10^3 per 10^4, the same churn
and run times), in this process, and prints:

1. CPU seconds per 1,000 events and the linear projection to 10^5 events, against the
   capsule simulation's budget of 20 min for the full size (bench/capsule_sim.py):
   ratio = projected / 1,200 s.
2. Simulated events per CPU second against a bare heapq hold loop measured here.
3. Exactly once: events fired, missed (each with its cause: sim/triggers.py
   MISS_REASONS), duplicate firings collapsed, derived capsules accepted twice.
4. Latency: event → derived capsule running p50/p99, against the plain submission's
   submit → running p50 of the same run (the firing's own submission): the ratio is
   what the trigger path (gossip of the event, the holder's firing) adds.

CPU time (process time), not wall time: this machine is shared. The full run is
`colony sim run trigger-scale`; its figures are in docs/simulation.md.
Run: .venv/bin/python bench/trigger_sim.py [--nodes 2000 --events 20000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capsule_sim import BUDGET_S, bare_hold
from sim import scenario
from sim.simulations import simulation_for
from sim.triggers import MISS_REASONS

FULL_NODES = 10_000
FULL_EVENTS = 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000, help="nodes (default 1000)")
    ap.add_argument("--events", type=int, default=10_000, help="user events (default 10000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    base = scenario.load(scenario.resolve("trigger-scale"))
    trig, evw = base.workloads
    rate = evw.rate_per_s * args.nodes / FULL_NODES
    span = args.events / rate
    triggers = max(1, trig.count * args.nodes // FULL_NODES)
    wl = (type(trig)(trig.kind, 0.0, at_s=trig.at_s, count=triggers),
          type(evw)(evw.kind, rate, evw.start_s, evw.start_s + span * 1.2, limit=args.events))
    sc = base.with_(nodes=args.nodes, seed=args.seed, workloads=wl,
                    duration_s=evw.start_s + span + 60.0)  # fmt: skip

    bare = bare_hold(300_000, 50_000, args.seed)
    c0 = time.process_time()
    sim = simulation_for(sc)
    m = sim.run()
    cpu = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = m.counters
    n = c["trigger_events_published"]
    per_k = cpu / n * 1000
    projected = per_k * FULL_EVENTS / 1000
    evs = sim.engine.events_run / cpu
    d = m.summary()["distributions"]
    run, sub = d["trigger_event_to_running_s"], d["capsule_submit_to_running_s"]
    why = ", ".join(f"{r} {c[f'trigger_events_missed_{r}']}" for r in MISS_REASONS)
    print(f"trigger sim N={args.nodes} triggers={c['triggers_created']} events={n}: "
          f"{cpu:.1f} s CPU, {sim.engine.events_run:,} events, max RSS {rss:.0f} MiB")
    print(f"  CPU per 1,000 events: {per_k:.2f} s → 10^5 events ≈ {projected:.0f} s CPU "
          f"(linear: a lower bound at N = 10^4); budget {BUDGET_S} s: "
          f"ratio {projected / BUDGET_S:.2f}")
    print(f"  simulated events per CPU s: {evs:,.0f}; bare heapq loop {bare:,.0f} events/s; "
          f"ratio {evs / bare:.3f}")
    print(f"  fired {c['trigger_events_fired']}, missed {c['trigger_events_missed']} ({why}); "
          f"{c['trigger_duplicate_firings']} duplicate firings collapsed, "
          f"{c['capsules_accepted_twice']} accepted twice, "
          f"{c['trigger_replacements']} re-placements")
    print(f"  event → running p50 {run['p50']:.2f} s, p99 {run['p99']:.2f} s; limit: "
          f"submit → running p50 {sub['p50']:.2f} s (same run); ratio "
          f"{run['p50'] / sub['p50']:.2f}")


if __name__ == "__main__":
    main()
