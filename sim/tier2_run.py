"""Run N nodes of the tier-2 overlay (HyParView + Plumtree) and measure it.

One topic, real `gossip.topics.TopicsCore` objects on `sim.tier2_world.LinkWorld`
(the engine and network model of every other scenario). The run, all from one seed:

1. joins: node 0 founds the swarm; node i joins `join_spacing_s` later through up to
   three random nodes that joined before it (as DHT rendezvous would return them);
2. warm-up of `warmup_s` (shuffles run; views settle);
3. `broadcasts` rounds: a random live node broadcasts, the round runs until every
   live node delivered or `round_timeout_s`; per round: delivery ratio, RMR =
   payload messages received / (nodes reached − 1) − 1 (Plumtree paper §4.2) and
   LDH = the largest hop count at delivery (§4.2);
4. optionally a crash of `crash_fraction` of the live nodes at once, one broadcast
   right after it (the paper's "reliability during failures"), `repair_s` of repair,
   then `broadcasts` more rounds.

The report also checks the active views: symmetric (b ∈ active(a) ⇔ a ∈ active(b),
counted over live pairs), connected (one component over live nodes), and the largest
per-node state (`TopicsCore.entries()`), which must not grow with N.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gossip.hyparview import HyParViewConfig
from gossip.plumtree import Delivered, PlumtreeConfig, message_id
from gossip.topic_messages import Gossip
from gossip.topics import Broadcast, JoinTopic, TopicsConfig, TopicsCore
from overlay.core.ids import PeerId
from sim.engine import Engine
from sim.network import Network, NetworkConfig
from sim.tier2_world import LinkWorld

TOPIC = bytes(32)


@dataclass(frozen=True, slots=True)
class OverlayRun:
    nodes: int = 200
    seed: int = 1
    active_size: int = 5
    passive_size: int = 30
    shuffle_interval_s: float = 30.0
    join_spacing_s: float = 0.02
    warmup_s: float = 60.0
    broadcasts: int = 10
    round_timeout_s: float = 10.0
    crash_fraction: float = 0.0
    repair_s: float = 30.0
    settle_s: float = 3.0
    wire: bool = False
    #: Extra delay before the other end of a crashed node's connection notices (0: an
    #: RST at once; a keep-alive timeout is seconds).
    close_detect_s: float = 0.0
    #: Every round from the same live sender (iroh-gossip's "single sender" test);
    #: otherwise a random live node each round ("multiple senders").
    single_sender: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def topics_config(self) -> TopicsConfig:
        hpv = HyParViewConfig(active_size=self.active_size, passive_size=self.passive_size,
                              shuffle_interval_s=self.shuffle_interval_s)
        return TopicsConfig(hyparview=hpv, plumtree=PlumtreeConfig())


@dataclass(slots=True)
class Round:
    phase: str
    delivery: float
    rmr: float
    ldh: int
    duration_s: float


@dataclass(slots=True)
class ViewReport:
    live: int
    asymmetric_links: int
    components: int
    isolated: int
    degree: dict[int, int]
    max_entries: int


@dataclass(slots=True)
class OverlayReport:
    run: OverlayRun
    rounds: list[Round] = field(default_factory=list)
    views: dict[str, ViewReport] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def mean(self, phase: str, what: str) -> float:
        rs = [float(getattr(r, what)) for r in self.rounds if r.phase == phase]
        return sum(rs) / len(rs) if rs else float("nan")

    def worst(self, phase: str, what: str) -> float:
        rs = [float(getattr(r, what)) for r in self.rounds if r.phase == phase]
        if not rs:
            return float("nan")
        return min(rs) if what == "delivery" else max(rs)


class OverlaySim:
    """Builds the world and runs the phases; `run()` returns the report."""

    def __init__(self, run: OverlayRun) -> None:
        self.cfg = run
        master = random.Random(run.seed)
        self.rng_keys = random.Random(master.getrandbits(64))
        self.rng_cores = random.Random(master.getrandbits(64))
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_work = random.Random(master.getrandbits(64))
        self.engine = Engine()
        self.world = LinkWorld(self.engine, Network(run.network, self.rng_net), wire=run.wire,
                               close_detect_s=run.close_detect_s)
        self.world.on_emit = self._on_emit
        self.world.on_gossip = self._on_gossip
        self.report = OverlayReport(run)
        # Per broadcast in flight: who delivered, payload copies received, max hop.
        self._got: dict[bytes, set[int]] = {}
        self._copies: dict[bytes, int] = {}
        self._hop: dict[bytes, int] = {}
        self._sender: int | None = None

    # ------------------------------------------------------------ hooks

    def _on_emit(self, idx: int, ev: Any) -> None:
        if type(ev) is Delivered:
            got = self._got.get(ev.msg_id)
            if got is not None:
                got.add(idx)
                if ev.hop > self._hop[ev.msg_id]:
                    self._hop[ev.msg_id] = ev.hop

    def _on_gossip(self, idx: int, g: Gossip) -> None:
        if g.msg_id in self._copies:
            self._copies[g.msg_id] += 1

    # ------------------------------------------------------------ phases

    def build(self) -> None:
        cfg = self.cfg
        tcfg = cfg.topics_config()
        for i in range(cfg.nodes):
            peer = PeerId.from_ed25519(self.rng_keys.randbytes(32))
            rng = random.Random(self.rng_cores.getrandbits(64))
            self.world.add(peer, TopicsCore(peer, tcfg, rng))
            boot: tuple[PeerId, ...] = ()
            if i:
                picks = [self.rng_work.randrange(i) for _ in range(min(3, i))]
                boot = tuple(dict.fromkeys(self.world.peers[j] for j in picks))
            self.engine.at(i * cfg.join_spacing_s, self._join, (i, boot))

    def _join(self, arg: tuple[int, tuple[PeerId, ...]]) -> None:
        idx, boot = arg
        self.world.inject(idx, JoinTopic(TOPIC, boot))

    def broadcast_round(self, phase: str) -> Round:
        live = self.world.live()
        sender = live[self.rng_work.randrange(len(live))]
        if self.cfg.single_sender:
            if self._sender is None or not self.world.alive[self._sender]:
                self._sender = sender
            sender = self._sender
        payload = b"m%d" % len(self.report.rounds) + self.rng_work.randbytes(8)
        start = self.engine.now
        mid = message_id(payload)
        self._got[mid], self._copies[mid], self._hop[mid] = set(), 0, 0
        self.world.inject(sender, Broadcast(TOPIC, payload))
        deadline = start + self.cfg.round_timeout_s
        step = 0.05
        while self.engine.now < deadline:
            self.engine.run_until(min(deadline, self.engine.now + step))
            # No node crashes inside a round, so a count of deliveries suffices.
            if len(self._got[mid]) >= len(live):
                break
        # Let in-flight grafts/duplicates land so they are counted for this round.
        self.engine.run_until(self.engine.now + 1.0)
        got = self._got.pop(mid)
        live_now = [i for i in live if self.world.alive[i]]
        reached = sum(1 for i in live_now if i in got)
        copies = self._copies.pop(mid)
        rmr = copies / (reached - 1) - 1 if reached > 1 else 0.0
        r = Round(phase, reached / len(live_now), rmr, self._hop.pop(mid),
                  self.engine.now - start)
        self.report.rounds.append(r)
        return r

    def crash(self, fraction: float) -> list[int]:
        live = self.world.live()
        victims = self.rng_work.sample(live, round(fraction * len(live)))
        for v in sorted(victims):
            self.world.crash(v)
        return victims

    def _active(self) -> tuple[dict[int, set[int]], int]:
        w = self.world
        act: dict[int, set[int]] = {}
        max_entries = 0
        for i in w.live():
            core = w.cores[i]
            assert isinstance(core, TopicsCore)
            topic = core.topics[TOPIC]
            act[i] = {w.index[p] for p in topic.membership.active}
            max_entries = max(max_entries, core.entries())
        return act, max_entries

    def views(self, label: str) -> ViewReport:
        """View checks. An asymmetric link counts only if it is still there
        `settle_s` later: a NEIGHBORREPLY or DISCONNECT in flight is not a fault."""
        w = self.world
        act, max_entries = self._active()
        live = w.live()
        alive = set(live)
        asym0 = {(a, b) for a in live for b in act[a] if b in alive and a not in act[b]}
        self.engine.run_until(self.engine.now + self.cfg.settle_s)
        act, entries2 = self._active()
        max_entries = max(max_entries, entries2)
        asym = sum(1 for a, b in asym0 if b in act.get(a, ()) and a not in act.get(b, ()))
        degree: dict[int, int] = {}
        for i in live:
            d = sum(1 for b in act[i] if b in alive)
            degree[d] = degree.get(d, 0) + 1
        rep = ViewReport(len(live), asym, _components(live, act, alive),
                         degree.get(0, 0), dict(sorted(degree.items())), max_entries)
        self.report.views[label] = rep
        return rep

    def run(self) -> OverlayReport:
        cfg = self.cfg
        self.build()
        self.engine.run_until(cfg.nodes * cfg.join_spacing_s + cfg.warmup_s)
        self.views("stable")
        # The first payload floods every link and prunes the tree into shape (RMR ≈
        # degree − 2); it is reported as its own phase, as the paper does.
        self.broadcast_round("first")
        for _ in range(cfg.broadcasts):
            self.broadcast_round("stable")
        if cfg.crash_fraction > 0:
            self.crash(cfg.crash_fraction)
            self.broadcast_round("during-failure")
            self.engine.run_until(self.engine.now + cfg.repair_s)
            self.views("repaired")
            for _ in range(cfg.broadcasts):
                self.broadcast_round("repaired")
        self.report.messages = dict(sorted(self.world.by_type.items()))
        self.report.events = self.engine.events_run
        return self.report


def _components(live: list[int], act: dict[int, set[int]], alive: set[int]) -> int:
    """Connected components of the (undirected) active-view graph over live nodes."""
    adj: dict[int, set[int]] = {a: set() for a in live}
    for a in live:
        for b in act[a]:
            if b in alive:
                adj[a].add(b)
                adj[b].add(a)
    seen: set[int] = set()
    comps = 0
    for s in live:
        if s in seen:
            continue
        comps += 1
        stack = [s]
        seen.add(s)
        while stack:
            a = stack.pop()
            for b in adj[a]:
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
    return comps


def run_overlay(run: OverlayRun) -> OverlayReport:
    return OverlaySim(run).run()


def summary_lines(rep: OverlayReport) -> list[str]:
    """A human summary: per phase delivery/RMR/LDH, then the view checks."""
    r = rep.run
    lines = [f"overlay: {r.nodes} nodes, seed {r.seed}, active {r.active_size}, "
             f"passive {r.passive_size}, {rep.events:,} events"]
    for phase in ("first", "stable", "during-failure", "repaired"):
        if any(x.phase == phase for x in rep.rounds):
            lines.append(
                f"  {phase:<15} delivery worst {rep.worst(phase, 'delivery'):.4f}  "
                f"RMR mean {rep.mean(phase, 'rmr'):.3f}  LDH mean "
                f"{rep.mean(phase, 'ldh'):.1f} max {rep.worst(phase, 'ldh'):.0f} hops")
    for label, v in rep.views.items():
        lines.append(f"  views {label}: {v.live} live, asymmetric {v.asymmetric_links}, "
                     f"components {v.components}, isolated {v.isolated}, "
                     f"degree {v.degree}, max entries/node {v.max_entries}")
    return lines


def to_json(rep: OverlayReport) -> dict[str, Any]:
    return {
        "run": {k: getattr(rep.run, k) for k in (
            "nodes", "seed", "active_size", "passive_size", "shuffle_interval_s",
            "broadcasts", "crash_fraction", "single_sender")},
        "rounds": [{"phase": x.phase, "delivery": x.delivery, "rmr": x.rmr,
                    "ldh": x.ldh, "duration_s": x.duration_s} for x in rep.rounds],
        "views": {k: {"live": v.live, "asymmetric_links": v.asymmetric_links,
                      "components": v.components, "isolated": v.isolated,
                      "degree": {str(d): c for d, c in v.degree.items()},
                      "max_entries": v.max_entries} for k, v in rep.views.items()},
        "messages": rep.messages,
        "events": rep.events,
    }
