"""10^5 simulated nodes with both gossip tiers and the DHT: memory and time per phase.

Issue #17 asks for 10^5 nodes with cells, HyParView + Plumtree and the DHT in ≤ 20 GiB.
This bench runs `sim/scale_state.py` (the colony built at its converged state with the
real cores, then run for a window, then checked) in a fresh child process and prints,
per phase, the CPU seconds and the RSS it added per node: tier 2's joins (with every
node's slot, keys and unstarted tier-1 cores), the cells' member tables, the DHT cores
and their tables, the window; then the peak RSS against the limit, the window's cost
per node·simulated second and its events per CPU second against a bare heapq loop timed
in the same process, and the run's checks (cell views, tier-2 delivery, DHT recall).
What it does not measure: join costs and the split cascade (bench/combined.py,
bench/sim_colony.py) and the DHT rendezvous reads (the directory oracle answers them).

Run: .venv/bin/python bench/sim_scale.py --nodes 100000 --cap 500
(`--build .build/mypyc` runs the child in the mypyc-compiled copy from `make sim-compiled`;
`--no-huge-pages` leaves the memory in 4 KiB pages, to compare: sim/hugepages.py.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30
#: Issue #17: 10^5 nodes with all of it in at most this much memory.
LIMIT_BYTES = 20 * GIB
#: Issue #17: 10^5 nodes × 10 simulated minutes in at most this much wall time.
LIMIT_10_MIN_S = 2 * 3600.0
PHASES = ("tier2", "cells", "dht", "window", "checks")
LABELS = {
    "tier2": "tier 2 joins + settle (slots, keys, tier-1 cores unstarted, TopicsCore)",
    "cells": "cells: start, merge the cell's push-pull (member tables)",
    "dht": "DHT: a Kademlia core per node, converged tables, provides",
    "window": "window: everything running",
    "checks": "checks: views, broadcasts, lookups' recall",
}


def child(nodes: int, cap: int, window_s: float, seed: int, huge: bool = True) -> dict[str, Any]:
    from bench.sim import _peak_rss as _peak
    from bench.sim import _rss, bare_hold
    from sim.scale_state import ScaleRun, ScaleSim, summary_lines, to_json

    gc.collect()
    base = _rss()
    sim = ScaleSim(ScaleRun(nodes=nodes, cap=cap, window_s=window_s, seed=seed), huge_pages=huge)
    c_window = 0.0

    def progress(sim_s: float, events: int) -> None:
        """A long window's progress on stderr (the parent passes it through)."""
        cpu = time.process_time() - c_window
        print(json.dumps({"window_sim_s": sim_s, "events": events, "cpu_s": round(cpu, 1),
                          "us_per_node_sim_s": round(cpu / (nodes * sim_s) * 1e6, 2),
                          "rss_gib": round(_rss() / GIB, 3)}), file=sys.stderr, flush=True)

    steps: dict[str, Callable[[], object]] = {
        "tier2": sim.phase_tier2, "cells": sim.phase_cells, "dht": sim.phase_dht,
        "window": lambda: sim.phase_window(min(60.0, window_s), progress),
        "checks": sim.phase_checks}
    phases: dict[str, dict[str, float]] = {}
    for name in PHASES:
        c0 = c_window = time.process_time()
        before = _rss()
        steps[name]()
        cpu = time.process_time() - c0
        gc.collect()
        phases[name] = {"cpu_s": cpu, "rss_added": _rss() - before, "rss": _rss() - base}
        print(json.dumps({"phase": name, **phases[name], "peak": _peak() - base}),
              file=sys.stderr, flush=True)
    bare = max(bare_hold(300_000, 10_000, s, time.process_time) for s in range(2))
    return {"nodes": nodes, "cap": cap, "seed": seed, "window_s": window_s, "phases": phases,
            "huge_pages": sim.huge_pages.enabled, "collapsed": sim.huge_pages.collapsed,
            "peak_bytes": _peak() - base, "bare_events_per_cpu_s": bare,
            "lines": summary_lines(sim.out), "report": to_json(sim.out),
            "compiled": sum(1 for m in list(sys.modules.values())
                            if str(getattr(m, "__file__", "")).endswith(".so")
                            and m.__name__.split(".")[0] in ("gossip", "sim", "overlay", "dht"))}


def run_child(nodes: int, cap: int, window_s: float, seed: int,
              build: Path | None, huge: bool = True) -> dict[str, Any]:
    root = build or ROOT
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "sim_scale.py"), "--child", str(nodes), str(cap),
         str(window_s), str(seed), str(int(huge))], check=True, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(root)})  # progress: the child's stderr
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def report(r: dict[str, Any], wall: float, load0: float) -> list[str]:
    n = int(r["nodes"])
    ph = r["phases"]
    huge = f"on: {r['collapsed'] / GIB:.2f} GiB collapsed" if r["huge_pages"] else "off"
    lines = [f"scale (sim/scale_state.py): N = {n:,}, cells of ≤ {r['cap']:,}, seed "
             f"{r['seed']}, window {r['window_s']:g} simulated s; "
             f"{'compiled modules ' + str(r['compiled']) if r['compiled'] else 'pure Python'}; "
             f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
             f"wall {wall:.0f} s; huge pages {huge}"]
    for name in PHASES:
        p = ph[name]
        lines.append(f"  {LABELS[name]:<72} CPU {p['cpu_s']:8.1f} s  RSS "
                     f"+{p['rss_added'] / n:9,.0f} B/node  (total {p['rss'] / GIB:6.2f} GiB)")
    ev = int(r["report"]["counts"][-3])
    w = ph["window"]["cpu_s"]
    rate = ev / w if w else 0.0
    lines.append(f"  window: {ev:,} events in {w:.1f} s CPU = {w / (n * r['window_s']) * 1e6:.1f} "
                 f"µs per node·sim-s; {rate:,.0f} events per CPU s, "
                 f"{rate / r['bare_events_per_cpu_s']:.3f} of the bare heapq loop's "
                 f"{r['bare_events_per_cpu_s']:,.0f} (same process)")
    peak = int(r["peak_bytes"])
    total = int(ph["checks"]["rss"])
    lines.append(f"  memory: {total / GIB:.2f} GiB at the end, peak {peak / GIB:.2f} GiB "
                 f"({peak / n:,.0f} B per node) — limit 20 GiB: ratio {peak / LIMIT_BYTES:.2f} "
                 f"{'(met)' if peak <= LIMIT_BYTES else '(NOT met)'}")
    build = sum(ph[name]["cpu_s"] for name in ("tier2", "cells", "dht"))
    per = w / (n * r["window_s"])
    if n >= 100_000 and r["window_s"] >= 600:
        lines.append(f"  {n:,} nodes × {r['window_s']:g} simulated s from the built state: "
                     f"{build + w:,.0f} s CPU (limit {LIMIT_10_MIN_S:,.0f} s: ratio "
                     f"{(build + w) / LIMIT_10_MIN_S:.2f})")
    else:
        # Stated as an extrapolation: the window's cost per node·sim-s at this N, and
        # the build scaled linearly (its parts are O(N · cell size)).
        est = build * 100_000 / n + per * 100_000 * 600
        lines.append(f"  EXTRAPOLATED (not run): 10^5 nodes × 600 simulated s from the built "
                     f"state ≈ {est:,.0f} s CPU in one process = {est / 3600:.2f} h (limit "
                     f"2 h: ratio {est / LIMIT_10_MIN_S:.2f}); the window's cost per node·sim-s "
                     f"at N = {n:,}, the build scaled linearly")
    lines += r["lines"]
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, cap, window_s, seed, huge = sys.argv[2:7]
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(int(n), int(cap), float(window_s), int(seed), huge == "1")))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10_000, help="colony size (default 10,000)")
    ap.add_argument("--cap", type=int, default=500, help="cell cap (default 500)")
    ap.add_argument("--window-s", type=float, default=10.0,
                    help="simulated seconds with everything running (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", type=Path, default=None,
                    help="run the child in this copy of the tree (e.g. .build/mypyc)")
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="do not ask for huge pages (sim/hugepages.py), to compare")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = run_child(a.nodes, a.cap, a.window_s, a.seed, a.build, not a.no_huge_pages)
    print("\n".join(report(r, time.perf_counter() - t0, load0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
