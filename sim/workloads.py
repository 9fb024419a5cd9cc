"""Workloads of a simulation run: user events, DHT lookups, provides, provider
queries and bulk fetches, drawn from the scenario's `Workload` list, and the
outcomes of the requests they start.

`Workloads` is a collaborator of `sim.runner.Simulation` with a narrow interface:
it gets the scheduler, world, network, metrics and its rng stream, plus four
callables of the run (pick a live node, take a node down, the next request id, a
node's core part). It owns what only workloads use: requests in flight, user
events sent, published CIDs. A subclass of the runner adds a workload kind with
`register(kind, fn)` (sim/capsules.py does, for "capsule").

Invariant: every draw comes from the `rng` it is given, in the order the runner
always made them, so the output is byte-identical (tests/sim/test_sim_golden.py).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from overlay.core.ids import PeerId
from sim.engine import Engine
from sim.metrics import Metrics
from sim.network import Network
from sim.scenario import Workload
from sim.world import World

#: Lookups checked against the true closest live node (O(N) each).
MAX_CLOSEST_CHECKS = 500


@dataclass(slots=True)
class SentEvent:
    """A user event a workload sent, and when each live node received it."""

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


class Workloads:
    """Schedules the scenario's workloads and records the outcomes of their requests."""

    def __init__(
        self,
        *,
        duration_s: float,
        engine: Engine,
        net: Network,
        world: World,
        metrics: Metrics,
        rng: random.Random,
        pick_live: Callable[[], int | None],
        take_down: Callable[[int, bool], None],
        rids: Iterator[int],
        part: Callable[[int, str], Any],
    ) -> None:
        """`pick_live()` draws a live node not leaving (None when there is none);
        `take_down(idx, graceful)` crashes or removes a node for good; `rids` numbers
        requests (shared with the runner's bootstraps); `part(idx, name)` is a
        node's core part ("gossip")."""
        self.duration_s = duration_s
        self.engine = engine
        self.net = net
        self.world = world
        self.metrics = metrics
        self.rng = rng
        self._pick_live = pick_live
        self._take_down = take_down
        self._rids = rids
        self._part = part
        self._custom: dict[str, Callable[[Workload], None]] = {}
        #: (sender, seq) → the user event sent; read by the runner's summary.
        self.events: dict[tuple[PeerId, int], SentEvent] = {}
        self._reqs: dict[int, _Req] = {}
        self._cids: list[tuple[bytes, int]] = []
        self._closest_checks = 0

    def register(self, kind: str, do: Callable[[Workload], None]) -> None:
        """Run `do(w)` for every draw of workload kind `kind` (it picks its own node)."""
        self._custom[kind] = do

    # ------------------------------------------------------------ scheduling

    def schedule(self, w: Workload) -> None:
        if w.rate_per_s > 0:
            end = min(w.end_s, self.duration_s)
            t = max(w.start_s, 0.0) + self.rng.expovariate(w.rate_per_s)
            if t < end:
                self.engine.at(t, self._tick, (w, end))
        else:
            self.engine.at(w.at_s, self._one_shot, w)

    def _tick(self, arg: tuple[Workload, float]) -> None:
        w, end = arg
        self.do(w)
        t = self.engine.now + self.rng.expovariate(w.rate_per_s)
        if t < end:
            self.engine.at(t, self._tick, arg)

    def _one_shot(self, w: Workload) -> None:
        for _ in range(w.count):
            self.do(w)

    def do(self, w: Workload) -> None:
        """One draw of workload `w`, at a random live node."""
        custom = self._custom.get(w.kind)
        if custom is not None:
            custom(w)
            return
        idx = self._pick_live()
        if idx is None:
            self.metrics.count("workload_no_live_node")
            return
        m = self.metrics
        kind = w.kind
        if kind == "kill":
            m.count("kills")
            self._take_down(idx, False)
        elif kind == "leave":
            m.count("leaves")
            self._take_down(idx, True)
        elif kind == "user_event":
            self.send_event(idx, w)
        elif kind == "lookup":
            from dht.api import FindNode

            key = self.rng.randbytes(32)
            rid = next(self._rids)
            check = self._closest_checks < MAX_CLOSEST_CHECKS
            self._closest_checks += check
            self._reqs[rid] = _Req("find_node", self.engine.now, idx, key, check)
            m.count("lookups_started")
            self.world.inject(idx, FindNode(rid, key))
        elif kind == "provide":
            from dht.api import Provide

            digest = hashlib.sha256(self.rng.randbytes(32)).digest()
            mh = b"\x12\x20" + digest
            self._cids.append((mh, idx))
            rid = next(self._rids)
            self._reqs[rid] = _Req("provide", self.engine.now, idx, mh)
            m.count("provides_started")
            self.world.inject(idx, Provide(rid, (mh,)))
        elif kind in ("get_providers", "fetch"):
            from dht.api import GetProviders

            if not self._cids:
                m.count("get_providers_nothing_published")
                return
            mh, _ = self._cids[self.rng.randrange(len(self._cids))]
            rid = next(self._rids)
            self._reqs[rid] = _Req(kind, self.engine.now, idx, mh, fetch_bytes=w.size_bytes)
            m.count(f"{kind}_started")
            self.world.inject(idx, GetProviders(rid, mh))

    def send_event(self, idx: int, w: Workload) -> None:
        """Node `idx` broadcasts a user event of `w.payload_bytes` (if it is a member)."""
        from gossip.events import SendUserEvent

        swim = self._part(idx, "gossip")
        if not swim.started or swim.leaving:
            return
        seq = swim.user_events.next_seq  # the core numbers its events 0, 1, …; this is the next
        live = sum(1 for n in self.world.nodes if n.alive) - 1
        self.events[(self.world.nodes[idx].peer, seq)] = SentEvent(self.engine.now, live)
        self.metrics.count("user_events_sent")
        self.world.inject(idx, SendUserEvent("sim", bytes(w.payload_bytes)))

    # ------------------------------------------------------------ outcomes (core events)

    def on_user_event(self, idx: int, ev: Any) -> None:
        rec = self.events.get((ev.sender, ev.seq))
        if rec is not None:
            rec.delays.append(self.engine.now - rec.sent_at)

    def on_lookup_done(self, idx: int, ev: Any) -> None:
        req = self._reqs.pop(ev.request_id, None)
        if req is None:
            return
        m = self.metrics
        lat = self.engine.now - req.start
        ok = ev.error is None
        m.count(f"{req.kind}_{'ok' if ok else 'failed'}")
        if not ok:
            m.row("lookups", t=self.engine.now, kind=req.kind, hops=ev.hops,
                  latency_s=lat, queried=ev.queried, ok=0, found=0)
            return
        m.sample("lookup_hops", ev.hops)
        m.sample("lookup_latency_s", lat)
        m.sample("lookup_queried", ev.queried)
        found = 1
        if req.kind == "find_node" and req.check_closest:
            found = int(self._true_closest(req.key, req.node) in ev.result.peers)
            m.sample("lookup_found_closest", found)
        elif req.kind in ("get_providers", "fetch"):
            provs = [p.peer for p in ev.result.providers]
            found = int(bool(provs))
            m.sample("providers_found", found)
            if req.kind == "fetch":
                self._start_fetch(req, provs)
        m.row("lookups", t=self.engine.now, kind=req.kind, hops=ev.hops, latency_s=lat,
              queried=ev.queried, ok=1, found=found)

    def on_provide_done(self, idx: int, ev: Any) -> None:
        req = self._reqs.pop(ev.request_id, None)
        if req is not None:
            self.metrics.sample("provide_latency_s", self.engine.now - req.start)
            self.metrics.count("provides_done")

    def _true_closest(self, key: bytes, asker: int) -> PeerId | None:
        """The live DHT server closest to `key` other than the asker (a lookup never
        returns its own node): what a perfect lookup would return."""
        from overlay.core.ids import key_of_bytes

        target = key_of_bytes(key)
        best: PeerId | None = None
        best_d = -1
        for n in self.world.nodes:
            # DHT clients (mode "auto" behind a NAT) are in no table: not a right answer.
            if n.alive and n.idx != asker and self._part(n.idx, "dht").serving:
                dist = n.peer.key ^ target
                if best is None or dist < best_d:
                    best, best_d = n.peer, dist
        return best

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
