"""Tier-2 overlay benchmark: HyParView + Plumtree in the simulator at 10^3, 10^4 (10^5).

Each size runs in a fresh child process (so its RSS is its own): N nodes join one
topic, warm up, broadcast `--broadcasts` times from random nodes, lose 20 % of the
nodes at once, repair for 30 s and broadcast again (sim/tier2_run.py). Printed for
each size, with the limit it is judged by and the ratio:

- delivery: worst round, stable network (limit 1.0) and after repair (limit 0.99);
- RMR, mean over stable rounds (limit 1.0: iroh-gossip's multi-sender bound,
  `tests/sim.rs`, at 100 peers);
- LDH, mean over stable rounds, in hops (limit 19: iroh's multi-sender bound 18 at
  100 peers, +1 because iroh counts the round of the received message). Tree depth
  grows with log N, so at 10^4 the 100-peer bound is exceeded; printed as measured;
- memory per node: (peak RSS − RSS after imports) / N, against 20 GiB / 10^5 nodes
  (DESIGN §8's budget for the whole 10^5-node simulation; this is the tier-2 part);
- wall time per node × simulated second, against 2 h / (10^5 nodes × 600 s);
- simulator events/s, against 0.1 × a bare heapq loop measured in the same run.

The load average is printed next to the figures (the machine is shared).
Run: .venv/bin/python bench/topic_overlay.py [--big] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1 << 30
MEM_LIMIT_B = 20 * GIB / 100_000
WALL_LIMIT_S = 7200 / (100_000 * 600)


def bare_heapq_events_per_s(n_events: int = 1_000_000, heap_size: int = 10_000) -> float:
    """A bare hold loop (pop, call, push one) as the speed reference (the same loop
    as bench/sim.py's `bare_hold`)."""
    rng = random.Random(1)
    count = [0]

    def fn(arg: object) -> None:
        count[0] += 1

    heap = [(rng.random(), i, fn, None) for i in range(heap_size)]
    heapq.heapify(heap)
    seq = heap_size
    pop, push, rand = heapq.heappop, heapq.heappush, rng.random
    t0 = time.perf_counter()
    for _ in range(n_events):
        when, _, f, arg = pop(heap)
        f(arg)
        seq += 1
        push(heap, (when + rand(), seq, f, arg))
    return n_events / (time.perf_counter() - t0)


def child(nodes: int, seed: int, broadcasts: int) -> None:
    from sim.tier2_run import OverlayRun, OverlaySim

    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = OverlayRun(nodes=nodes, seed=seed, broadcasts=broadcasts, crash_fraction=0.2,
                     join_spacing_s=max(0.002, 20.0 / nodes))
    t0 = time.perf_counter()
    sim = OverlaySim(run)
    rep = sim.run()
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "nodes": nodes, "seed": seed, "wall_s": wall, "sim_s": sim.engine.now,
        "events": rep.events, "bytes_per_node": (peak_kib - base_kib) * 1024 / nodes,
        "delivery_stable": rep.worst("stable", "delivery"),
        "delivery_failure": rep.worst("during-failure", "delivery"),
        "delivery_repaired": rep.worst("repaired", "delivery"),
        "rmr_first": rep.mean("first", "rmr"), "rmr_stable": rep.mean("stable", "rmr"),
        "rmr_repaired": rep.mean("repaired", "rmr"),
        "ldh_stable": rep.mean("stable", "ldh"), "ldh_stable_max": rep.worst("stable", "ldh"),
        "ldh_repaired": rep.mean("repaired", "ldh"),
        "views": {k: {"asym": v.asymmetric_links, "components": v.components,
                      "isolated": v.isolated, "degree": v.degree,
                      "max_entries": v.max_entries} for k, v in rep.views.items()},
    }
    print(json.dumps(out))


def row(name: str, value: float, limit: float, higher_is_better: bool, fmt: str) -> str:
    ratio = value / limit if limit else float("nan")
    ok = value >= limit if higher_is_better else value <= limit
    sign = "≥" if higher_is_better else "≤"
    return (f"  {name:<34} {format(value, fmt):>12}   limit {sign} {format(limit, fmt):<10}"
            f" ratio {ratio:6.3f}  {'ok' if ok else 'OVER'}")


def report(r: dict[str, object], bare: float) -> None:
    n = int(r["nodes"])  # type: ignore[call-overload]
    f = {k: float(v) for k, v in r.items() if isinstance(v, (int, float))}
    print(f"N = {n:,}  (seed {r['seed']}, simulated {f['sim_s']:.0f} s, {int(f['events']):,} "
          f"events, wall {f['wall_s']:.1f} s, load {os.getloadavg()[0]:.2f})")
    print(row("delivery, stable (worst round)", f["delivery_stable"], 1.0, True, ".4f"))
    print(row("delivery, right after 20 % crash", f["delivery_failure"], 0.95, True, ".4f"))
    print(row("delivery, after repair (worst)", f["delivery_repaired"], 0.99, True, ".4f"))
    print(row("RMR, stable (mean)", f["rmr_stable"], 1.0, False, ".3f"))
    print(row("RMR, after repair (mean)", f["rmr_repaired"], 1.0, False, ".3f"))
    print(row("LDH hops, stable (mean)", f["ldh_stable"], 19.0, False, ".1f"))
    print(row("memory per node (bytes)", f["bytes_per_node"], MEM_LIMIT_B, False, ",.0f"))
    per = f["wall_s"] / (n * f["sim_s"])
    print(row("wall s per node·sim-s", per, WALL_LIMIT_S, False, ".2e"))
    evs = f["events"] / f["wall_s"]
    print(row("events/s vs bare heapq", evs / bare, 0.1, True, ".3f"))
    print(f"  (first payload RMR {f['rmr_first']:.2f}: it floods; LDH stable max "
          f"{f['ldh_stable_max']:.0f}; bare heapq {bare:,.0f} events/s)")
    for label, v in r["views"].items():  # type: ignore[attr-defined]
        print(f"  views {label}: asymmetric {v['asym']}, components {v['components']}, "
              f"isolated {v['isolated']}, max entries/node {v['max_entries']}, "
              f"degree {v['degree']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--big", action="store_true", help="also N = 100,000 (minutes, ~2 GiB)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--broadcasts", type=int, default=10)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seed, args.broadcasts)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.big:
        sizes.append(100_000)
    bare = bare_heapq_events_per_s()
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--seed", str(args.seed),
             "--broadcasts", str(args.broadcasts)],
            capture_output=True, text=True, check=True)
        report(json.loads(proc.stdout.strip().splitlines()[-1]), bare)


if __name__ == "__main__":
    main()
