"""`colony sim run|list|check|fidelity|campaign|overlay|cells|combined|scale|aggregate`:
the simulator from the command line.

Thin: parse, load the scenario, run `sim.runner`, write metrics (JSON, CSV) and plots
(PNG), print a short summary. Errors in scenario files come back as `ScenarioError`
(a ConfigError) naming the file, line, table and key; main.py prints them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Subparsers, help_command

if TYPE_CHECKING:
    from sim.metrics import Metrics

RUN_EPILOG = """\
SCENARIO is a TOML file or the name of a bundled scenario (see `colony sim list`).
Outputs in --out (default ./sim-out/<scenario name>):
  metrics.json      counters and distributions (count, mean, p50, p90, p99, …)
  timeseries.csv    live nodes, false positives, view accuracy, … per sample interval
  lookups.csv, detections.csv, events.csv, load.csv   one row per item
  *.png             plots (unless --no-plots)
The same scenario and seed give byte-identical metric files.

examples:
  colony sim run gossip-failures --seed 7
  colony sim run my.toml --nodes 5000 --duration 600 --out /tmp/run1
"""


def _summary_lines(m: Metrics) -> list[str]:
    d = m.summary()["distributions"]
    lines = []
    for key, label in (
        ("lookup_hops", "lookup hops"),
        ("lookup_latency_s", "lookup latency (s)"),
        ("lookup_found_closest", "lookups that found the closest node"),
        ("providers_found", "provider lookups that found a provider"),
        ("detect_first_s", "first detection (s)"),
        ("detect_all_s", "detection by all (s)"),
        ("event_latency_s", "user event latency (s)"),
        ("event_coverage", "user event coverage"),
        ("load_sent_per_s", "messages sent per node per s"),
        ("fetch_s", "fetch time (s)"),
        ("capsule_submit_to_running_s", "capsule submit → running (s)"),
        ("capsule_submit_to_finished_s", "capsule submit → finished (s)"),
        ("trigger_event_to_fired_s", "trigger event → fired (s)"),
        ("trigger_event_to_running_s", "trigger event → capsule running (s)"),
    ):
        st = d.get(key)
        if st and st.get("count"):
            lines.append(f"  {label:<42} mean {st['mean']:<10g} p50 {st['p50']:<10g} "
                         f"p99 {st['p99']:<10g} (n={st['count']})")
    c = m.counters
    if "capsule_completion_rate" in m.info:
        lines.append(f"  capsules: {c['capsules_submitted']} submitted, completion rate "
                     f"{m.info['capsule_completion_rate']:.4f}, "
                     f"{m.info['capsule_messages_per_capsule']:.1f} messages per capsule, "
                     f"{c['capsules_accepted_twice']} accepted twice")
    if "trigger_exactly_once" in m.info:
        lines.append(f"  triggers: {c['triggers_created']} created, "
                     f"{c['trigger_events_published']} events, {c['trigger_events_fired']} "
                     f"fired, {c['trigger_events_missed']} missed "
                     f"({c['trigger_events_missed_custody_blocked']} behind custody that "
                     f"lost its majority), {c['trigger_duplicate_firings']} duplicate "
                     f"firings collapsed, {c['trigger_replacements']} re-placements")
    lines.append(f"  false suspicions {c.get('false_suspicions', 0)}, "
                 f"false failures {c.get('false_failures', 0)}, "
                 f"messages {c.get('net_sent', 0)}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from sim import scenario, simulations

    sc = scenario.load(scenario.resolve(args.scenario))
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.nodes is not None:
        changes["nodes"] = args.nodes
    if args.duration is not None:
        changes["duration_s"] = args.duration
    if changes:
        sc = sc.with_(**changes)
    out = args.out or Path("sim-out") / sc.name
    t0 = time.perf_counter()
    sim = simulations.simulation_for(sc, progress=not args.quiet and sys.stderr.isatty())
    m = sim.run()
    wall = time.perf_counter() - t0
    files = m.write(out)
    if not args.no_plots:
        from sim.plots import write_plots

        files += write_plots(m, out)
    if not args.quiet:
        print(f"{sc.name}: {sc.nodes} nodes, {sc.duration_s:g} s simulated, seed {sc.seed}: "
              f"{sim.engine.events_run} events in {wall:.1f} s wall")
        for line in _summary_lines(m):
            print(line)
        print(f"wrote {len(files)} files to {out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from sim import scenario

    for p in scenario.bundled():
        sc = scenario.load(p)
        print(f"{p.stem:<22} {sc.nodes:>7} nodes {sc.duration_s:>7g} s  {sc.description}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from sim import scenario

    path = scenario.resolve(args.scenario)
    sc = scenario.load(path)
    print(f"{path}: ok ({sc.nodes} nodes, {', '.join(sc.protocols)}, "
          f"{len(sc.workloads)} workloads, {sc.duration_s:g} s)")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from sim import fidelity

    rows = fidelity.run_all(quick=args.quick, seed=args.seed or 1)
    for r in rows:
        print(fidelity.format_row(r))
    if args.out is not None:
        fidelity.write(rows, args.out)
        print(f"wrote {args.out}")
    return 0


def _overlay(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sim.tier2_run import OverlayRun, run_overlay, summary_lines, to_json

    run = OverlayRun(nodes=args.nodes, seed=args.seed, broadcasts=args.broadcasts,
                     crash_fraction=args.crash, single_sender=args.single_sender)
    if args.active:
        run = replace(run, active_size=args.active, passive_size=6 * args.active)
    rep = run_overlay(run)
    return _print_report(summary_lines(rep), to_json(rep), args.out)


def _print_report(lines: list[str], data: object, out: Path | None) -> int:
    """Print a run's summary lines; with `--out`, also write its JSON report there."""
    import json

    for line in lines:
        print(line)
    if out is not None:
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def _cells(args: argparse.Namespace) -> int:
    from sim.cells_rdv import RdvCellsSim, cells_sim, rdv_lines
    from sim.cells_run import CellsRun, summary_lines

    sim = cells_sim(CellsRun(nodes=args.nodes, seed=args.seed, cap=args.cap,
                             settle_s=args.settle, rendezvous=args.rendezvous))
    rep = sim.run()
    for line in summary_lines(rep) + (
            rdv_lines(sim.rdv_stats) if isinstance(sim, RdvCellsSim) else []):
        print(line)
    return 0


def _combined(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sim.cells_rdv import RdvCellsSim, rdv_lines
    from sim.combined_run import CombinedRun, CombinedSim, suite_run, summary_lines, to_json

    run = suite_run(args.seed) if args.suite else CombinedRun(seed=args.seed)
    over = {k: v for k, v in (("nodes", args.nodes), ("cap", args.cap),
                              ("crash_fraction", args.crash)) if v is not None}
    sim = CombinedSim(replace(run, rendezvous=args.rendezvous, **over))
    rep = sim.run()
    extra = rdv_lines(sim.cells.finish_rdv()) if isinstance(sim.cells, RdvCellsSim) else []
    return _print_report(summary_lines(rep) + extra, to_json(rep), args.out)


def _scale(args: argparse.Namespace) -> int:
    from sim.scale_state import ScaleRun, ScaleSim, summary_lines, to_json

    sim = ScaleSim(ScaleRun(nodes=args.nodes, cap=args.cap, window_s=args.window,
                            seed=args.seed))
    steps = (("tier-2 joins", sim.phase_tier2), ("cells", sim.phase_cells),
             ("DHT", sim.phase_dht), (f"{args.window:g} s window", sim.phase_window),
             ("checks", sim.phase_checks))
    for name, step in steps:  # progress: a 10^5-node run takes tens of minutes
        t0 = time.monotonic()
        print(f"  {name} …", end="", file=sys.stderr, flush=True)
        step()
        print(f" {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return _print_report(summary_lines(sim.out), to_json(sim.out), args.out)


def _aggregate(args: argparse.Namespace) -> int:
    from sim.aggregation import AggregationRun, run_aggregation
    from sim.aggregation import summary_lines as agg_lines

    rep = run_aggregation(AggregationRun(
        nodes=args.nodes, seed=args.seed, rounds=args.rounds, pull=not args.push_only,
        graph=args.graph, crash_fraction=args.crash))
    for line in agg_lines(rep):
        print(line)
    return 0


def _campaign(args: argparse.Namespace) -> int:
    from sim import campaign as C
    from sim.campaign_check import INVARIANTS
    from sim.faults import printable

    kinds = tuple(k for k in (args.only or "").split(",") if k)
    cfg = C.CampaignConfig(nodes=args.nodes, capsules=args.capsules, kinds=kinds,
                           amnesia=not args.no_amnesia)  # fmt: skip

    def report(r: C.SeedResult) -> None:
        if args.verbose:
            print(f"seed {r.seed}: {len(r.schedule)} faults")
            for line in printable(r.schedule).splitlines():
                print(f"  {line}")
            print(f"  {r.events} events; " + ", ".join(f"{k} {v}" for k, v in r.stats.items()))
            for v in r.checker.violations:
                print(f"  VIOLATION {v.line()}")
        elif not r.ok:
            bad = ", ".join(k for k, v in r.checker.counts().items() if v)
            print(f"seed {r.seed}: {bad}")

    s = C.run_campaign(args.seeds, args.start, cfg, report)
    counts = s.counts()
    print(f"campaign: {len(s.results)} seeds from {args.start}, {cfg.nodes} nodes, "
          f"{cfg.capsules} capsules each: {s.wall_s:.1f} s wall, "
          f"{s.seeds_per_minute:.1f} seeds/minute")
    for kind in INVARIANTS:
        seeds = s.failing(kind)
        line = f"  {kind:<16} violated on {counts.get(kind, 0)} seeds"
        if seeds:
            line += f"; replay: {C.replay_command(seeds[0], cfg)}"
        print(line)
    blocked = [r.seed for r in s.results if r.stats.get("blocked")]
    if blocked:
        n = sum(r.stats["blocked"] for r in s.results)
        print(f"  blocked: {n} capsules on seeds {blocked[:8]} (a majority of a "
              "configuration lost their disks: by design, not a violation)")
    return 1 if any(counts.values()) else 0


CAMPAIGN_EPILOG = """\
Each seed is a random fault schedule (partitions symmetric, asymmetric and
flapping; crashes with and without disk loss; graceful leaves and restarts; loss
0-30 %; duplication; reordering; clock skew) over a capsule workload whose custody
runs on each node's own gossip view. Invariants (checked after every step):
one_receipt, token_increase, liveness (acknowledged capsules finish within 150 s
after faults stop, unless a majority of a configuration lost their disks: those
are counted as blocked), membership (views converge within 60 s after heal),
member_only; every 2 s: reported_outcome (no node reports an outcome custody
never committed); 150 s after faults stop: stale_copy (no node still holds one);
bounded (a seed ends within 200,000 events per node: a message storm is a
finding, not a hang). A node that lost its disk restarts amnesiac, as the daemon
does (--no-amnesia: voting as if it remembered, which is unsafe). Exit status 1
if any invariant was violated. See docs/simulation.md and docs/reliability.md.

examples:
  colony sim campaign --seeds 100
  colony sim campaign --seeds 1 --start 17 --verbose
  colony sim campaign --seeds 50 --only Crash,Leave
"""


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sim",
        parents=[common],
        help="run deterministic simulations of many nodes (real dht + gossip cores)",
        description="Deterministic discrete-event simulator: many nodes in one process, "
        "each running the real dht/ and gossip/ cores over a modelled network (latency "
        "by region, jitter, loss, NAT, partitions, bandwidth) with churn and workloads.",
    )
    s = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    p.set_defaults(func=help_command(p))

    r = s.add_parser(
        "run", parents=[common], help="run a scenario; write metrics (JSON/CSV) and plots",
        description="Run one scenario and write its metrics and plots.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("scenario", metavar="SCENARIO", help="TOML file or bundled scenario name")
    r.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    r.add_argument("--out", type=Path, default=None,
                   help="output directory (default: sim-out/<scenario name>)")
    r.add_argument("--nodes", type=int, default=None, help="override [nodes] count")
    r.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="override [scenario] duration_s")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    r.set_defaults(func=_run)

    ls = s.add_parser("list", parents=[common], help="list the bundled scenarios")
    ls.set_defaults(func=_list)

    c = s.add_parser("check", parents=[common], help="validate a scenario file, run nothing")
    c.add_argument("scenario", metavar="SCENARIO")
    c.set_defaults(func=_check)

    f = s.add_parser(
        "fidelity", parents=[common],
        help="compare simulated SWIM, Kademlia and push-gossip figures with their analyses",
        description="Run the fidelity experiments of docs/simulation.md and print "
        "formula, analytic value and simulated value for each.",
    )
    f.add_argument("--quick", action="store_true", help="small N (seconds, as in the tests)")
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    f.set_defaults(func=_fidelity)

    o = s.add_parser(
        "overlay", parents=[common],
        help="tier-2 overlay: HyParView + Plumtree over N nodes (delivery, RMR, LDH)",
        description="N nodes join one topic (HyParView), broadcast from random nodes "
        "(Plumtree), optionally lose a share of nodes at once and broadcast again after "
        "repair. Prints delivery, RMR and LDH per phase and the active-view checks.",
    )
    o.add_argument("--nodes", type=int, default=200)
    o.add_argument("--seed", type=int, default=1)
    o.add_argument("--broadcasts", type=int, default=10, help="rounds per phase")
    o.add_argument("--crash", type=float, default=0.0, metavar="FRACTION",
                   help="crash this share of nodes after the stable rounds (e.g. 0.2)")
    o.add_argument("--active", type=int, default=0,
                   help="active view size (passive = 6x); default 5")
    o.add_argument("--single-sender", action="store_true",
                   help="every round from the same node (default: a random node)")
    o.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    o.set_defaults(func=_overlay)

    ce = s.add_parser(
        "cells", parents=[common],
        help="tier-1 cells: N SWIM nodes join, cells split at the cap (key prefixes)",
        description="N nodes of real SWIM + cell cores join one after another; a cell "
        "above the cap splits by key prefix. Prints the cells, splits and whether every "
        "node's SWIM view is exactly its cell.",
    )
    ce.add_argument("--nodes", type=int, default=400)
    ce.add_argument("--seed", type=int, default=1)
    ce.add_argument("--cap", type=int, default=100, help="cell size cap (daemon: 5,000)")
    ce.add_argument("--settle", type=float, default=240.0, help="simulated s after the joins")
    ce.add_argument("--rendezvous", choices=("oracle", "dht"), default="oracle",
                    help="how nodes find the other cells: a directory oracle (default) or "
                    "each node's own DHT rendezvous, as the daemon (sim/cells_rdv.py)")
    ce.set_defaults(func=_cells)

    co = s.add_parser(
        "combined", parents=[common],
        help="cells + tier 2 on every node, a 20 %% crash and churn (issue #17)",
        description="Every node runs its cell's SWIM + cell core and the tier-2 overlay "
        "(HyParView + Plumtree) on one engine and network model. Joins (cells split at "
        "the cap), warm-up, broadcasts, a crash of a share of nodes at once, churn "
        "(joins and graceful leaves), repair; prints tier-2 delivery/RMR/LDH per phase "
        "and whether every live node's SWIM view is exactly its cell. The cell "
        "directory is an oracle unless --rendezvous dht. Timings: bench/combined.py.",
    )
    co.add_argument("--seed", type=int, default=1)
    co.add_argument("--nodes", type=int, default=None, help="default 1,000 (--suite: 160)")
    co.add_argument("--cap", type=int, default=None, help="cell cap; default 100 (--suite: 40)")
    co.add_argument("--crash", type=float, default=None, metavar="FRACTION",
                    help="share of live nodes that crash at once (default 0.2)")
    co.add_argument("--suite", action="store_true",
                    help="the test suite's size (tests/sim/test_combined_sim.py)")
    co.add_argument("--rendezvous", choices=("oracle", "dht"), default="oracle",
                    help="cell directory: an oracle (default) or each node's own DHT "
                    "rendezvous with real Kademlia cores (sim/cells_rdv.py)")
    co.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    co.set_defaults(func=_combined)

    sc = s.add_parser(
        "scale", parents=[common],
        help="a large colony (10^5 nodes) built at its converged state, then run",
        description="Both gossip tiers and the DHT on every node, built at the state "
        "their joins end in (tier-2 joins are real; cells split at the cap and filled by "
        "one push-pull each; converged DHT tables), then run for a window with "
        "everything live and checked: cell views, tier-2 delivery, DHT lookups. For "
        "sizes the joining runners cannot reach; memory and time: bench/sim_scale.py.",
    )
    sc.add_argument("--nodes", type=int, default=10_000, help="default 10,000")
    sc.add_argument("--cap", type=int, default=500, help="cell cap (default 500)")
    sc.add_argument("--window", type=float, default=10.0,
                    help="simulated seconds with everything running (default 10)")
    sc.add_argument("--seed", type=int, default=1)
    sc.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    sc.set_defaults(func=_scale)

    ag = s.add_parser(
        "aggregate", parents=[common],
        help="push-sum over the tier-2 overlay: aggregation error per round",
        description="Build the HyParView overlay, then run push-sum (average of free "
        "CPUs; sum of member count and free CPUs) and print the error per round.",
    )
    ag.add_argument("--nodes", type=int, default=500)
    ag.add_argument("--seed", type=int, default=1)
    ag.add_argument("--rounds", type=int, default=20)
    ag.add_argument("--graph", choices=("overlay", "complete"), default="overlay",
                    help="targets from the active view, or uniform over all nodes")
    ag.add_argument("--push-only", action="store_true", help="no pull half (Kempe's push-sum)")
    ag.add_argument("--crash", type=float, default=0.0, metavar="FRACTION",
                    help="crash this share of nodes at round 10")
    ag.set_defaults(func=_aggregate)

    cp = s.add_parser(
        "campaign", parents=[common],
        help="randomised fault campaign: many seeds, invariants checked after every step",
        description="Run seeds START … START+SEEDS-1, each a random fault schedule over "
        "a capsule workload on real gossip views; print seeds/minute, violations per "
        "invariant and a replay command for a failing seed.",
        epilog=CAMPAIGN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("--seeds", type=int, default=10, help="how many seeds (default 10)")
    cp.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    cp.add_argument("--nodes", type=int, default=16, help="nodes per seed (default 16)")
    cp.add_argument("--capsules", type=int, default=30, help="capsules per seed (default 30)")
    cp.add_argument("--only", default="", metavar="KINDS",
                    help="comma-separated fault kinds (Partition, Flapping, Crash, Leave, "
                    "Loss, Duplicate, Reorder, ClockSkew); default all")
    cp.add_argument("--no-amnesia", action="store_true",
                    help="restart a node that lost its disk with its keys and an empty "
                    "custody store, voting as if it remembered (the daemon abstains "
                    "instead: overlay/capsule/amnesia.py); shows why it must: seed 281 "
                    "with --nodes 6 accepts two receipts")
    cp.add_argument("-v", "--verbose", action="store_true",
                    help="print each seed's schedule, counters and violations")
    cp.set_defaults(func=_campaign)
