"""Cells + tier 2 together, with churn (sim/combined_run.py): cost, and issue #17's limits.

Issue #17: the simulator runs the same cores (cells + HyParView + Plumtree + DHT) with
churn and faults; 10^5 nodes with all of it in ≤ 20 GiB; 10^4 nodes × 1 simulated hour
in ≤ 1 h wall. This bench measures the combined scenario (tier 1 and tier 2 on every
node; the DHT is *not* run, the cell directory is an oracle) and extrapolates:

- a "time" child runs the whole scenario and prints CPU s per phase (process time, so
  other jobs on the machine count less than in wall time), events, simulated seconds,
  peak RSS − RSS after imports, and the state counts at the end;
- two "mem" children (the same N at two caps) run joins + warm-up under tracemalloc and
  print the live bytes and the member-table entries at the end; the two points give
  bytes per member entry (slope) and fixed bytes per node (intercept: tier 2, SWIM's
  fixed part, the simulator's slot);
- the extrapolation (labelled as such): memory of 10^5 nodes = 10^5 × (fixed + entries
  per node × B/entry) with cells of the simulator's cap and of the daemon's (5,000);
  wall of 10^4 nodes × 3,600 s = the steady-state CPU per node·sim-s × 10^4 × 3,600 +
  the join cost per node × 10^4, at the measured cap.

Run: PYTHONPATH=. .venv/bin/python bench/combined.py [--nodes 1000 --cap 100] [--quick]
(the default size took ≈ 38 min wall on a loaded 2-core machine, --quick ≈ 6 min).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1 << 30
MEM_LIMIT_B = 20 * GIB  # 10^5 nodes, everything
WALL_LIMIT_S = 3600.0  # 10^4 nodes × 1 simulated hour
DAEMON_CAP = 5000


def _run(nodes: int, cap: int, seed: int) -> Any:
    from sim.combined_run import CombinedRun

    # Joins over 100 s at any N (10/s at the default 1,000), the rest as `CombinedRun`.
    return replace(CombinedRun(), nodes=nodes, cap=cap, seed=seed,
                   join_spacing_s=max(0.02, 100.0 / nodes))


def _entries(sim: Any) -> tuple[int, int, int]:
    """Member-table entries (sum, max) and the largest tier-2 state over live nodes."""
    c = sim.cells
    tables = [len(c.world.nodes[i].core.swim.table) for i in c.cell_of]
    w2 = sim.t2.world
    t2 = max((w2.cores[i].entries() for i in c.cell_of), default=0)
    return sum(tables), max(tables, default=0), t2


def child_time(nodes: int, cap: int, seed: int) -> None:
    from sim.combined_run import CombinedSim

    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sim = CombinedSim(_run(nodes, cap, seed))
    cpu: dict[str, float] = {}
    sim_s: dict[str, float] = {}
    events: dict[str, int] = {}
    for name in ("join", "stable", "churn", "repair"):
        t0, s0, e0 = time.process_time(), sim.engine.now, sim.engine.events_run
        getattr(sim, f"phase_{name}")()
        cpu[name] = time.process_time() - t0
        sim_s[name] = sim.engine.now - s0
        events[name] = sim.engine.events_run - e0
    rep = sim.finish()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total, biggest, t2 = _entries(sim)
    print(json.dumps({
        "nodes": nodes, "cap": cap, "slots": len(sim.cells.keys), "cpu": cpu, "sim_s": sim_s,
        "events": events, "rss_delta_b": (peak_kib - base_kib) * 1024,
        "entries": total, "live": len(sim.cells.cell_of), "max_table": biggest,
        "max_tier2": rep.max_tier2_entries, "t2_end": t2,
        "delivery": {p: rep.worst(p) for p in ("stable", "during-failure", "repaired")},
        "rmr_stable": rep.mean("stable", "rmr"), "ldh_stable": rep.mean("stable", "ldh"),
        "cells": {k: [len(v.cells), max(v.cells.values()), v.accuracy_min, v.inexact,
                      v.foreign_max] for k, v in rep.cell_views.items()},
    }))


def child_mem(nodes: int, cap: int, seed: int) -> None:
    import tracemalloc

    from sim.combined_run import CombinedSim

    sim = CombinedSim(_run(nodes, cap, seed))
    tracemalloc.start()
    sim.phase_join()
    gc.collect()
    live_b, peak_b = tracemalloc.get_traced_memory()
    total, biggest, t2 = _entries(sim)
    print(json.dumps({"nodes": nodes, "cap": cap, "live_b": live_b, "peak_b": peak_b,
                      "entries": total, "max_table": biggest, "t2_end": t2,
                      "cells": len(sim.cells.directory)}))


def _child(kind: str, nodes: int, cap: int, seed: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--nodes", str(nodes), "--cap", str(cap),
         "--seed", str(seed)], capture_output=True, text=True, check=True)
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def row(name: str, value: float, limit: float, fmt: str) -> str:
    ratio = value / limit
    return (f"  {name:<46} {format(value, fmt):>12}   limit ≤ {format(limit, fmt):<10} "
            f"ratio {ratio:7.3f}  {'ok' if ratio <= 1 else 'OVER'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="N = 300, caps 30 and 60")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "time":
        child_time(args.nodes, args.cap, args.seed)
        return
    if args.child == "mem":
        child_mem(args.nodes, args.cap, args.seed)
        return
    nodes, cap = (300, 60) if args.quick else (args.nodes, args.cap)
    t = _child("time", nodes, cap, args.seed)
    lo = _child("mem", nodes, cap // 2, args.seed)
    hi = _child("mem", nodes, cap, args.seed)
    load = os.getloadavg()[0]

    cpu, sim_s, ev = t["cpu"], t["sim_s"], t["events"]
    print(f"combined (sim/combined_run.py): N = {nodes:,} ({t['slots']:,} slots with churn "
          f"joins), cap {cap}, seed {args.seed}; load {load:.2f} (2 cores, shared)")
    for p in cpu:
        per = cpu[p] / (nodes * sim_s[p]) * 1e6 if sim_s[p] else float("nan")
        print(f"  phase {p:<7} simulated {sim_s[p]:6.0f} s  events {ev[p]:>10,}  CPU "
              f"{cpu[p]:7.1f} s  {per:7.1f} µs per node·sim-s  "
              f"{ev[p] / max(cpu[p], 1e-9):,.0f} events/CPU-s")
    print(f"  delivery worst: stable {t['delivery']['stable']:.4f}, right after the crash "
          f"{t['delivery']['during-failure']:.4f}, repaired {t['delivery']['repaired']:.4f}; "
          f"RMR stable {t['rmr_stable']:.3f}, LDH stable {t['ldh_stable']:.1f}")
    for k, v in t["cells"].items():
        print(f"  cells {k}: {v[0]} cells, largest {v[1]} (cap {cap}), accuracy min "
              f"{v[2]:.4f}, inexact views {v[3]}, foreign max {v[4]}")
    print(f"  state at the end: largest member table {t['max_table']}, largest tier-2 state "
          f"{t['max_tier2']} entries; peak RSS − RSS after imports "
          f"{t['rss_delta_b'] / t['slots']:,.0f} B per node slot")
    # Memory: two points, live bytes per node against member entries per node.
    e_lo, e_hi = lo["entries"] / nodes, hi["entries"] / nodes
    b_lo, b_hi = lo["live_b"] / nodes, hi["live_b"] / nodes
    slope = (b_hi - b_lo) / (e_hi - e_lo) if e_hi != e_lo else float("nan")
    fixed = b_lo - slope * e_lo
    print(f"  tracemalloc after joins + warm-up: cap {cap // 2}: {b_lo:,.0f} B/node at "
          f"{e_lo:.1f} entries/node; cap {cap}: {b_hi:,.0f} B/node at {e_hi:.1f} entries/node")
    print(f"  → {slope:,.0f} B per member entry, {fixed:,.0f} B fixed per node (tier 2, "
          f"SWIM's fixed part, simulator slot; it grows with N in this schedule: member-"
          f"table columns keep the root cell's high-water size, docs/simulation.md)")
    fill = e_hi / cap  # entries per node as a share of the cap, as measured
    print(f"EXTRAPOLATED (not run), from the figures above; entries per node = "
          f"{fill:.2f} × cap as measured:")
    for c in (cap, 250, 1000, DAEMON_CAP):
        mem = 100_000 * (fixed + slope * fill * c)
        print(row(f"memory, 10^5 nodes, cells of cap {c:,} (GiB)", mem / GIB,
                  MEM_LIMIT_B / GIB, ".2f"))
    steady_cpu = cpu["stable"] + cpu["churn"] + cpu["repair"]
    steady_sim = sim_s["stable"] + sim_s["churn"] + sim_s["repair"]
    per_node_s = steady_cpu / (nodes * steady_sim)
    join_per_node = cpu["join"] / nodes  # joins + warm-up (splits settle in it)
    wall = per_node_s * 10_000 * 3600 + join_per_node * 10_000
    print(row(f"CPU, 10^4 nodes × 1 simulated h, cap {cap} (s)", wall, WALL_LIMIT_S, ",.0f"))
    print(f"    = steady {per_node_s * 1e6:.1f} µs per node·sim-s × 10^4 × 3,600 + joins "
          f"and warm-up {join_per_node * 1e3:.1f} ms per node × 10^4; steady cost per node "
          f"grows with the cell size, so a larger cap costs more")


if __name__ == "__main__":
    main()
