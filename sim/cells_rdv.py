"""Cells with the daemon's DHT rendezvous instead of the directory oracle (issue #17).

`CellsRun(rendezvous="dht")` (`colony sim cells|combined --rendezvous dht`): every node
also runs a real `dht.Kademlia` core, and finds the other cells as the daemon does
(overlay/runtime/services/cells.py, docs/gossip.md "Cells in the daemon"), with the same
sans-IO pieces (gossip/cell_directory.py):

- DHT: the cores talk over a `sim.router.Router` on the run's `Engine`; a message takes
  the network model's one-way delay *without* jitter or loss (`Network.base_delay_s`:
  no draw from the run's network rng). A joining node's table is filled from the nodes
  joined so far as in a converged network (`sim/dht_static.py`'s rule, one node at a
  time), and the peers it lists learn it (its join lookups would reach them): the DHT's
  own join is simulated in tests/sim/test_dht_join.py. A crashed node's core dies with
  it: it answers nothing, lookups through it time out, and the provider records it
  stored or that name it stay until their TTL (48 h), as in the daemon.
- every `digest_interval_s` (×0.8–1.2, the daemon's jitter) a node's *DHT round*: the
  cell's publisher (`should_publish` over its own SWIM view) `Provide`s the site's
  rendezvous key, a node that stops being it `StopProviding`; then `GetProviders(key,
  MAX_READ)` and one report request per provider found (at most `MAX_READ`). A request
  is modelled as reading the provider's own report (`CellDigest.of` its SWIM view, its
  `MAX_SEEDS` smallest-ranked members as seeds; cached 1 s as the daemon's) one round
  trip (2 × base delay) later, validated through the report's wire form; a provider
  that is down gives none, and the round waits `REQUEST_TIMEOUT_S` for it.
- every `digest_interval_s` (jittered, its own loop) the *tick*: `SiblingSize` from the
  node's own `CellDirectory`, `cell_to_adopt` with its reports, the rejoin of a node
  alone in a reported cell; a new node is placed (`choose_cell`) at its first reading;
  after a merge it joins through the sibling's seeds from its directory.
- a new node first joins SWIM through up to three random earlier nodes (the daemon's
  bootstrap peers) with its cell core not started, as the daemon does.

The oracle (`CellsSim.directory`) stays only as the measuring truth: where each node
is (its own `CellChanged` events and moves), for accuracy and the cells at the end.
Not modelled: dial times of seeds, the report's signature checks of colony mode.
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass
from typing import Any

from dht import GetProviders, KadConfig, Kademlia, LookupDone, Provide, Providers, StopProviding
from dht.api import ProvideDone
from gossip.cell_digest import CellDigest
from gossip.cell_directory import (
    MAX_READ,
    MAX_SEEDS,
    TTL_INTERVALS,
    CellDirectory,
    CellReport,
    Seed,
    cell_to_adopt,
    found_after,
    publisher_rank,
    rendezvous_key,
    should_publish,
)
from gossip.cell_node import CellNode
from gossip.cells import CellChanged, CellId, SiblingSize, StartCells, cell_key, choose_cell
from gossip.events import Join
from gossip.members import LIVE
from overlay.core.errors import ConfigError, MalformedFrame
from overlay.core.ids import KEY_BITS, PeerId
from sim.cells_run import CellsRun, CellsSim
from sim.engine import Engine
from sim.router import Router
from sim.world import World

#: The daemon's timings (overlay/runtime/services/cells.py).
FIRST_ROUND_S = 1.0
REQUEST_TIMEOUT_S = 5.0
REPORT_CACHE_S = 1.0
#: The site of every simulated node, and the open colony's rendezvous key.
SITE = ""
KEY = rendezvous_key("open", SITE)


def cells_sim(run: CellsRun) -> CellsSim:
    """The cells simulation of `run.rendezvous`: "oracle" or "dht"."""
    if run.rendezvous == "oracle":
        return CellsSim(run)
    if run.rendezvous == "dht":
        return RdvCellsSim(run)
    raise ConfigError(f'rendezvous must be "oracle" or "dht", not {run.rendezvous!r}')


@dataclass(slots=True)
class RdvStats:
    """Counts over the run (all nodes)."""

    provides: int = 0
    stops: int = 0
    lookups: int = 0
    #: Lookups that ended with an error, or found no provider while some were up.
    lookups_empty: int = 0
    requests: int = 0
    #: Requests to a provider that was down (the round waited `REQUEST_TIMEOUT_S`).
    requests_failed: int = 0
    reports_bad: int = 0
    providers_max: int = 0
    placed: int = 0
    #: Placements with no report of the chosen cell (the node starts alone in it).
    placed_blind: int = 0
    moves: int = 0
    rejoins: int = 0
    joins_failed: int = 0
    #: DHT messages sent, and live node·seconds over the run (for the rate).
    dht_messages: int = 0
    node_seconds: float = 0.0
    #: Nodes up at the end whose cell core never started (never placed).
    unplaced: int = 0
    #: Per node up at the end: cells of the truth its directory lacks (fresh leaves).
    unseen_max: int = 0
    unseen_nodes: int = 0

    def per_node_s(self) -> float:
        return self.dht_messages / self.node_seconds if self.node_seconds else 0.0


@dataclass(slots=True)
class _Node:
    """One node's `CellService` state (the daemon's fields of the same names)."""

    idx: int
    peer: PeerId
    key: int
    directory: CellDirectory
    cell: CellId
    changed_at: float
    started: bool = False
    placed: bool = False
    providing: bool = False
    found: int | None = None
    heard_others: bool = False
    rejoined_at: float = -1e9
    report: tuple[float, CellReport] | None = None
    #: Reports heard in the running round (`heard` of the daemon's `_read`).
    round_heard: int = 0
    #: Rounds since a fresh report of its cell from another node (`should_publish`).
    unreported: int = 0


class DhtRouter(Router):
    """The DHT cores' network: the world's liveness (a crashed node's core is dead
    too), the network model's one-way delay without jitter or loss."""

    def __init__(self, engine: Engine, world: World) -> None:
        super().__init__(engine)
        self.world = world
        self.link_up = self._up
        self.link_delay = self._delay

    def _alive(self, peer: PeerId) -> bool:
        return self.world.is_alive(peer)

    def _up(self, src: PeerId, dst: PeerId) -> bool:
        return self._alive(src) and self._alive(dst)

    def _delay(self, src: PeerId, dst: PeerId) -> float:
        ix = self.world.index
        return self.world.net.base_delay_s(ix[src], ix[dst])

    def _deliver(self, arg: tuple[PeerId, PeerId, Any]) -> None:
        if not self._alive(arg[1]):  # crashed while the message was on its way
            self.dropped += 1
            return
        super()._deliver(arg)

    def _fire(self, arg: tuple[PeerId, Any, float]) -> None:
        if self._alive(arg[0]):
            super()._fire(arg)


class RdvCellsSim(CellsSim):
    """`CellsSim` with each node's own DHT rendezvous (see the module docstring)."""

    def __init__(self, run: CellsRun) -> None:
        super().__init__(run)
        # Streams of their own: the oracle run's rngs draw exactly as without this mode.
        self.rng_rdv = random.Random(f"rdv/{run.seed}")
        self.router = DhtRouter(self.engine, self.world)
        self.router.on_emit = self._dht_emit
        self.kad_cfg = KadConfig()
        self.rdv: dict[int, _Node] = {}
        self.rdv_stats = RdvStats()
        #: Joined nodes' DHT keys and ids, sorted (to fill a joiner's table).
        self._jkeys: list[int] = []
        self._jids: list[PeerId] = []
        self._joined: list[int] = []
        #: (node slot, request id) → what the DHT call was for.
        self._calls: dict[tuple[int, int], str] = {}
        self._rid = 0
        self._ranks: dict[PeerId, bytes] = {}
        self.interval_s = run.digest_interval_s
        self.grace_s = run.hold_s + TTL_INTERVALS * run.digest_interval_s
        self.merge_at = self.cell_cfg.merge_below * self.cell_cfg.cap

    # ------------------------------------------------------------ joining

    def _join(self, idx: int) -> None:
        node = self.world.nodes[idx]
        self.world.restart(idx, node.core)
        now = self.engine.now
        kad = Kademlia(node.peer, self.kad_cfg, rng=random.Random(self.rng_rdv.getrandbits(64)))
        self.router.add(node.peer, kad)
        self._fill_table(node.peer, kad, now)
        self.rdv[idx] = _Node(idx, node.peer, cell_key(node.peer),
                              CellDirectory(SITE, TTL_INTERVALS * self.interval_s),
                              CellId(SITE), now)
        # Bootstrap: SWIM joins through configured peers before the node knows its cell.
        up = [j for j in self._joined[-4096:] if self.world.nodes[j].alive]
        boot = {self.rng_rdv.choice(up) for _ in range(min(3, len(up)))}
        self._joined.append(idx)
        if boot:
            self.world.inject(idx, Join(tuple(self.world.nodes[j].peer for j in sorted(boot))))
        self.engine.at(now + FIRST_ROUND_S, self._dht_round, idx)
        self.engine.at(now + FIRST_ROUND_S, self._tick, idx)

    def _fill_table(self, p: PeerId, kad: Kademlia, now: float) -> None:
        """`sim.dht_static.seed_tables` for one joiner against the nodes joined so far;
        each peer it lists learns it too (its join lookups reach them)."""
        keys, ids, x = self._jkeys, self._jids, p.key
        k = self.kad_cfg.k
        for c in range(KEY_BITS):
            shift = KEY_BITS - c - 1
            lo = ((x >> shift) ^ 1) << shift
            members = ids[bisect.bisect_left(keys, lo):bisect.bisect_left(keys, lo + (1 << shift))]
            if len(members) > k:
                members = self.rng_rdv.sample(members, k)
            for m in members:
                kad.table.seen(m, now)
                other = self.router.nodes[m]
                assert isinstance(other, Kademlia)
                other.table.seen(p, now)
            own = (x >> shift) << shift
            if bisect.bisect_left(keys, own + (1 << shift)) == bisect.bisect_left(keys, own):
                break  # nobody joined shares c + 1 bits with us: deeper buckets are empty
        at = bisect.bisect_left(keys, x)
        keys.insert(at, x)
        ids.insert(at, p)

    # ------------------------------------------------------------ the DHT round

    def _alive(self, idx: int) -> bool:
        return self.world.nodes[idx].alive

    def _jittered(self) -> float:
        return self.interval_s * (0.8 + 0.4 * self.rng_rdv.random())

    def _call(self, idx: int, make: Any, what: str) -> None:
        self._rid += 1
        self._calls[(idx, self._rid)] = what
        self.router.inject(self.world.nodes[idx].peer, make(self._rid))

    def _live(self, idx: int) -> list[PeerId]:
        """The node's live view, itself first (the daemon's `list_members`)."""
        core = self.world.nodes[idx].core
        assert isinstance(core, CellNode)
        return [self.world.nodes[idx].peer] + [
            p for p, m in core.swim.table.items() if m.state in LIVE]

    def _dht_round(self, idx: int) -> None:
        """The daemon's `_dht_loop` body: publish (`_publish`), then read (`_read`)."""
        if not self._alive(idx):
            return
        st = self.rdv[idx]
        publisher = should_publish(st.peer, self._live(idx), placed=st.placed,
                                   found=st.found, unreported=st.unreported)
        if publisher != st.providing:
            st.providing = publisher
            if publisher:
                self.rdv_stats.provides += 1
                self._call(idx, lambda rid: Provide(rid, (KEY,)), "provide")
                return  # the read starts when the provide is done (`_dht_emit`)
            self.rdv_stats.stops += 1
            self.router.inject(st.peer, StopProviding((KEY,)))
        self._read(idx)

    def _read(self, idx: int) -> None:
        self.rdv_stats.lookups += 1
        self._call(idx, lambda rid: GetProviders(rid, KEY, MAX_READ), "read")

    def _dht_emit(self, now: float, peer: PeerId, ev: Any) -> None:
        self.router.emitted.clear()  # the router's log is not needed here
        t = type(ev)
        if t is not LookupDone and t is not ProvideDone:
            return
        idx = self.world.index[peer]
        what = self._calls.pop((idx, ev.request_id), None)
        if what is None or not self._alive(idx):
            return
        if what == "provide":
            self._read(idx)
        else:
            assert isinstance(ev, LookupDone)
            self._providers_found(idx, ev)

    def _providers_found(self, idx: int, ev: LookupDone) -> None:
        """Ask each provider for its report (read at the provider one round trip on);
        the round ends when every request is answered or has timed out."""
        st, now, net = self.rdv[idx], self.engine.now, self.world.net
        res = ev.result
        providers = res.providers if isinstance(res, Providers) and ev.error is None else ()
        s = self.rdv_stats
        s.providers_max = max(s.providers_max, len(providers))
        if not providers and any(n.providing and self._alive(n.idx) for n in self.rdv.values()):
            s.lookups_empty += 1
        end = now
        st.round_heard = 0
        for info in providers[:MAX_READ]:
            if info.peer == st.peer:
                continue
            j = self.world.index[info.peer]
            s.requests += 1
            if self._alive(j):
                rtt = 2 * net.base_delay_s(idx, j)
                self.engine.at(now + rtt, self._answer, (idx, j))
                end = max(end, now + rtt)
            else:
                s.requests_failed += 1
                end = max(end, now + REQUEST_TIMEOUT_S)
        failed = not isinstance(res, Providers) or ev.error is not None
        self.engine.at(end, self._round_end, (idx, None if failed else len(providers)))

    def _answer(self, arg: tuple[int, int]) -> None:
        idx, j = arg
        if not (self._alive(idx) and self._alive(j)):
            return
        st, now = self.rdv[idx], self.engine.now
        try:
            report = CellReport.from_wire(self._own_report(j).to_wire(), self.rdv[j].peer)
        except MalformedFrame:
            self.rdv_stats.reports_bad += 1
            return
        st.directory.heard(report, self.rdv[j].peer, now)
        st.round_heard += 1

    def _round_end(self, arg: tuple[int, int | None]) -> None:
        idx, found = arg
        if not self._alive(idx):
            return
        st = self.rdv[idx]
        st.found = found_after(st.found, found)
        st.heard_others = st.heard_others or st.round_heard > 0
        src = st.directory.source(st.cell, self.engine.now)
        st.unreported = 0 if src not in (None, st.peer) else st.unreported + 1
        self.engine.at(self.engine.now + self._jittered(), self._dht_round, idx)

    def _rank(self, p: PeerId) -> bytes:
        r = self._ranks.get(p)
        if r is None:
            r = self._ranks[p] = publisher_rank(p)
        return r

    def _own_report(self, j: int) -> CellReport:
        """Node j's `CellService.own_report`: its cell's digest from its SWIM view, and
        its view's `MAX_SEEDS` smallest-ranked members as seeds (addresses: none here)."""
        st, now = self.rdv[j], self.engine.now
        cached = st.report
        if cached is not None and cached[1].cell == st.cell and now - cached[0] < REPORT_CACHE_S:
            return cached[1]
        core = self.world.nodes[j].core
        assert isinstance(core, CellNode)
        swim = core.swim
        live = [(p, m.ad) for p, m in swim.table.items() if m.state in LIVE]
        digest = CellDigest.of(st.cell, [swim.local.ad] + [ad for _, ad in live], now)
        peers = [st.peer] + [p for p, _ in live]
        seeds = heapq.nsmallest(MAX_SEEDS, peers, key=self._rank)
        report = CellReport(digest, tuple(Seed(p, ()) for p in seeds))
        st.report = (now, report)
        return report

    # ------------------------------------------------------------ the tick

    def _tick(self, idx: int) -> None:
        if not self._alive(idx):
            return
        self._tick_once(self.rdv[idx])
        self.engine.at(self.engine.now + self._jittered(), self._tick, idx)

    def _tick_once(self, st: _Node) -> None:
        """The daemon's `CellService.tick`."""
        now, d = self.engine.now, st.directory
        if not st.started:
            if st.heard_others or st.found == 0:
                self._place(st, now)
            return
        sib = st.cell.sibling()
        rep = d.report(sib, now) if sib is not None else None
        if rep is not None:
            self.world.inject(st.idx, SiblingSize(rep.cell, rep.digest.members))
        live = len(self._live(st.idx))
        alone = live <= 1
        sizes = {r.cell: r.digest.members for r, _, _ in d.fresh(now)}
        new = cell_to_adopt(st.cell, st.key, [r.cell for r in d.leaves(now)],
                            first=not st.placed, settled=now - st.changed_at > self.grace_s,
                            alone=alone, sizes=sizes, live=live, merge_at=self.merge_at)
        if st.heard_others:
            st.placed = True
        if new is not None:
            self._move_to(st, new, now)
            self.rdv_stats.moves += 1
            self.report.strays_moved += 1
        elif alone and now - st.rejoined_at > d.ttl_s:
            rep = d.report(st.cell, now)
            if rep is not None:
                st.rejoined_at = now
                self.rdv_stats.rejoins += 1
                self._join_seeds(st, rep.seeds)

    def _place(self, st: _Node, now: float) -> None:
        """A new node's first cell (`CellService._place`)."""
        leaves = [r.cell for r in st.directory.leaves(now)]
        st.started = st.placed = True
        self.rdv_stats.placed += 1
        self._move_to(st, choose_cell(st.key, SITE, leaves), now)

    def _move_to(self, st: _Node, cell: CellId, now: float) -> None:
        st.cell, st.changed_at = cell, now
        self.world.inject(st.idx, StartCells(cell))
        self._move(st.idx, cell)  # the measuring truth
        rep = st.directory.report(cell, now)
        if rep is not None:
            self._join_seeds(st, rep.seeds)
        else:
            self.rdv_stats.placed_blind += 1

    def _join_seeds(self, st: _Node, seeds: tuple[Seed, ...]) -> None:
        """`CellService._join`: the seeds that are up (a dial to a dead one fails)."""
        peers = tuple(s.peer for s in seeds if s.peer != st.peer and self.world.is_alive(s.peer))
        if peers:
            self.world.inject(st.idx, Join(peers))
        else:
            self.rdv_stats.joins_failed += 1

    def _on_emit(self, idx: int, ev: Any) -> None:
        super()._on_emit(idx, ev)
        if type(ev) is CellChanged:
            st, now = self.rdv[idx], self.engine.now
            st.cell, st.changed_at = ev.new, now
            if ev.reason == "merge":  # `CellService.on_event`: join the sibling's seeds
                sib = ev.old.sibling()
                rep = st.directory.report(sib, now) if sib is not None else None
                st.directory.forget_under(ev.new)
                if rep is not None:  # after the effects being applied now
                    self.engine.at(now, lambda _: self._join_seeds(st, rep.seeds), None)

    def _digests(self, _: Any) -> None:
        """No oracle digests, no oracle strays here: only the timeline (the truth)."""
        sizes = [len(m) for m in self.directory.values()]
        self.report.timeline.append((self.engine.now, len(sizes), max(sizes, default=0)))
        self.engine.at(self.engine.now + self.cfg.digest_interval_s, self._digests, None)

    # ------------------------------------------------------------ measuring

    def measure(self) -> None:
        super().measure()
        self.finish_rdv()

    def finish_rdv(self) -> RdvStats:
        """The rendezvous counts at the end (the combined run calls it too)."""
        s, now = self.rdv_stats, self.engine.now
        s.dht_messages = self.router.sent
        s.node_seconds = sum(self.world.uptime_s(i) for i in self._joined)
        truth = {c for c in self.directory}
        s.unplaced = s.unseen_max = s.unseen_nodes = 0
        for st in self.rdv.values():
            if not self._alive(st.idx):
                continue
            if not st.started:
                s.unplaced += 1
                continue
            seen = {r.cell for r in st.directory.leaves(now)} | {st.cell}
            unseen = len(truth - seen)
            s.unseen_max = max(s.unseen_max, unseen)
            s.unseen_nodes += unseen > 0
        return s


def rdv_lines(s: RdvStats) -> list[str]:
    return [
        f"rendezvous (DHT): {s.dht_messages:,} DHT messages = {s.per_node_s():.2f} per "
        f"node·s; {s.lookups:,} lookups ({s.lookups_empty} found nobody), providers found "
        f"max {s.providers_max}; {s.requests:,} report requests ({s.requests_failed:,} to a "
        f"dead provider, {s.reports_bad} bad); provides {s.provides}, stops {s.stops}",
        f"  placed {s.placed} ({s.placed_blind} moves with no report of the cell), moved by "
        f"cell_to_adopt {s.moves}, rejoins {s.rejoins}, joins with no live seed "
        f"{s.joins_failed}; at the end: unplaced {s.unplaced}, nodes missing a current "
        f"cell in their directory {s.unseen_nodes} (max {s.unseen_max} cells)",
    ]
