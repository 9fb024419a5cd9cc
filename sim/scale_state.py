"""A colony at its converged state, built directly, then run: issue #17's 10^5-node memory.

Joining 10^5 nodes through the runners' real joins costs hours of CPU here (joins and
the split cascade are 2–4× the steady state per node·s, and the DHT rendezvous reads
are ~10^4 lookups per simulated second at 10^5), so this builds what those joins end
in, with the same real cores, and then runs them:

1. *tier 2*: every node's `gossip.topics.TopicsCore` (HyParView + Plumtree) joins the
   colony topic through three random earlier nodes, `t2_spacing_s` apart, through the
   real message path (`sim.tier2_world.LinkWorld`), then `t2_settle_s` of shuffles; the
   tier-1 cores exist but are not started yet;
2. *cells*: the nodes' cell keys are split at the cap as the split cascade does (a cell
   over the cap splits into its two children, recursively); each node is placed with
   the daemon's `choose_cell` among those leaves, started (`StartCells`, `Join` with no
   seeds) and merges one push-pull holding its cell's records — what a join's
   push-pull does, with one record object per member shared by its cell (the simulator
   passes messages by reference). Then its broadcast queue is emptied: every member
   already holds every claim (all came from the same records), so the queue a real
   join leaves drains without teaching anyone anything; gossiping 10^5 × cell claims
   once more would only cost CPU;
3. *DHT*: a real `dht.Kademlia` core per node on `sim.cells_rdv.DhtRouter` (the world's
   liveness, the network model's one-way delays), its table filled as in a converged
   network (`sim.dht_static.seed_tables`); each cell's publisher (the smallest
   `publisher_rank` of its members) `Provide`s the site's rendezvous key, as the
   daemon's; `lookups` `FindNode`s from random nodes spread over the window;
4. *window*: `window_s` simulated seconds with all of it running (SWIM probes, gossip,
   push-pull and cell checks; the oracle's sibling digests as in `colony sim
   combined`; HyParView shuffles; the DHT's lookups); then the checks: every cell view
   (accuracy, foreign members), tier-2 views, one "first" and `broadcasts` "stable"
   broadcasts (delivery, RMR, LDH), the lookups' recall of the true k closest.

Not through joins, so it says nothing about join costs or the split cascade (the other
runners measure those), and the DHT's rendezvous reads are not run (the directory
oracle answers them, as `colony sim combined` does by default). Memory and time are the
bench's (bench/sim_scale.py); this report has only counts, so one seed gives one report.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dht import FindNode, KadConfig, Kademlia, LookupDone, Provide
from dht.api import ClosestPeers, ProvideDone, result_as
from gossip.cell_directory import publisher_rank, rendezvous_key
from gossip.cell_node import CellNode
from gossip.cells import CellId, StartCells, cell_key, choose_cell
from gossip.events import Join
from gossip.messages import PushPull
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received
from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId, key_of_bytes
from sim.cells_rdv import DhtRouter
from sim.combined_run import CellViews, CombinedRun, CombinedSim
from sim.dht_static import seed_tables
from sim.hugepages import HugePages
from sim.tier2_run import Round, ViewReport

#: The open colony's rendezvous key of the (one) site every simulated node is in.
KEY = rendezvous_key("open", "")


@dataclass(frozen=True, slots=True)
class ScaleRun:
    """Defaults: the 10^5-node run bench/sim_scale.py reports."""

    nodes: int = 100_000
    seed: int = 1
    cap: int = 500
    t2_spacing_s: float = 0.001
    t2_settle_s: float = 60.0
    window_s: float = 10.0
    lookups: int = 100
    broadcasts: int = 2

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.cap < 2 or self.broadcasts < 1 or self.lookups < 0:
            raise ConfigError("scale run: nodes ≥ 2, cap ≥ 2, broadcasts ≥ 1, lookups ≥ 0")
        if min(self.t2_spacing_s, self.window_s) <= 0 or self.t2_settle_s < 0:
            raise ConfigError("scale run: spacing and window > 0, settle ≥ 0")


@dataclass(slots=True)
class ScaleReport:
    run: ScaleRun
    #: Sizes of the cells the split at the cap gave, in cell order.
    cells: list[int] = field(default_factory=list)
    cell_views: CellViews | None = None
    tier2_views: ViewReport | None = None
    rounds: list[Round] = field(default_factory=list)
    #: Member-table entries and DHT routing-table entries, summed over the nodes (the
    #: largest tier-2 state is in `tier2_views`).
    member_entries: int = 0
    dht_entries: int = 0
    #: Cells whose publisher provided the rendezvous key, sweeps done, and the most
    #: records of the key one DHT server holds (each keeps at most 64 per key).
    provides: int = 0
    provides_done: int = 0
    key_records_max: int = 0
    lookups_done: int = 0
    lookups_failed: int = 0
    #: Mean share of the true k closest each checked lookup found.
    lookup_recall: float = 0.0
    lookup_hops_mean: float = 0.0
    messages_tier1: int = 0
    messages_tier2: int = 0
    messages_dht: int = 0
    #: Events of the window alone (the bench's rate), events and simulated seconds in all.
    window_events: int = 0
    events: int = 0
    sim_s: float = 0.0


class ScaleSim(CombinedSim):
    """`CombinedSim`'s worlds, filled at their converged state (module docstring); the
    bench times and measures between the phases, so they are separate calls."""

    def __init__(self, run: ScaleRun, huge_pages: bool = True) -> None:
        super().__init__(CombinedRun(nodes=run.nodes, seed=run.seed, cap=run.cap,
                                     join_spacing_s=run.t2_spacing_s,
                                     broadcasts=run.broadcasts, crash_fraction=0.0))
        self.scale = run
        self.out = ScaleReport(run)
        self.rng_scale = random.Random(f"scale/{run.seed}")
        self.kad_cfg = KadConfig()
        self.router = DhtRouter(self.engine, self.cells.world)
        self.router.on_emit = self._dht_emit
        self.kads: dict[PeerId, Kademlia] = {}
        #: request id → (node, target key) of the window's lookups.
        self._lookups: dict[int, tuple[PeerId, bytes]] = {}
        self._lookup_done: dict[int, LookupDone] = {}
        self._window_start = 0.0
        self._events0 = 0
        # Huge pages for the state as it grows (sim/hugepages.py; asked for after each
        # phase and each piece of the window): nothing the simulation observes changes,
        # its events touch fewer page-table entries (the 10^5 run is memory-bound).
        self.huge_pages = HugePages(huge_pages)

    # ------------------------------------------------------------ 1. tier 2

    def phase_tier2(self) -> None:
        """Every node's slot and cores; tier-2 joins through the real message path."""
        n, c = self.scale.nodes, self.cells
        for i in range(n):
            keys = KeyPair.from_rng_seed(c.rng_keys.randbytes(32))
            c.keys.append(keys)
            idx = c.world.add(keys.peer_id, c._core(keys))
            c.world.crash(idx)  # tier 1 starts in phase 2
            self.engine.at(i * self.scale.t2_spacing_s, self._join_tier2, idx)
        self.engine.run_until(n * self.scale.t2_spacing_s + self.scale.t2_settle_s)
        self.huge_pages.maybe_collapse()

    # ------------------------------------------------------------ 2. cells

    def leaves(self) -> list[CellId]:
        """The cells a cascade of splits at the cap ends in (by the nodes' cell keys)."""
        keys = [cell_key(k.peer_id) for k in self.cells.keys]
        out: list[CellId] = []
        todo: list[tuple[CellId, list[int]]] = [(CellId(""), keys)]
        while todo:
            cell, ks = todo.pop()
            if len(ks) <= self.scale.cap:
                out.append(cell)
                continue
            for child in cell.children():
                todo.append((child, [k for k in ks if child.contains(k)]))
        return sorted(out)

    def phase_cells(self) -> None:
        c, now = self.cells, self.engine.now
        leaves = self.leaves()
        members: dict[CellId, list[int]] = {cell: [] for cell in leaves}
        for idx, keys in enumerate(c.keys):
            members[choose_cell(cell_key(keys.peer_id), "", leaves)].append(idx)
        world = c.world
        for cell in leaves:
            slots = members[cell]
            self.out.cells.append(len(slots))
            for idx in slots:
                world.restart(idx, world.nodes[idx].core)
                world.inject(idx, StartCells(cell))
                world.inject(idx, Join(()))
                c._move(idx, cell)
            swims = [self._node(idx).swim for idx in slots]
            msg = PushPull(tuple(s.local.record() for s in swims))
            src = swims[0].local.me
            for idx, swim in zip(slots, swims, strict=True):
                world.inject(idx, Received(src if idx != slots[0] else swims[-1].local.me, msg))
                bq = swim.spread.bq
                queued = bq.keys()  # a list: invalidating while walking it is safe
                for key in queued:
                    bq.invalidate(key)
                self.out.member_entries += len(swim.table)
        self.engine.at(now + self.cfg.digest_interval_s, c._digests, None)
        self.huge_pages.maybe_collapse()

    def _node(self, idx: int) -> CellNode:
        core = self.cells.world.nodes[idx].core
        assert isinstance(core, CellNode)
        return core

    # ------------------------------------------------------------ 3. DHT

    def phase_dht(self) -> None:
        c = self.cells
        ids = [k.peer_id for k in c.keys]
        for p in ids:
            self.kads[p] = kad = Kademlia(p, self.kad_cfg,
                                          rng=random.Random(self.rng_scale.getrandbits(64)))
            self.router.add(p, kad)
        seed_tables(ids, self.kads, self.kad_cfg.k, self.rng_scale)
        self.out.dht_entries = sum(len(k.table) for k in self.kads.values())
        rid = 0
        for _, slots in sorted(c.directory.items()):
            rid += 1
            publisher = min((ids[i] for i in slots), key=publisher_rank)
            self.router.inject(publisher, Provide(rid, (KEY,)))
            self.out.provides += 1
        now, w = self.engine.now, self.scale.window_s
        for _ in range(self.scale.lookups):
            rid += 1
            src = ids[self.rng_scale.randrange(len(ids))]
            target = self.rng_scale.randbytes(32)
            self._lookups[rid] = (src, target)
            self.engine.at(now + self.rng_scale.uniform(0, w / 2), self._lookup, rid)
        self.huge_pages.maybe_collapse()

    def _lookup(self, rid: int) -> None:
        src, target = self._lookups[rid]
        self.router.inject(src, FindNode(rid, target))

    def _dht_emit(self, now: float, peer: PeerId, ev: Any) -> None:
        self.router.emitted.clear()  # the router's log is not needed here
        if type(ev) is ProvideDone:
            self.out.provides_done += 1
        elif type(ev) is LookupDone and ev.request_id in self._lookups:
            self._lookup_done[ev.request_id] = ev

    # ------------------------------------------------------------ 4. window, checks

    def phase_window(self, chunk_s: float | None = None,
                     on_chunk: Callable[[float, int], None] | None = None) -> None:
        """Run the window, in pieces of `chunk_s` with `on_chunk(simulated s so far,
        events so far)` after each (a long run's progress; pausing the engine changes
        no outcome)."""
        start = self._window_start = self.engine.now
        self._events0 = self.engine.events_run
        end = start + self.scale.window_s
        step = chunk_s or self.scale.window_s
        while self.engine.now < end:
            self.engine.run_until(min(end, self.engine.now + step))
            self.huge_pages.maybe_collapse()
            if on_chunk is not None:
                on_chunk(self.engine.now - start, self.engine.events_run - self._events0)
        self.out.window_events = self.engine.events_run - self._events0

    def phase_checks(self, recall_checked: int = 20) -> ScaleReport:
        out = self.out
        out.cell_views = self.cell_views("stable")
        out.tier2_views = self.tier2_views("stable")
        self.broadcast("first")
        for _ in range(self.scale.broadcasts):
            self.broadcast("stable")
        out.rounds = list(self.report.rounds)
        self._check_lookups(recall_checked)
        out.messages_tier1 = self.cells.world.stats["sent"]
        out.messages_tier2 = self.t2.world.stats["sent"]
        out.messages_dht = self.router.sent
        now = self.engine.now
        out.key_records_max = max(len(kad.providers.get(KEY, now, 1 << 16))
                                  for kad in self.kads.values())
        out.events = self.engine.events_run
        out.sim_s = self.engine.now
        return out

    def _check_lookups(self, checked: int) -> None:
        out, k = self.out, self.kad_cfg.k
        ids = [key.peer_id for key in self.cells.keys]
        recalls: list[float] = []
        hops: list[int] = []
        for rid, (src, target) in sorted(self._lookups.items()):
            ev = self._lookup_done.get(rid)
            if ev is None or ev.error is not None:
                out.lookups_failed += 1
                continue
            out.lookups_done += 1
            hops.append(ev.hops)
            if len(recalls) < checked:
                t = key_of_bytes(target)
                truth = sorted((p for p in ids if p != src), key=lambda p: p.key ^ t)[:k]
                found = set(result_as(ev, ClosestPeers).peers)
                recalls.append(len(found & set(truth)) / k)
        out.lookup_recall = sum(recalls) / len(recalls) if recalls else float("nan")
        out.lookup_hops_mean = sum(hops) / len(hops) if hops else float("nan")

    def run_all(self) -> ScaleReport:
        self.phase_tier2()
        self.phase_cells()
        self.phase_dht()
        self.phase_window()
        return self.phase_checks()


def summary_lines(rep: ScaleReport) -> list[str]:
    r, v, t = rep.run, rep.cell_views, rep.tier2_views
    assert v is not None and t is not None
    lines = [
        f"scale: N={r.nodes:,}, cap {r.cap}, seed {r.seed}: {len(rep.cells)} cells of "
        f"{min(rep.cells)}..{max(rep.cells)}; {rep.member_entries:,} member-table entries, "
        f"{rep.dht_entries:,} DHT table entries; simulated {rep.sim_s:.0f} s, "
        f"{rep.events:,} events ({rep.window_events:,} in the {r.window_s:g} s window)",
        f"  cells: accuracy mean {v.accuracy_mean:.4f} min {v.accuracy_min:.4f}, inexact "
        f"views {v.inexact}, foreign max {v.foreign_max}; largest member table "
        f"{v.max_members}",
        f"  tier 2 views: {t.live:,} live, asymmetric {t.asymmetric_links}, components "
        f"{t.components}, isolated {t.isolated}, max entries/node {t.max_entries}",
    ]
    for x in rep.rounds:
        lines.append(f"  tier 2 broadcast ({x.phase}): delivery {x.delivery:.4f}, RMR "
                     f"{x.rmr:.3f}, LDH {x.ldh}")
    lines.append(
        f"  DHT: rendezvous key provided by {rep.provides} cell publishers "
        f"({rep.provides_done} sweeps done; at most {rep.key_records_max} records of it on "
        f"one server); lookups {rep.lookups_done} done, "
        f"{rep.lookups_failed} failed, true-20 recall {rep.lookup_recall:.3f}, hops mean "
        f"{rep.lookup_hops_mean:.2f}")
    lines.append(f"  messages: tier 1 {rep.messages_tier1:,}, tier 2 {rep.messages_tier2:,}, "
                 f"DHT {rep.messages_dht:,}")
    return lines


def to_json(rep: ScaleReport) -> dict[str, Any]:
    """Everything in the report, plain (the determinism test compares it)."""
    v, t = rep.cell_views, rep.tier2_views
    return {
        "run": [rep.run.nodes, rep.run.seed, rep.run.cap, rep.run.window_s],
        "cells": rep.cells,
        "cell_views": None if v is None else [v.live, v.accuracy_min, v.accuracy_mean,
                                              v.inexact, v.foreign_max, v.max_members],
        "tier2_views": None if t is None else [t.live, t.asymmetric_links, t.components,
                                               t.isolated, t.max_entries],
        "rounds": [[x.phase, x.delivery, x.rmr, x.ldh, x.duration_s] for x in rep.rounds],
        "counts": [rep.member_entries, rep.dht_entries, rep.provides, rep.provides_done,
                   rep.key_records_max, rep.lookups_done, rep.lookups_failed,
                   rep.lookup_recall, rep.lookup_hops_mean, rep.messages_tier1,
                   rep.messages_tier2, rep.messages_dht, rep.window_events, rep.events,
                   rep.sim_s],
    }
