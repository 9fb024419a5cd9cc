"""Both gossip tiers on every node at once, with churn: issue #17's combined scenario.

Every node runs its cell's `gossip.cell_node.CellNode` (real `Swim` + `CellCore`, tier 1)
and a `gossip.topics.TopicsCore` (real HyParView + Plumtree, tier 2) on one event heap
and one network model. Composed, not forked:

- tier 1 is `sim.cells_run.CellsSim` (its `World`, its cell *directory oracle* standing in
  for the DHT rendezvous keys, its sibling digests from the oracle);
- tier 2 is `sim.tier2_run.OverlaySim`'s phases (broadcast rounds, view checks) on a
  `sim.tier2_world.LinkWorld` built on the *same* engine and the *same* `Network`: node
  slot i is one node in both worlds (same peer id, same place in the latency plane, one
  shared rng for every message's fate);
- by default the DHT is not run: the directory oracle answers "which cell, which
  members" and tier-2 bootstraps are random live nodes (what a rendezvous lookup
  returns). A crashed or departed node leaves the oracle at once (a DHT record would
  linger until its TTL). With `rendezvous="dht"` tier 1 is `sim.cells_rdv.RdvCellsSim`:
  each node's own DHT rendezvous, as the daemon; the oracle then only measures.

The scenario, all from one seed (same seed → identical report):

1. `nodes` join `join_spacing_s` apart: each picks its cell with `choose_cell` from the
   directory and joins the cell's SWIM through three members, and joins the one
   colony-wide topic through three random earlier nodes; cells split at `cap`;
2. `warmup_s`; the cell views are checked ("stable"); tier-2 views are checked; one
   "first" broadcast (it floods and prunes the tree), then `broadcasts` rounds from random
   live nodes (delivery, RMR, LDH; cells reached per round);
3. `crash_fraction` of the live nodes crash at once; one "during-failure" broadcast;
   then `churn_s` of churn: every `churn_every_s` one new node joins and one live node
   leaves gracefully (SWIM `Leave` and `LeaveTopic`, gone `leave_after_s` later);
4. `repair_s` of repair; tier-2 views ("repaired"), `broadcasts` "repaired" rounds,
   and the cell views again ("repaired"): accuracy = share of its cell's live members a
   live node lists as live, foreign = members it lists live that are not in its cell
   (crashed or in another cell), the cells' sizes against the cap.

Per-node state is reported as counts (largest member table, largest tier-2 state); time
and memory are the bench's (bench/combined.py), never in this report.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, cast

from gossip.cell_node import CellNode
from gossip.events import Leave
from gossip.members import LIVE
from gossip.plumtree import Delivered
from gossip.topics import JoinTopic, LeaveTopic, TopicsCore
from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError
from sim.cells_rdv import cells_sim
from sim.cells_run import CellsRun, CellsSim
from sim.network import Network, NetworkConfig
from sim.tier2_run import TOPIC, OverlayRun, OverlaySim, Round, ViewReport
from sim.tier2_world import LinkWorld


@dataclass(frozen=True, slots=True)
class CombinedRun:
    """Defaults: the size bench/combined.py and docs/simulation.md report (N = 1,000)."""

    nodes: int = 1000
    seed: int = 1
    cap: int = 100
    join_spacing_s: float = 0.1
    #: Long enough for the cascade of splits to settle (a hold per level).
    warmup_s: float = 150.0
    hold_s: float = 20.0
    check_interval_s: float = 5.0
    digest_interval_s: float = 10.0
    profile: str = "lan"
    active_size: int = 5
    passive_size: int = 30
    broadcasts: int = 3
    crash_fraction: float = 0.2
    churn_s: float = 30.0
    churn_every_s: float = 2.0
    leave_after_s: float = 2.0
    repair_s: float = 60.0
    network: NetworkConfig = field(default_factory=NetworkConfig)
    #: "oracle" or "dht" (each node's own DHT rendezvous: sim/cells_rdv.py).
    rendezvous: str = "oracle"
    #: Tier 1's idle gossip ticks off the heap (same output: `CellsRun.park_idle`).
    park_idle: bool = True

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.cap < 2 or self.broadcasts < 1:
            raise ConfigError("combined run: nodes ≥ 2, cap ≥ 2 and broadcasts ≥ 1")
        if not 0.0 <= self.crash_fraction < 1.0:
            raise ConfigError("combined run: crash fraction in [0, 1)")
        if min(self.join_spacing_s, self.churn_every_s, self.leave_after_s,
               self.hold_s, self.check_interval_s, self.digest_interval_s) <= 0:
            raise ConfigError("combined run: intervals must be positive")
        if min(self.warmup_s, self.churn_s, self.repair_s) < 0:
            raise ConfigError("combined run: phase lengths must not be negative")

    def churn_events(self) -> int:
        return int(self.churn_s / self.churn_every_s)


@dataclass(slots=True)
class CellViews:
    """Tier-1 check over live nodes: their SWIM views against their cells."""

    live: int
    cells: dict[str, int]
    accuracy_min: float
    accuracy_mean: float
    #: Nodes whose view is not exactly their cell's live members.
    inexact: int
    foreign_max: int
    foreign_nodes: int
    max_members: int


@dataclass(slots=True)
class CombinedReport:
    run: CombinedRun
    rounds: list[Round] = field(default_factory=list)
    #: Per round, how many cells the payload reached (of the cells with live members).
    cells_reached: list[tuple[int, int]] = field(default_factory=list)
    tier2_views: dict[str, ViewReport] = field(default_factory=dict)
    cell_views: dict[str, CellViews] = field(default_factory=dict)
    splits: int = 0
    merges: int = 0
    crashed: int = 0
    joined_churn: int = 0
    left_churn: int = 0
    max_tier2_entries: int = 0
    messages_tier1: int = 0
    messages_tier2: int = 0
    events: int = 0
    sim_s: float = 0.0

    def worst(self, phase: str) -> float:
        return min((r.delivery for r in self.rounds if r.phase == phase), default=float("nan"))

    def mean(self, phase: str, what: str) -> float:
        xs = [float(getattr(r, what)) for r in self.rounds if r.phase == phase]
        return sum(xs) / len(xs) if xs else float("nan")


class _Placed:
    """Tier 2's view of tier 1's `Network`: the slot is already placed (by the tier-1
    world's `add`, same index), everything else is the one shared model."""

    def __init__(self, net: Network) -> None:
        self._net = net
        self._next = 0

    def place(self, region: str | None = None, *, nat: bool | None = None) -> int:
        idx = self._next
        assert idx < len(self._net.x), "tier-1 slot must be placed first"
        self._next += 1
        return idx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._net, name)


class _Tier2(OverlaySim):
    """`OverlaySim`'s phases on a `LinkWorld` over the combined run's engine and net."""

    def __init__(self, run: OverlayRun, cells: CellsSim) -> None:
        super().__init__(run)  # its own engine and world are replaced right here
        self.engine = cells.engine
        self.world = LinkWorld(cells.engine, cast(Network, _Placed(cells.world.net)))
        self.world.on_emit = self._on_emit
        self.world.on_gossip = self._on_gossip
        #: Per broadcast in flight: the node slots that delivered, in order.
        self.delivered_by: dict[bytes, list[int]] = {}

    def _on_emit(self, idx: int, ev: Any) -> None:
        OverlaySim._on_emit(self, idx, ev)
        if type(ev) is Delivered and ev.msg_id in self._got:
            self.delivered_by.setdefault(ev.msg_id, []).append(idx)


class CombinedSim:
    """Builds both tiers on one engine and runs the phases; `run()` returns the report."""

    def __init__(self, run: CombinedRun) -> None:
        self.cfg = run
        master = random.Random(run.seed)
        cells_run = CellsRun(nodes=run.nodes, seed=master.getrandbits(32), cap=run.cap,
                             join_spacing_s=run.join_spacing_s, hold_s=run.hold_s,
                             check_interval_s=run.check_interval_s,
                             digest_interval_s=run.digest_interval_s, profile=run.profile,
                             network=run.network, rendezvous=run.rendezvous,
                             park_idle=run.park_idle)
        self.cells = cells_sim(cells_run)
        t2_run = OverlayRun(nodes=run.nodes, seed=master.getrandbits(32),
                            active_size=run.active_size, passive_size=run.passive_size,
                            join_spacing_s=run.join_spacing_s, broadcasts=run.broadcasts,
                            crash_fraction=run.crash_fraction)
        self.t2 = _Tier2(t2_run, self.cells)
        self.rng = random.Random(master.getrandbits(64))
        self.engine = self.cells.engine
        self.report = CombinedReport(run)
        #: Slots joined so far (tier 1 and tier 2), in join order; slots built but not
        #: yet joined wait for the churn phase.
        self.joined: list[int] = []
        self.spare: list[int] = []

    # ------------------------------------------------------------ building

    def build(self) -> None:
        cfg = self.cfg
        total = cfg.nodes + cfg.churn_events()
        c = self.cells
        for i in range(total):
            keys = KeyPair.from_rng_seed(c.rng_keys.randbytes(32))
            c.keys.append(keys)
            idx = c.world.add(keys.peer_id, c._core(keys))
            c.world.crash(idx)  # up at its join time
            if i < cfg.nodes:
                self.engine.at(i * cfg.join_spacing_s, self._join, idx)
            else:
                self.spare.append(idx)
        self.engine.at(cfg.digest_interval_s, c._digests, None)

    def _join(self, idx: int) -> None:
        """Tier 1 through `CellsSim._join` (directory oracle); tier 2 through up to three
        random live nodes that joined before (a rendezvous lookup's answer)."""
        self.cells._join(idx)
        self._join_tier2(idx)

    def _join_tier2(self, idx: int) -> None:
        """Tier 2's half of `_join` (sim/scale_state.py joins tier 2 alone first)."""
        w2 = self.t2.world
        # Tier-2 slots are added at join (a `LinkWorld` slot is live from `add`, and
        # joins come in slot order, so slot i is node i in both worlds).
        peer = self.cells.keys[idx].peer_id
        rng = random.Random(self.t2.rng_cores.getrandbits(64))
        added = w2.add(peer, TopicsCore(peer, self.t2.cfg.topics_config(), rng))
        assert added == idx, "joins must come in slot order"
        up = [j for j in self.joined[-4096:] if w2.alive[j]]
        boot = tuple(dict.fromkeys(w2.peers[self.rng.choice(up)] for _ in range(min(3, len(up)))))
        self.joined.append(idx)
        w2.inject(idx, JoinTopic(TOPIC, boot))

    def _forget(self, idx: int) -> None:
        """The oracle drops a node that crashed or left (its cell shrinks at once)."""
        c = self.cells
        cell = c.cell_of.pop(idx, None)
        if cell is not None:
            members = c.directory[cell]
            members.pop(idx, None)
            if not members:
                del c.directory[cell]

    def _crash(self, idx: int) -> None:
        self._forget(idx)
        self.cells.world.crash(idx)
        self.t2.world.crash(idx)

    def _leave(self, idx: int) -> None:
        self._forget(idx)
        self.cells.world.inject(idx, Leave())
        self.t2.world.inject(idx, LeaveTopic(TOPIC))
        self.engine.at(self.engine.now + self.cfg.leave_after_s, self._crash, idx)

    def _churn(self, _: Any) -> None:
        if self.spare:
            self._join(self.spare.pop(0))
            self.report.joined_churn += 1
        live = [i for i in self.cells.cell_of if i != self.joined[-1]]
        if live:
            self._leave(live[self.rng.randrange(len(live))])
            self.report.left_churn += 1

    # ------------------------------------------------------------ measuring

    def cell_views(self, label: str) -> CellViews:
        c = self.cells
        keys = c.keys
        accs: list[float] = []
        inexact = foreign_max = foreign_nodes = max_members = 0
        for idx, cell in c.cell_of.items():
            core = c.world.nodes[idx].core
            assert isinstance(core, CellNode)
            table = core.swim.table
            listed = {p for p, m in table.items() if m.state in LIVE}
            truth = {keys[j].peer_id for j in c.directory[cell] if j != idx}
            accs.append(len(listed & truth) / len(truth) if truth else 1.0)
            foreign = len(listed - truth)
            foreign_max = max(foreign_max, foreign)
            foreign_nodes += foreign > 0
            inexact += listed != truth
            max_members = max(max_members, len(table))
        v = CellViews(len(accs), {k.name(): len(m) for k, m in sorted(c.directory.items())},
                      min(accs, default=1.0), statistics.fmean(accs) if accs else 1.0,
                      inexact, foreign_max, foreign_nodes, max_members)
        self.report.cell_views[label] = v
        return v

    def broadcast(self, phase: str) -> Round:
        r = self.t2.broadcast_round(phase)
        by = self.t2.delivered_by
        reached = {self.cells.cell_of.get(i) for m in by for i in by[m]} - {None}
        by.clear()
        self.report.cells_reached.append((len(reached), len(self.cells.directory)))
        self.report.rounds.append(r)
        return r

    def tier2_views(self, label: str) -> ViewReport:
        v = self.t2.views(label)
        self.report.tier2_views[label] = v
        self.report.max_tier2_entries = max(self.report.max_tier2_entries, v.max_entries)
        return v

    # ------------------------------------------------------------ phases

    def phase_join(self) -> None:
        self.build()
        self.engine.run_until(self.cfg.nodes * self.cfg.join_spacing_s + self.cfg.warmup_s)

    def phase_stable(self) -> None:
        self.cell_views("stable")
        self.tier2_views("stable")
        self.broadcast("first")
        for _ in range(self.cfg.broadcasts):
            self.broadcast("stable")

    def phase_churn(self) -> None:
        cfg = self.cfg
        live = list(self.cells.cell_of)
        victims = sorted(self.rng.sample(live, round(cfg.crash_fraction * len(live))))
        for v in victims:
            self._crash(v)
        self.report.crashed = len(victims)
        self.broadcast("during-failure")
        start = self.engine.now
        for k in range(cfg.churn_events()):
            self.engine.at(start + (k + 1) * cfg.churn_every_s, self._churn, None)
        self.engine.run_until(start + cfg.churn_s + cfg.leave_after_s)

    def phase_repair(self) -> None:
        self.engine.run_until(self.engine.now + self.cfg.repair_s)
        self.tier2_views("repaired")
        for _ in range(self.cfg.broadcasts):
            self.broadcast("repaired")
        self.cell_views("repaired")

    def finish(self) -> CombinedReport:
        rep = self.report
        rep.splits, rep.merges = self.cells.report.splits, self.cells.report.merges
        rep.messages_tier1 = self.cells.world.stats["sent"]
        rep.messages_tier2 = self.t2.world.stats["sent"]
        rep.events = self.engine.events_run
        rep.sim_s = self.engine.now
        return rep

    def run(self) -> CombinedReport:
        self.phase_join()
        self.phase_stable()
        self.phase_churn()
        self.phase_repair()
        return self.finish()


def run_combined(run: CombinedRun) -> CombinedReport:
    return CombinedSim(run).run()


def suite_run(seed: int = 1) -> CombinedRun:
    """The size the test suite runs (tests/sim/test_combined_sim.py; ≈ 20 CPU s)."""
    return replace(CombinedRun(), nodes=160, cap=40, seed=seed, join_spacing_s=0.25,
                   warmup_s=100.0)


def summary_lines(rep: CombinedReport) -> list[str]:
    r = rep.run
    lines = [f"combined: N={r.nodes}, cap {r.cap}, seed {r.seed}; simulated {rep.sim_s:.0f} s, "
             f"{rep.events:,} events; messages tier 1 {rep.messages_tier1:,}, tier 2 "
             f"{rep.messages_tier2:,}; splits {rep.splits}, merges {rep.merges}",
             f"  churn: {rep.crashed} crashed at once ({r.crash_fraction:.0%}), then "
             f"{rep.joined_churn} joined and {rep.left_churn} left over {r.churn_s:.0f} s"]
    for phase in ("first", "stable", "during-failure", "repaired"):
        idx = [i for i, x in enumerate(rep.rounds) if x.phase == phase]
        if idx:
            cells = min(rep.cells_reached[i][0] / max(1, rep.cells_reached[i][1]) for i in idx)
            lines.append(
                f"  tier 2 {phase:<15} delivery worst {rep.worst(phase):.4f}  RMR mean "
                f"{rep.mean(phase, 'rmr'):.3f}  LDH mean {rep.mean(phase, 'ldh'):.1f}  "
                f"cells reached (worst share) {cells:.3f}")
    for label, v in rep.tier2_views.items():
        lines.append(f"  tier 2 views {label}: {v.live} live, asymmetric {v.asymmetric_links}, "
                     f"components {v.components}, isolated {v.isolated}, max entries/node "
                     f"{v.max_entries}")
    for label, c in rep.cell_views.items():
        sizes = list(c.cells.values())
        lines.append(
            f"  cells {label}: {len(sizes)} cells of {min(sizes, default=0)}.."
            f"{max(sizes, default=0)} (cap {r.cap}), {c.live} live; accuracy mean "
            f"{c.accuracy_mean:.4f} min "
            f"{c.accuracy_min:.4f}, inexact views {c.inexact}, foreign max {c.foreign_max} "
            f"({c.foreign_nodes} nodes); largest member table {c.max_members}")
    return lines


def to_json(rep: CombinedReport) -> dict[str, Any]:
    """Everything in the report, plain (the determinism test compares it)."""
    return {
        "run": {k: getattr(rep.run, k) for k in (
            "nodes", "seed", "cap", "join_spacing_s", "warmup_s", "broadcasts",
            "crash_fraction", "churn_s", "churn_every_s", "repair_s")},
        "rounds": [[x.phase, x.delivery, x.rmr, x.ldh, x.duration_s] for x in rep.rounds],
        "cells_reached": rep.cells_reached,
        "tier2_views": {k: [v.live, v.asymmetric_links, v.components, v.isolated,
                            v.max_entries, v.degree] for k, v in rep.tier2_views.items()},
        "cell_views": {k: [v.live, v.cells, v.accuracy_min, v.accuracy_mean, v.inexact,
                           v.foreign_max, v.foreign_nodes, v.max_members]
                       for k, v in rep.cell_views.items()},
        "counts": [rep.splits, rep.merges, rep.crashed, rep.joined_churn, rep.left_churn,
                   rep.max_tier2_entries, rep.messages_tier1, rep.messages_tier2,
                   rep.events, rep.sim_s],
    }

