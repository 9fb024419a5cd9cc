"""The simulator's driver: carries out every node's effects on the event heap.

This is the simulated counterpart of overlay/runtime/driver.py. Each node slot holds
one real sans-IO core (usually an `overlay.node.Node` composing dht and gossip); the
world feeds it `Received`, `TimerFired` and commands at virtual times and carries out
its effects:

- `Send` → the network model decides loss, reachability (partitions, NAT) and delay,
  and the message is delivered as `Received` at `now + delay` if the node is still up;
- `SetTimer` → a heap entry; only the latest deadline of a timer id fires (replace
  semantics of overlay/core/effects.py), and a crash invalidates all of a node's timers
  (the `epoch` in each entry);
- `Emit` → handed to `on_emit(idx, event)` for metrics;
- `Disconnect` → counted.

Lockstep: `timer_grid` maps timer ids to a round length; such deadlines are rounded
up to the next multiple of it, so every node's rounds line up. The round-based
analyses (SWIM's first-detection time, push-gossip rounds) assume synchronous rounds;
docs/simulation.md reports both lockstep and free-running results.

DHT requests keep the sender's request id on the way (the core serves each request
within one `handle` call, so the id comes back in the response, as the runtime's
per-stream mapping would do).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappush
from typing import Any, Protocol

from overlay.core.effects import (
    CancelTimer,
    Disconnect,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.ids import PeerId
from overlay.node import Node
from sim.engine import Engine, Lane
from sim.network import Network

#: Lanes of named timers at most (more names than this go to the heap as before).
MAX_LANES = 64


class Core(Protocol):
    def handle(self, inp: Any, now: float) -> list[Effect]: ...


class SimNode:
    __slots__ = ("alive", "core", "epoch", "idx", "park", "peer", "timers", "up_since",
                 "uptime_s")

    def __init__(self, idx: int, peer: PeerId, core: Core, now: float) -> None:
        self.idx = idx
        self.peer = peer
        self.core = core
        self.alive = True
        self.epoch = 0
        self.timers: dict[Any, float] = {}
        self.up_since = now
        self.uptime_s = 0.0
        #: A parked idle tick (see `World.park_idle`): [timer, next deadline, interval,
        #: seq of the parking point, whether that deadline is the first after it,
        #: the `quick_tick` to ask and the timer id to ask it with].
        self.park: list[Any] | None = None


class World:
    """Nodes, their timers and message delivery over a `Network`."""

    def __init__(
        self,
        engine: Engine,
        net: Network,
        *,
        timer_grid: dict[Any, float] | None = None,
    ) -> None:
        self.engine = engine
        self.net = net
        self.nodes: list[SimNode] = []
        self.index: dict[PeerId, int] = {}
        #: `index` keyed by the peer id's bytes: every send looks its destination up,
        #: and a bytes key is hashed in C (a `PeerId` through a Python `__hash__`).
        self._index_raw: dict[bytes, int] = {}
        self.timer_grid = timer_grid or {}
        #: Ask cores with a `quick_tick` (overlay/node.py) whether a timer would only
        #: re-arm itself, and skip building the input and effects if so. Same results
        #: either way (tests/sim/test_sim_determinism.py compares); off only to check it.
        self.quick_ticks = True
        #: Take idle ticks off the heap (needs `quick_ticks`): a tick that would only
        #: re-arm itself is parked on its node instead of pushed, and the firings it
        #: skips are counted (`events`, `timers_fired`) when the node next gets an input
        #: and whenever the engine pauses (`settle`). Same output: a node's state only
        #: changes through its inputs, so an idle tick stays idle until the next one.
        #: Off by default: a driver turning it on must let the engine call `settle`
        #: (`enable_parking`). Timers on the lockstep grid are never parked (their
        #: deadlines tie with other timers' by construction).
        self.park_idle = False
        #: Ties at exactly equal times that the parking could not order as the heap
        #: would have (see `_catch_up`); diagnostics only, not in any output.
        self.park_ties = 0
        #: How many times a tick was parked (diagnostics, not in any output).
        self.parks = 0
        self._park_base = -1
        self._park_k = 0
        # The heap callbacks, bound once: a bound method is built on every attribute
        # read, and every message and timer pushes one (subclasses' overrides included).
        self._fire_cb = self._fire
        self._deliver_cb = self._deliver
        #: Timer id → the engine lane its entries wait in (see `_arm`).
        self._lanes: dict[Any, Lane] = {}
        #: (receiver, message) → True if the receiver refuses the stream at once.
        self.refuse: Callable[[int, Any], bool] | None = None
        self.on_emit: Callable[[int, Any], None] | None = None
        #: Per node slot: messages sent and received.
        self.sent: list[int] = []
        self.received: list[int] = []
        #: Messages by type name (sent), for the load breakdown.
        self.by_type: dict[str, int] = {}
        self.stats: dict[str, int] = {
            "sent": 0,
            "delivered": 0,
            "to_dead": 0,
            "unknown_peer": 0,
            "unreachable": 0,
            "disconnects": 0,
            "timers_fired": 0,
        }

    # ------------------------------------------------------------ population

    def add(self, peer: PeerId, core: Core, *, region: str | None = None,
            nat: bool | None = None) -> int:
        idx = self.net.place(region, nat=nat)
        assert idx == len(self.nodes)
        self.nodes.append(SimNode(idx, peer, core, self.engine.now))
        self.index[peer] = idx
        self._index_raw[peer.raw] = idx
        self.sent.append(0)
        self.received.append(0)
        return idx

    def enable_parking(self) -> None:
        """Park idle ticks (`park_idle`) and settle them whenever the engine pauses."""
        self.park_idle = True
        self.engine.on_pause = self.settle

    def crash(self, idx: int) -> None:
        """Stop a node at once: no more inputs, its pending timers are void."""
        n = self.nodes[idx]
        if not n.alive:
            return
        if n.park is not None:
            # The pending tick stays on the heap as a void entry, as without parking
            # (it still counts as an event when popped).
            self._catch_up(n)
            self._unpark(n)
        n.alive = False
        n.epoch += 1
        n.timers = {}
        n.uptime_s += self.engine.now - n.up_since

    def restart(self, idx: int, core: Core) -> None:
        """Bring a slot back with a fresh core (state lost, as after a process exit)."""
        n = self.nodes[idx]
        if n.park is not None:
            self._catch_up(n)
            self._unpark(n)
        n.core = core
        n.alive = True
        n.epoch += 1
        n.timers = {}
        n.up_since = self.engine.now

    def uptime_s(self, idx: int) -> float:
        n = self.nodes[idx]
        return n.uptime_s + (self.engine.now - n.up_since if n.alive else 0.0)

    def inject(self, idx: int, inp: Any) -> None:
        """Hand a command to a live node now and carry out its effects."""
        n = self.nodes[idx]
        if n.alive:
            if n.park is not None:
                self._catch_up(n)
            self.apply(n, n.core.handle(inp, self.engine.now))
            if n.park is not None:
                self._recheck(n)

    # ------------------------------------------------------------ effects

    def apply(self, n: SimNode, effects: list[Effect]) -> None:
        # The hot loop of every simulation: exact type tests, most frequent first.
        for eff in effects:
            t = type(eff)
            if t is SetTimer:
                if n.park is not None and n.park[0] == eff.timer:  # type: ignore[union-attr]
                    self._unpark(n)  # the parked entry becomes void, as on the heap
                self._arm(n, eff.timer, eff.at)  # type: ignore[union-attr]
            elif t is Send:
                self._send(n, eff.peer, eff.msg)  # type: ignore[union-attr]
            elif t is CancelTimer:
                if n.park is not None and n.park[0] == eff.timer:  # type: ignore[union-attr]
                    self._unpark(n)
                n.timers.pop(eff.timer, None)  # type: ignore[union-attr]
            elif t is Emit:
                if self.on_emit is not None:
                    self.on_emit(n.idx, eff.event)  # type: ignore[union-attr]
            elif t is Disconnect:
                self.stats["disconnects"] += 1

    def _handle_part(self, n: SimNode, core: Node, name: str, inp: Any, now: float) -> None:
        """Hand `inp` to part `name` of `n`'s `Node` as `Node.handle` would route it,
        and carry out its effects as `apply` would carry out `Node.handle`'s: the
        part's timers keyed `(name, timer)`, as the node names them, but without a new
        `SetTimer`/`CancelTimer` per effect and the node's second pass over them.
        Effects other than sends and timers (events and their wiring) go through
        `Node.wrap`, before any effect is carried out, as in `Node.handle`."""
        effects = core.parts[name].handle(inp, now)
        for eff in effects:
            t = type(eff)
            if t is not Send and t is not SetTimer and t is not CancelTimer:
                out: list[Effect] = []
                core.wrap(name, effects, now, out)
                self.apply(n, out)
                return
        for eff in effects:
            if type(eff) is Send:
                self._send(n, eff.peer, eff.msg)
                continue
            key = (name, eff.timer)  # type: ignore[union-attr]
            if n.park is not None and n.park[0] == key:
                self._unpark(n)  # the parked entry becomes void, as on the heap
            if type(eff) is SetTimer:
                self._arm(n, key, eff.at)
            else:
                n.timers.pop(key, None)

    def _arm(self, n: SimNode, timer: Any, at: float) -> None:
        if self.timer_grid:
            g = self.timer_grid.get(timer)
            if g is not None:
                # Round up to the grid; the 1e-9 keeps exact multiples in place.
                at = math.ceil(at / g - 1e-9) * g
        n.timers[timer] = at
        engine = self.engine
        lane = self._lanes.get(timer)
        if lane is None and len(self._lanes) < MAX_LANES and (
            type(timer) is str
            or (type(timer) is tuple and len(timer) == 2 and type(timer[1]) is str)
        ):
            # A named timer (`"probe"`, `("gossip", "probe")`: a fixed set of names,
            # unlike `("relay", seq)`), armed at `now + interval` by every node: its
            # deadlines come in time order, so they wait in a lane (sim/engine.py).
            lane = self._lanes[timer] = engine.lane()
        if lane is not None:
            engine.push_lane(lane, at, self._fire_cb, (n, n.epoch, timer, at))
            return
        # `Engine.at` inlined (one call less per timer): same clamp, same sequence.
        engine._seq += 1
        heappush(engine._heap,
                 (at if at >= engine.now else engine.now, engine._seq, self._fire_cb,
                  (n, n.epoch, timer, at)))

    def _send(self, n: SimNode, dst: PeerId, msg: Any) -> None:
        stats = self.stats
        stats["sent"] += 1
        src = n.idx
        self.sent[src] += 1
        name = type(msg).__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1
        d = self._index_raw.get(dst.raw)
        if d is None:
            stats["unknown_peer"] += 1
            return
        net = self.net
        now = self.engine.now
        nat = net.nat
        # `reachable` is True and records nothing without partitions and NAT: no call.
        if not self.nodes[d].alive or (
            (net.cuts or nat[src] or nat[d]) and not net.reachable(src, d, now)
        ):
            stats["unreachable"] += 1
            after = net.cfg.unreachable_after_s
            if after > 0:
                self.engine.at(now + after, self._unreachable, (n, n.epoch, dst))
            return
        delay = net.delay(src, d)
        if delay is None:
            return
        # `Engine.at` inlined, as in `_arm`: same clamp, same sequence.
        at = now + delay
        engine = self.engine
        engine._seq += 1
        heappush(engine._heap, (at if at >= now else now, engine._seq, self._deliver_cb,
                                (n.peer, d, msg)))

    def _deliver(self, arg: tuple[PeerId, int, Any]) -> None:
        src, d, msg = arg
        n = self.nodes[d]
        if not n.alive:
            self.stats["to_dead"] += 1
            return
        if self.refuse is not None and self.refuse(d, msg):
            self._refused(src, d)
            return
        self.stats["delivered"] += 1
        self.received[d] += 1
        now = self.engine.now
        p = n.park
        if p is not None and p[1] <= now:  # a parked deadline passed: count it
            self._catch_up(n)
        core = n.core
        name = core.part_for_message(msg) if type(core) is Node else None
        if name is not None:
            self._handle_part(n, core, name, Received(src, msg), now)  # type: ignore[arg-type]
        else:
            self.apply(n, core.handle(Received(src, msg), now))
        if n.park is not None:
            self._recheck(n)

    def _refused(self, src: PeerId, d: int) -> None:
        """The receiver refused the stream (no handler for the protocol, as a DHT client
        in the daemon): the sender learns it one way later as `PeerUnreachable`."""
        self.stats["refused"] = self.stats.get("refused", 0) + 1
        s = self.index.get(src)
        if s is None:
            return
        sender = self.nodes[s]
        back = self.engine.now + self.net.base_delay_s(d, s)
        self.engine.at(back, self._unreachable, (sender, sender.epoch, self.nodes[d].peer))

    def _unreachable(self, arg: tuple[SimNode, int, PeerId]) -> None:
        n, epoch, peer = arg
        if n.alive and n.epoch == epoch:
            if n.park is not None:
                self._catch_up(n)
            self.apply(n, n.core.handle(PeerUnreachable(peer), self.engine.now))
            if n.park is not None:
                self._recheck(n)

    def _fire(self, arg: tuple[SimNode, int, Any, float]) -> None:
        n, epoch, timer, at = arg
        timers = n.timers
        if n.epoch != epoch or not n.alive or timers.get(timer) != at:
            return  # cancelled, replaced, or the node crashed since
        del timers[timer]
        self.stats["timers_fired"] += 1
        core = n.core
        now = self.engine.now
        p = n.park
        parked = p is not None
        if p is not None and p[1] <= now:  # else nothing to count
            self._catch_up(n)
        quick = None
        if self.quick_ticks:
            # A core that names the timers its `quick_tick` may answer for (a `Node`:
            # the gossip tick) is not asked about the others (it would say None).
            only = getattr(core, "quick_timers", None)
            if only is None or timer in only:
                quick = getattr(core, "quick_tick", None)
        if quick is not None:
            # A tick that would only re-arm itself (the idle gossip tick): re-arm it
            # here, exactly as `apply` would carry out its one SetTimer.
            again = quick(timer, now)
            if again is not None:
                if self.park_idle and not parked and timer not in self.timer_grid:
                    # Park it instead: no heap entry until the node gets an input.
                    # `quick(timer, 0.0)` is the interval (`quick_tick`'s contract:
                    # the deadline is `now + interval` while idle), so `d + interval`
                    # gives the very floats the heap would have held.
                    owner = getattr(core, "quick_owner", None)
                    ask = owner(timer) if owner is not None else None
                    if ask is None:
                        ask = (quick, timer)
                    n.park = [timer, again, quick(timer, 0.0), self._park_seq(), True,
                              ask[0], ask[1]]
                    self.parks += 1
                    return
                self._arm(n, timer, again)
                if parked:
                    self._recheck(n)
                return
        if (type(core) is Node and type(timer) is tuple and len(timer) == 2
                and timer[0] in core.parts):
            # As `Node.handle` routes a timer, without its re-wrapping.
            self._handle_part(n, core, timer[0], TimerFired(timer[1]), now)
        else:
            self.apply(n, core.handle(TimerFired(timer), now))
        if n.park is not None:
            self._recheck(n)

    # ------------------------------------------------------------ parked ticks

    def _park_seq(self) -> float:
        """Where the skipped re-arm would have gone in push order: after seq `_seq`,
        before `_seq + 1` (the next entry actually pushed). Several ticks parked with
        no push between them get increasing fractions, in the order they parked
        (their pushes' order). `_seq` stays below 2^32, so 2^-20 steps stay exact."""
        base = self.engine._seq
        if base != self._park_base:
            self._park_base, self._park_k = base, 0
        self._park_k += 1
        return base + self._park_k * 2.0 ** -20

    def _catch_up(self, n: SimNode) -> None:
        """Before an input to `n` (or a crash) at `now`: count the parked ticks that
        would have fired before it (idle, as the node's state has not changed since
        it parked), so its next deadline is the first at or after the input. Callers
        may skip it while that deadline is after `now` (then there is nothing to do).

        Ties (a parked deadline exactly at `now`): the heap orders equal times by push
        order. The first deadline after the parking point was pushed right then (seq
        `park[3]`, see `_park_seq`), so the running event (`engine.seq_now`) went first
        iff it was pushed earlier; that one is exact. A later deadline was pushed by a skipped
        firing whose seq was never drawn: such a tie (an exact float coincidence of
        two independent times; timers on the lockstep grid are never parked) is
        counted in `park_ties` and ordered tick first."""
        p = n.park
        assert p is not None
        now = self.engine.now
        d, g = p[1], p[2]
        count = 0
        while d < now:
            count += 1
            d += g
        first = p[4] and count == 0
        if d == now:
            if first:
                tick_first = self.engine.seq_now > p[3]
            else:
                self.park_ties += 1
                tick_first = True
            if tick_first:
                count += 1
                d += g
                first = False
        if count:
            p[1], p[4] = d, first
            self.engine.events_run += count
            self.stats["timers_fired"] += count

    def _recheck(self, n: SimNode) -> None:
        """After an input to `n`: keep its tick parked while it is still idle, else put
        its pending deadline on the heap (to be run by the core as usual)."""
        p = n.park
        assert p is not None
        # p[5](p[6], ·): the owning part's `quick_tick` (one call instead of two).
        if not n.alive or p[5](p[6], p[1]) is None:
            self._unpark(n)

    def _unpark(self, n: SimNode) -> None:
        """Put the parked tick's pending deadline on the heap as the entry the heap
        would hold. The first deadline after the parking point goes exactly where it
        would have been (seq `park[3]`, between the two ints around it); a later
        one goes after the entries already pushed (the same order unless another
        entry has exactly that time: the coincidence `_catch_up` describes)."""
        p = n.park
        assert p is not None
        n.park = None
        timer, d = p[0], p[1]
        n.timers[timer] = d
        engine = self.engine
        when = d if d >= engine.now else engine.now
        # Two pushes rather than one `seq: float` variable: compiled (mypyc), an int
        # stored in a float variable becomes a float; this keeps the int seq as it is.
        if p[4]:
            heappush(engine._heap, (when, p[3], self._fire_cb, (n, n.epoch, timer, d)))
        else:
            engine._seq += 1
            heappush(engine._heap, (when, engine._seq, self._fire_cb, (n, n.epoch, timer, d)))

    def settle(self, done: bool = True) -> None:
        """Count the parked ticks due by now (`Engine.on_pause`): after `run_until`
        every event at or before `until` ran (`done`), so deadlines equal to `now`
        count too; after a `max_events` stop only earlier ones."""
        now = self.engine.now
        total = 0
        for n in self.nodes:
            p = n.park
            if p is None:
                continue
            d, g = p[1], p[2]
            count = 0
            while d < now or (done and d == now):
                count += 1
                d += g
            if count:
                p[1], p[4] = d, False
                total += count
        self.engine.events_run += total
        self.stats["timers_fired"] += total

    # ------------------------------------------------------------ queries

    def live(self) -> list[int]:
        return [n.idx for n in self.nodes if n.alive]

    def is_alive(self, peer: PeerId) -> bool:
        i = self.index.get(peer)
        return i is not None and self.nodes[i].alive
