"""Run a scenario: build nodes from the real cores, drive churn, faults and workloads,
and record metrics.

Each node is an `overlay.node.Node` composing the real `gossip.swim.Swim` and
`dht.core.Kademlia` cores (those the scenario lists) with `overlay.node.build_node`,
the daemon's composition: a member that gossip reports joined is offered to the DHT
(`AddPeer`). Randomness comes from one seed, split into independent streams (keys,
cores, network, churn, workloads), so adding a workload does not shift, say, the
network's draws.

What is measured (names as in metrics.json):
- gossip: `detect_first_s` (crash → first suspicion raised by a prober),
  `detect_failed_s` (→ first death notice), `detect_all_s` (→ every node that was
  live at the crash declared it failed or left); false suspicions and failures of
  live members per sample interval; `event_latency_s` and `event_coverage` of user
  events; the view accuracy of sampled nodes over time (convergence);
- dht: `lookup_hops`, `lookup_latency_s`, `lookup_queried`, `lookup_found_closest`
  (sampled against the true closest live node), `providers_found`,
  `provide_latency_s`, bulk `fetch_s`;
- load: messages sent and received per node per second of uptime, by type.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.node import DhtSetup, GossipSetup, Node, build_node
from sim.engine import Engine
from sim.hugepages import HugePages
from sim.metrics import Metrics
from sim.network import Network, schedule_partitions
from sim.reachability import SimAutoNat
from sim.scenario import Scenario
from sim.workloads import Workloads
from sim.world import World


@dataclass(slots=True)
class _Death:
    peer: PeerId
    at: float
    witnesses: int  # gossip nodes live at the crash, the victim excluded
    graceful: bool
    first_suspect: float | None = None
    first_failed: float | None = None
    declared: int = 0
    all_at: float | None = None


class Simulation:
    """One run of one scenario. `run()` returns the `Metrics`.

    A scenario with the "capsule" protocol needs `sim.capsules.CapsuleSimulation` (a
    subclass: capsule cores, oracle membership); `sim.simulations.simulation_for`
    picks the class for a scenario. Workloads and the outcomes of their requests are
    a collaborator, `self.workloads` (sim/workloads.py).
    """

    def __init__(self, sc: Scenario, *, progress: bool = False) -> None:
        self.sc = sc
        self.progress = progress
        master = random.Random(sc.seed)
        self.rng_keys = random.Random(master.getrandbits(64))
        self.rng_cores = random.Random(master.getrandbits(64))
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_churn = random.Random(master.getrandbits(64))
        self.rng_work = random.Random(master.getrandbits(64))
        #: Drawn after the others so that adding it changed none of them.
        self.rng_reach = random.Random(master.getrandbits(64))
        self.engine = Engine()
        self.net = Network(sc.network, self.rng_net)
        self.metrics = Metrics()
        self.gossip = "gossip" in sc.protocols
        self.dht = "dht" in sc.protocols
        self._setup_protocols()
        self.world = World(self.engine, self.net, timer_grid=self._grid())
        # Idle gossip ticks off the heap (same output; docs/simulation.md "Speed-up").
        self.world.enable_parking()
        self.world.on_emit = self._on_emit
        self.huge_pages = HugePages()
        self.keys: list[KeyPair] = []
        self._deaths: dict[PeerId, _Death] = {}
        self._death_log: list[_Death] = []
        self._rids = itertools.count(1)
        self._fp_window = {"false_suspicions": 0, "false_failures": 0}
        self._leaving: dict[int, None] = {}
        #: DHT mode "auto": each node learns its reachability as the daemon does.
        self.autonat: SimAutoNat | None = None
        if self.dht and self.kad_cfg.mode == "auto":
            self.autonat = SimAutoNat(self.engine, self.world, self.net, self.metrics,
                                      self.rng_reach, self._dht_peers)
            self.world.refuse = self._refuses_kad
        self.workloads = Workloads(
            duration_s=sc.duration_s, engine=self.engine, net=self.net, world=self.world,
            metrics=self.metrics, rng=self.rng_work, pick_live=self._random_live,
            take_down=self._take_down_for_good, rids=self._rids, part=self.part,
        )

    # ------------------------------------------------------------ node assembly

    def _setup_protocols(self) -> None:
        sc = self.sc
        if self.gossip:
            from gossip.claim_verifier import Verifier
            from gossip.profiles import profile

            self.swim_cfg = profile(sc.gossip_profile, **sc.gossip_overrides)
            # One cache for the whole process: each signed object is verified once,
            # as gossip/claim_verifier.py intends for simulators.
            self.verifier = Verifier(max(4096, 16 * sc.nodes))
        if self.dht:
            from dht.api import KadConfig

            self.kad_cfg = KadConfig(**sc.dht_overrides)

    def _grid(self) -> dict[Any, float]:
        if not (self.sc.lockstep and self.gossip):
            return {}
        c = self.swim_cfg
        return {("gossip", "probe"): c.probe_interval_s, ("gossip", "gossip"): c.gossip_interval_s}

    def _make_core(self, keys: KeyPair) -> Node:
        rng = random.Random(self.rng_cores.getrandbits(64))
        gossip = GossipSetup(self.swim_cfg, verifier=self.verifier) if self.gossip else None
        dht = DhtSetup(self.kad_cfg) if self.dht else None
        return build_node(keys, rng, gossip=gossip, dht=dht,
                          dht_from_gossip=self.sc.dht_from_gossip).node  # fmt: skip

    def _refuses_kad(self, idx: int, msg: Any) -> bool:
        """A DHT client refuses kad streams at once (the daemon registers no handler)."""
        from dht.wire import DhtRequest

        return isinstance(msg, DhtRequest) and not self.part(idx, "dht").serving

    def _dht_peers(self, idx: int) -> list[PeerId]:
        return list(self.part(idx, "dht").table.peers())

    def part(self, idx: int, name: str) -> Any:
        core = self.world.nodes[idx].core
        assert isinstance(core, Node)
        return core.parts[name]

    # ------------------------------------------------------------ joining

    def _new_keys(self) -> KeyPair:
        return KeyPair.from_rng_seed(self.rng_keys.randbytes(32))

    def _spawn(self) -> int:
        keys = self._new_keys()
        idx = self.world.add(keys.peer_id, self._make_core(keys))
        self.keys.append(keys)
        self.world.crash(idx)  # not up until its join time
        self.world.nodes[idx].uptime_s = 0.0
        return idx

    def _seed_peers(self, me: int) -> list[int]:
        """Up to `seeds` live nodes to join through: the bootstrap nodes first."""
        out = [i for i in range(min(self.sc.seeds, len(self.world.nodes)))
               if i != me and self.world.nodes[i].alive]
        if not out:
            live = [i for i in self.world.live() if i != me]
            if live:
                out = [self.rng_churn.choice(live)]
        return out[: self.sc.seeds]

    def _random_live(self) -> int | None:
        """A live node that is not leaving, drawn from the workload stream."""
        live = [i for i in self.world.live() if i not in self._leaving]
        return self.rng_work.choice(live) if live else None

    # ------------------------------------------------------------ churn and failures

    def _start_churn(self, _: Any = None) -> None:
        for idx in self.world.live():
            self._schedule_session_end(idx)

    def _schedule_session_end(self, idx: int) -> None:
        ch = self.sc.churn
        assert ch is not None
        length = ch.session.sample(self.rng_churn)
        graceful = self.rng_churn.random() < ch.graceful_fraction
        epoch = self.world.nodes[idx].epoch
        self.engine.at(self.engine.now + length, self._session_end, (idx, epoch, graceful))

    def _session_end(self, arg: tuple[int, int, bool]) -> None:
        idx, epoch, graceful = arg
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            return
        self.metrics.count("churn_leaves_graceful" if graceful else "churn_crashes")
        self._take_down(idx, graceful=graceful, rejoin=True)

    def _take_down(self, idx: int, *, graceful: bool, rejoin: bool) -> None:
        if graceful and self.gossip:
            from gossip.events import Leave

            self._leaving[idx] = None
            self._note_death(idx, graceful=True)
            self.world.inject(idx, Leave())
            # The node stops when gossip emits LeftColony (see _on_emit); be safe.
            delay = self.swim_cfg.leave_propagate_s + 1.0
            self.engine.at(self.engine.now + delay, self._finish_leave, (idx, rejoin))
            return
        self._note_death(idx, graceful=graceful)
        self.world.crash(idx)
        if rejoin:
            self._schedule_rejoin(idx)

    def _take_down_for_good(self, idx: int, graceful: bool) -> None:
        self._take_down(idx, graceful=graceful, rejoin=False)

    def _finish_leave(self, arg: tuple[int, bool]) -> None:
        idx, rejoin = arg
        self._leaving.pop(idx, None)
        if self.world.nodes[idx].alive:
            self.world.crash(idx)
            if rejoin:
                self._schedule_rejoin(idx)

    def _schedule_rejoin(self, idx: int) -> None:
        ch = self.sc.churn
        if ch is None:
            return
        down = ch.downtime.sample(self.rng_churn)
        if not ch.same_identity:
            idx = self._spawn()
        self.engine.at(self.engine.now + down, self._rejoin, idx)

    def _rejoin(self, idx: int) -> None:
        w = self.world
        if w.nodes[idx].alive:
            return
        w.nodes[idx].core = self._make_core(self.keys[idx])  # state lost with the process
        self._join_fresh(idx)

    def _join_fresh(self, idx: int) -> None:
        w = self.world
        core = w.nodes[idx].core
        w.restart(idx, core)
        seeds = [w.nodes[i].peer for i in self._seed_peers(idx)]
        self.metrics.count("joins")
        if self.gossip:
            from gossip.events import Join

            w.inject(idx, Join(tuple(seeds)))
        if self.dht and seeds:
            from dht.api import Bootstrap
            from dht.wire import PeerInfo

            w.inject(idx, Bootstrap(tuple(PeerInfo(p) for p in seeds), next(self._rids)))
        if self.autonat is not None:
            self.autonat.start(idx)
        if self.sc.churn is not None and self.engine.now >= self.sc.churn.start_s:
            self._schedule_session_end(idx)

    def _note_death(self, idx: int, *, graceful: bool) -> None:
        if not self.gossip:
            return
        peer = self.world.nodes[idx].peer
        witnesses = sum(1 for n in self.world.nodes if n.alive and n.idx != idx
                        and n.idx not in self._leaving)
        d = _Death(peer, self.engine.now, witnesses, graceful)
        self._deaths[peer] = d
        self._death_log.append(d)

    # ------------------------------------------------------------ events from cores

    def _on_emit(self, idx: int, ev: Any) -> None:
        h = self._handlers.get(type(ev))
        if h is not None:
            h(idx, ev)

    def _build_handlers(self) -> None:
        self._handlers: dict[type, Callable[[int, Any], None]] = {}
        if self.gossip:
            from gossip.events import (
                LeftColony,
                MemberFailed,
                MemberLeft,
                MemberSuspected,
                UserEventReceived,
            )

            self._handlers[MemberSuspected] = self._on_suspected
            self._handlers[MemberFailed] = self._on_failed
            self._handlers[MemberLeft] = self._on_left
            self._handlers[UserEventReceived] = self.workloads.on_user_event
            self._handlers[LeftColony] = self._on_left_colony
        if self.dht:
            from dht.api import LookupDone, ProvideDone

            self._handlers[LookupDone] = self.workloads.on_lookup_done
            self._handlers[ProvideDone] = self.workloads.on_provide_done

    def _dead_record(self, peer: PeerId) -> _Death | None:
        d = self._deaths.get(peer)
        if d is None:
            return None
        i = self.world.index[peer]
        n = self.world.nodes[i]
        # Alive again (rejoined) → the record is about a past life.
        return d if not n.alive or i in self._leaving else None

    def _on_suspected(self, idx: int, ev: Any) -> None:
        me = self.world.nodes[idx].peer
        if ev.accuser != me:
            return  # count each accusation once, at its origin
        d = self._dead_record(ev.peer)
        if d is None:
            self._fp_window["false_suspicions"] += 1
            self.metrics.count("false_suspicions")
        elif d.first_suspect is None:
            d.first_suspect = self.engine.now

    def _on_failed(self, idx: int, ev: Any) -> None:
        d = self._dead_record(ev.peer)
        if d is None:
            if ev.accuser == self.world.nodes[idx].peer:
                self._fp_window["false_failures"] += 1
                self.metrics.count("false_failures")
            return
        if d.first_failed is None:
            d.first_failed = self.engine.now
        self._declared(d)

    def _on_left(self, idx: int, ev: Any) -> None:
        d = self._dead_record(ev.peer)
        if d is not None:
            self._declared(d)

    def _declared(self, d: _Death) -> None:
        d.declared += 1
        if d.all_at is None and d.declared >= d.witnesses:
            d.all_at = self.engine.now

    def _on_left_colony(self, idx: int, ev: Any) -> None:
        if idx in self._leaving:
            self._finish_leave((idx, self.sc.churn is not None))

    # ------------------------------------------------------------ sampling

    def _sample(self, _: Any = None) -> None:
        # Huge pages for the member tables as they grow (sim/hugepages.py): nothing
        # the simulation can observe changes, a large cell's events get cheaper.
        self.huge_pages.maybe_collapse()
        w, m = self.world, self.metrics
        live = w.live()
        row: dict[str, Any] = {
            "t": self.engine.now,
            "live": len(live),
            "messages": w.stats["sent"],
        }
        if self.gossip:
            row.update(self._fp_window)
            self._fp_window = {k: 0 for k in self._fp_window}
            row["view_accuracy"], row["view_stale"] = self._view_accuracy(live)
        if self.dht:
            k = min(self.sc.view_sample, len(live))
            pick = self.rng_work.sample(live, k) if k else []
            sizes = [len(self.part(i, "dht").table) for i in pick]
            row["dht_table_mean"] = sum(sizes) / len(sizes) if sizes else 0.0
        m.row("timeseries", **row)
        nxt = self.engine.now + self.sc.sample_interval_s
        if nxt <= self.sc.duration_s + 1e-9:
            self.engine.at(nxt, self._sample)

    def _view_accuracy(self, live: list[int]) -> tuple[float, float]:
        """Mean over sampled live nodes: share of live nodes they see as live, and
        share of their live-looking members that are in fact down."""
        from gossip.members import MemberState

        k = min(self.sc.view_sample, len(live))
        if k == 0:
            return 0.0, 0.0
        live_peers = {self.world.nodes[i].peer for i in live}
        acc = stale = 0.0
        for i in self.rng_work.sample(live, k):
            swim = self.part(i, "gossip")
            seen = [p for p, mm in swim.members.items()
                    if mm.state in (MemberState.ALIVE, MemberState.SUSPECT)]
            good = sum(1 for p in seen if p in live_peers)
            acc += (good + 1) / len(live_peers)
            stale += (len(seen) - good) / max(1, len(seen))
        return acc / k, stale / k

    # ------------------------------------------------------------ the run

    def build(self) -> None:
        sc = self.sc
        self._build_handlers()
        for _ in range(sc.nodes):
            self._spawn()
        n = sc.nodes
        for i in range(n):
            # Bootstrap nodes first, the rest spread over join_spread_s in order.
            t = 0.0 if i < sc.seeds else sc.join_spread_s * i / n
            self.engine.at(t, self._first_join, i)
        schedule_partitions(self.net, list(sc.partitions), self.engine.at)
        if sc.churn is not None:
            self.engine.at(sc.churn.start_s, self._start_churn)
        for w in sc.workloads:
            self.workloads.schedule(w)
        self.engine.at(sc.sample_interval_s, self._sample)

    def _first_join(self, idx: int) -> None:
        self._join_fresh(idx)

    def run(self) -> Metrics:
        self.build()
        sc = self.sc
        steps = 200
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=sc.name, unit="step", leave=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| sim {postfix}")
        for s in range(1, steps + 1):
            self.engine.run_until(sc.duration_s * s / steps)
            if bar is not None:
                bar.set_postfix_str(f"{self.engine.now:.0f}/{sc.duration_s:.0f} s, "
                                    f"{self.engine.events_run} events")
                bar.update(1)
        if bar is not None:
            bar.close()
        self._finish()
        return self.metrics

    def _finish(self) -> None:
        m, w, sc = self.metrics, self.world, self.sc
        m.info.update({
            "scenario": sc.name,
            "seed": sc.seed,
            "nodes": sc.nodes,
            "node_slots": len(w.nodes),
            "protocols": list(sc.protocols),
            "duration_s": sc.duration_s,
            "events": self.engine.events_run,
            "live_at_end": len(w.live()),
        })
        for k, v in sorted(w.stats.items()):
            m.counters[f"net_{k}"] = v
        for k, v in sorted(self.net.stats.items()):
            m.counters[f"net_{k}"] = v
        for k, v in sorted(w.by_type.items()):
            m.counters[f"msg_{k}"] = v
        for d in self._death_log:
            first = None if d.first_suspect is None else d.first_suspect - d.at
            failed = None if d.first_failed is None else d.first_failed - d.at
            full = None if d.all_at is None else d.all_at - d.at
            if not d.graceful:
                if first is not None:
                    m.sample("detect_first_s", first)
                if failed is not None:
                    m.sample("detect_failed_s", failed)
            if full is not None:
                m.sample("detect_all_s" if not d.graceful else "leave_all_s", full)
            m.row("detections", t=d.at, graceful=int(d.graceful), witnesses=d.witnesses,
                  first_suspect_s=first, first_failed_s=failed, declared=d.declared,
                  all_s=full)
        for (_, seq), ev in self.workloads.events.items():
            cov = len(ev.delays) / ev.live_at_send if ev.live_at_send else 1.0
            m.sample("event_coverage", cov)
            for dly in ev.delays:
                m.sample("event_latency_s", dly)
            ds = sorted(ev.delays)
            m.row("events", t=ev.sent_at, seq=seq, live=ev.live_at_send,
                  received=len(ds), coverage=cov, last_s=ds[-1] if ds else None)
        for n in w.nodes:
            up = w.uptime_s(n.idx)
            if up <= 0:
                continue
            m.sample("load_sent_per_s", w.sent[n.idx] / up)
            m.sample("load_received_per_s", w.received[n.idx] / up)
            m.row("load", node=n.idx, region=self.net.region_names[self.net.region[n.idx]],
                  nat=int(self.net.nat[n.idx]), uptime_s=up, sent=w.sent[n.idx],
                  received=w.received[n.idx], sent_per_s=w.sent[n.idx] / up,
                  received_per_s=w.received[n.idx] / up)
