"""Workloads of a simulation run: user events, DHT lookups, provides, provider
queries and bulk fetches, drawn from the scenario's `Workload` list.

A mixin of `sim.runner.Simulation`, split out to keep each module readable; it
uses the simulation's state declared below. Every draw comes from `rng_work`, in
the order the runner always made them, so the output is unchanged by the split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from overlay.core.ids import PeerId
from sim.engine import Engine
from sim.metrics import Metrics
from sim.network import Network
from sim.scenario import Scenario, Workload
from sim.world import World

#: Lookups checked against the true closest live node (O(N) each).
MAX_CLOSEST_CHECKS = 500


@dataclass(slots=True)
class _Event:
    sent_at: float
    live_at_send: int
    delays: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Req:
    kind: str
    start: float
    node: int
    key: bytes
    check_closest: bool = False
    fetch_bytes: int = 0


class WorkloadMixin:
    sc: Scenario
    engine: Engine
    net: Network
    world: World
    metrics: Metrics
    rng_work: random.Random
    _leaving: dict[int, None]
    _events: dict[tuple[PeerId, int], _Event]
    _reqs: dict[int, _Req]
    _cids: list[tuple[bytes, int]]
    _closest_checks: int

    def _take_down(self, idx: int, *, graceful: bool, rejoin: bool) -> None:
        raise NotImplementedError  # Simulation._take_down

    def _rid(self) -> int:
        raise NotImplementedError  # Simulation._rid

    def part(self, idx: int, name: str) -> Any:
        raise NotImplementedError  # Simulation.part

    def _schedule_workload(self, w: Workload) -> None:
        if w.rate_per_s > 0:
            end = min(w.end_s, self.sc.duration_s)
            t = max(w.start_s, 0.0) + self.rng_work.expovariate(w.rate_per_s)
            if t < end:
                self.engine.at(t, self._tick_workload, (w, end))
        else:
            self.engine.at(w.at_s, self._one_shot, w)

    def _tick_workload(self, arg: tuple[Workload, float]) -> None:
        w, end = arg
        self._do(w)
        t = self.engine.now + self.rng_work.expovariate(w.rate_per_s)
        if t < end:
            self.engine.at(t, self._tick_workload, arg)

    def _one_shot(self, w: Workload) -> None:
        for _ in range(w.count):
            self._do(w)

    def _random_live(self) -> int | None:
        live = [i for i in self.world.live() if i not in self._leaving]
        return self.rng_work.choice(live) if live else None

    def _do(self, w: Workload) -> None:
        idx = self._random_live()
        if idx is None:
            self.metrics.count("workload_no_live_node")
            return
        m = self.metrics
        kind = w.kind
        if kind == "kill":
            m.count("kills")
            self._take_down(idx, graceful=False, rejoin=False)
        elif kind == "leave":
            m.count("leaves")
            self._take_down(idx, graceful=True, rejoin=False)
        elif kind == "user_event":
            self._send_event(idx, w)
        elif kind == "lookup":
            from dht.api import FindNode

            key = self.rng_work.randbytes(32)
            rid = self._rid()
            check = self._closest_checks < MAX_CLOSEST_CHECKS
            self._closest_checks += check
            self._reqs[rid] = _Req("find_node", self.engine.now, idx, key, check)
            m.count("lookups_started")
            self.world.inject(idx, FindNode(rid, key))
        elif kind == "provide":
            from dht.api import Provide

            digest = hashlib.sha256(self.rng_work.randbytes(32)).digest()
            mh = b"\x12\x20" + digest
            self._cids.append((mh, idx))
            rid = self._rid()
            self._reqs[rid] = _Req("provide", self.engine.now, idx, mh)
            m.count("provides_started")
            self.world.inject(idx, Provide(rid, (mh,)))
        elif kind in ("get_providers", "fetch"):
            from dht.api import GetProviders

            if not self._cids:
                m.count("get_providers_nothing_published")
                return
            mh, _ = self._cids[self.rng_work.randrange(len(self._cids))]
            rid = self._rid()
            self._reqs[rid] = _Req(kind, self.engine.now, idx, mh, fetch_bytes=w.size_bytes)
            m.count(f"{kind}_started")
            self.world.inject(idx, GetProviders(rid, mh))

    def _send_event(self, idx: int, w: Workload) -> None:
        from gossip.events import SendUserEvent

        swim = self.part(idx, "gossip")
        if not swim.started or swim.leaving:
            return
        seq = swim.user_events.next_seq  # the core numbers its events 0, 1, …; this is the next
        live = sum(1 for n in self.world.nodes if n.alive) - 1
        self._events[(self.world.nodes[idx].peer, seq)] = _Event(self.engine.now, live)
        self.metrics.count("user_events_sent")
        self.world.inject(idx, SendUserEvent("sim", bytes(w.payload_bytes)))

    def _start_fetch(self, req: _Req, provs: list[PeerId]) -> None:
        w, net = self.world, self.net
        for p in provs:
            src = w.index.get(p)
            if src is None or not w.nodes[src].alive:
                continue
            if not net.reachable(req.node, src, self.engine.now):
                continue
            dur = net.transfer_time_s(src, req.node, req.fetch_bytes)
            net.start_flow(src, req.node)
            self.engine.at(self.engine.now + dur, self._end_fetch, (src, req))
            return
        self.metrics.count("fetch_no_reachable_provider")

    def _end_fetch(self, arg: tuple[int, _Req]) -> None:
        src, req = arg
        self.net.end_flow(src, req.node)
        total = self.engine.now - req.start
        self.metrics.sample("fetch_s", total)
        if total > 0:
            self.metrics.sample("fetch_goodput_bps", req.fetch_bytes / total)
        self.metrics.count("fetches_done")
