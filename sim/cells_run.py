"""Cells in the simulator: N nodes of real SWIM + cell cores join, cells split at the cap.

Each node is a `gossip.cell_node.CellNode` (the real `Swim` and `CellCore`) on
`sim/world.py` with the network model. What is modelled, and why:

- the *cell directory* is an oracle of what the DHT rendezvous keys would return
  (docs/gossip.md "Cells"): which cells exist and some of their members. A joining
  node picks its cell with `choose_cell(key, site, cells in the directory)` and
  joins through up to three random members of it; a node's `CellChanged` event moves
  it in the directory at once;
- *sibling digests* arrive every `digest_interval_s` with the directory's count of the
  sibling cell (tier 2 carries digests; here it is not simulated), with a few sibling
  members as `merge_seeds`;
- at the same interval a node settled in its cell (no change for `hold_s` + 3 digest
  intervals, as the daemon's grace) applies the daemon's directory rules
  (`gossip.cell_directory.cell_to_adopt`, with the directory's cells as the reports):
  up into the parent its sibling merged into without it, down into the children of
  a split it missed (both seen after a 70 % crash), joining through members of the
  new cell (`strays_moved`).

`rendezvous="dht"` (sim/cells_rdv.py) replaces the oracle's three uses above by each
node's own DHT rendezvous, as the daemon; the oracle then only measures.

Measured at the end (and in `timeline`): the cells and their sizes, splits and
merges, and per node whether its SWIM view is its cell: *accuracy* = share of its
cell's live members it lists as live, *foreign* = members it lists that are in
another cell; the largest member table (bounded by the cap, not by N).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from gossip.cell_directory import cell_to_adopt
from gossip.cell_node import CellNode
from gossip.cells import (
    CellChanged,
    CellConfig,
    CellCore,
    CellId,
    SiblingSize,
    StartCells,
    cell_key,
    choose_cell,
)
from gossip.claim_verifier import Verifier
from gossip.events import Join
from gossip.members import LIVE
from gossip.profiles import profile
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError
from sim.engine import Engine
from sim.network import Network, NetworkConfig
from sim.world import World


@dataclass(frozen=True, slots=True)
class CellsRun:
    nodes: int = 400
    seed: int = 1
    cap: int = 100
    join_spacing_s: float = 0.25
    #: Simulated time after the last join.
    settle_s: float = 240.0
    hold_s: float = 30.0
    check_interval_s: float = 5.0
    digest_interval_s: float = 10.0
    profile: str = "lan"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    #: Where nodes learn the other cells: "oracle" (the directory, below) or "dht" (each
    #: node's own DHT rendezvous, as the daemon: sim/cells_rdv.py).
    rendezvous: str = "oracle"
    #: Idle gossip ticks off the heap (`World.enable_parking`: same output, fewer events
    #: to pop; tests/sim/test_combined_sim.py compares both).
    park_idle: bool = True


@dataclass(slots=True)
class CellsReport:
    run: CellsRun
    cells: dict[str, int] = field(default_factory=dict)
    splits: int = 0
    merges: int = 0
    accuracy_min: float = 0.0
    accuracy_mean: float = 0.0
    foreign_max: int = 0
    max_members: int = 0
    outside_cell_refused: int = 0
    #: Nodes the directory rule moved up into a cell their sibling had merged into.
    strays_moved: int = 0
    #: (time, number of cells, largest cell) every `digest_interval_s`.
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    events: int = 0


class CellsSim:
    def __init__(self, run: CellsRun) -> None:
        self.cfg = run
        master = random.Random(run.seed)
        self.rng_keys = random.Random(master.getrandbits(64))
        self.rng_cores = random.Random(master.getrandbits(64))
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_work = random.Random(master.getrandbits(64))
        self.engine = Engine()
        self.world = World(self.engine, Network(run.network, self.rng_net))
        self.world.on_emit = self._on_emit
        if run.park_idle:
            self.world.enable_parking()
        self.swim_cfg = profile(run.profile)
        self.cell_cfg = CellConfig(cap=run.cap, hold_s=run.hold_s,
                                   check_interval_s=run.check_interval_s)  # fmt: skip
        self.verifier = Verifier(max(4096, 16 * run.nodes))
        self.keys: list[KeyPair] = []
        #: The directory oracle: cell → its members (node slots, join order).
        self.directory: dict[CellId, dict[int, None]] = {}
        self.cell_of: dict[int, CellId] = {}
        #: When each node last changed cell (the directory rule waits a grace after).
        self.changed_at: dict[int, float] = {}
        self.report = CellsReport(run)

    # ------------------------------------------------------------ building

    def build(self) -> None:
        cfg = self.cfg
        for i in range(cfg.nodes):
            keys = KeyPair.from_rng_seed(self.rng_keys.randbytes(32))
            self.keys.append(keys)
            idx = self.world.add(keys.peer_id, self._core(keys))
            self.world.crash(idx)  # up at its join time
            self.engine.at(i * cfg.join_spacing_s, self._join, idx)
        self.engine.at(cfg.digest_interval_s, self._digests, None)

    def _core(self, keys: KeyPair) -> CellNode:
        rng = random.Random(self.rng_cores.getrandbits(64))
        swim = Swim(keys, self.swim_cfg, rng=random.Random(rng.getrandbits(64)),
                    verifier=self.verifier, ad=ResourceAd.make(cpu_cores=8))
        return CellNode(swim, CellCore(keys.peer_id, self.cell_cfg,
                                       random.Random(rng.getrandbits(64))))

    def _join(self, idx: int) -> None:
        self.world.restart(idx, self.world.nodes[idx].core)
        key = cell_key(self.keys[idx].peer_id)
        cell = choose_cell(key, "", list(self.directory))
        members = list(self.directory.get(cell, ()))
        seeds = self.rng_work.sample(members, min(3, len(members)))
        self._move(idx, cell)
        self.world.inject(idx, StartCells(cell))
        self.world.inject(idx, Join(tuple(self.keys[s].peer_id for s in seeds)))

    def _move(self, idx: int, cell: CellId) -> None:
        old = self.cell_of.get(idx)
        if old is not None:
            members = self.directory[old]
            members.pop(idx, None)
            if not members:
                del self.directory[old]
        self.directory.setdefault(cell, {})[idx] = None
        self.cell_of[idx] = cell
        self.changed_at[idx] = self.engine.now

    def _on_emit(self, idx: int, ev: Any) -> None:
        if type(ev) is CellChanged:
            self._move(idx, ev.new)
            if ev.reason == "split":
                self.report.splits += 1
            else:
                self.report.merges += 1

    def _digests(self, _: Any) -> None:
        """Tier 2's sibling digests, from the directory: count and a few members."""
        for idx, cell in self.cell_of.items():
            node = self.world.nodes[idx]
            sib = cell.sibling()
            if not node.alive or sib is None or sib not in self.directory:
                continue
            members = list(self.directory[sib])
            core = node.core
            assert isinstance(core, CellNode)
            core.merge_seeds = tuple(self.keys[m].peer_id for m in members[:3])
            self.world.inject(idx, SiblingSize(sib, len(members)))
        self._strays()
        sizes = [len(m) for m in self.directory.values()]
        self.report.timeline.append((self.engine.now, len(sizes), max(sizes, default=0)))
        self.engine.at(self.engine.now + self.cfg.digest_interval_s, self._digests, None)

    def _strays(self) -> None:
        """The daemon's directory rules (services/cells.py tick, `cell_to_adopt`) for a
        node settled in a cell the others left: up into the parent its sibling merged
        into without it, or down into the children of a split it missed. The other
        nodes' reports are the directory's cells (a node's own cell counts only when
        it has cell-mates: nobody else reports it otherwise)."""
        cfg, now = self.cfg, self.engine.now
        grace = cfg.hold_s + 3 * cfg.digest_interval_s
        merge_at = self.cell_cfg.merge_below * self.cell_cfg.cap
        sizes = {c: len(m) for c, m in self.directory.items()}
        leaves = [c for c in sizes if not any(d != c and c.is_ancestor_of(d) for d in sizes)]
        for idx, cell in list(self.cell_of.items()):
            node = self.world.nodes[idx]
            if not node.alive or now - self.changed_at.get(idx, now) <= grace:
                continue
            core = node.core
            assert isinstance(core, CellNode)
            live = core.swim.table.n_live
            mine, known = leaves, sizes
            if sizes.get(cell) == 1:  # alone in it: only its own report names it
                known = {c: n for c, n in sizes.items() if c != cell}
                mine = [c for c in known
                        if not any(d != c and c.is_ancestor_of(d) for d in known)]
            new = cell_to_adopt(cell, cell_key(self.keys[idx].peer_id), mine, first=False,
                                settled=True, alone=live <= 1, sizes=known, live=live,
                                merge_at=merge_at)
            if new is None:
                continue
            members = [m for m in self.directory.get(new, ()) if m != idx]
            seeds = self.rng_work.sample(members, min(3, len(members)))
            self._move(idx, new)
            self.report.strays_moved += 1
            self.world.inject(idx, StartCells(new))
            self.world.inject(idx, Join(tuple(self.keys[s].peer_id for s in seeds)))

    # ------------------------------------------------------------ measuring

    def measure(self) -> None:
        rep = self.report
        rep.cells = {c.name(): len(m) for c, m in sorted(self.directory.items())}
        accs: list[float] = []
        for idx, cell in self.cell_of.items():
            core = self.world.nodes[idx].core
            assert isinstance(core, CellNode)
            table = core.swim.table
            listed = {p for p, m in table.items() if m.state in LIVE}
            truth = {self.keys[j].peer_id for j in self.directory[cell] if j != idx}
            accs.append(len(listed & truth) / len(truth) if truth else 1.0)
            rep.foreign_max = max(rep.foreign_max, len(listed - truth))
            rep.max_members = max(rep.max_members, len(table))
            rep.outside_cell_refused += core.swim.stats.get("outside_cell", 0)
        rep.accuracy_min = min(accs, default=1.0)
        rep.accuracy_mean = statistics.fmean(accs) if accs else 1.0

    def run(self) -> CellsReport:
        cfg = self.cfg
        self.build()
        self.engine.run_until(cfg.nodes * cfg.join_spacing_s + cfg.settle_s)
        self.measure()
        self.report.events = self.engine.events_run
        return self.report


def run_cells(run: CellsRun) -> CellsReport:
    """The oracle run (`rendezvous="dht"`: `sim.cells_rdv.cells_sim`, built on this)."""
    if run.rendezvous != "oracle":
        raise ConfigError("run_cells runs the oracle; use sim.cells_rdv.cells_sim")
    return CellsSim(run).run()


def summary_lines(rep: CellsReport) -> list[str]:
    r = rep.run
    sizes = list(rep.cells.values())
    return [
        f"cells: N={r.nodes}, cap {r.cap}, seed {r.seed}: {len(sizes)} cells, sizes "
        f"{min(sizes)}..{max(sizes)} ({', '.join(f'{k} {v}' for k, v in rep.cells.items())})",
        f"splits {rep.splits}, merges {rep.merges} (node decisions); largest member table "
        f"{rep.max_members}; claims refused as outside the cell {rep.outside_cell_refused:,}",
        f"SWIM view = own cell: accuracy mean {rep.accuracy_mean:.4f}, min "
        f"{rep.accuracy_min:.4f}; foreign members listed (max per node) {rep.foreign_max}",
        f"{rep.events:,} events",
    ]
