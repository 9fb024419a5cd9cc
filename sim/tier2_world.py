"""The simulator's driver for tier-2 overlay cores, with connections modelled.

HyParView detects failures by its connections (DSN 2007 §4.3), so this driver models
them, as iroh-gossip's simulator does (`src/proto/sim.rs`, `kill_connection`), on top of
the same event heap (`sim/engine.py`) and network model (`sim/network.py`) the other
scenarios use:

- a node keeps a connection open to each peer it reported with `Emit(NeighborUp)`
  until `Emit(NeighborDown)` (as the runtime will: it pins active neighbours);
- when a node crashes, every peer holding a connection with it gets
  `Disconnected(crashed)` after the one-way delay plus `close_detect_s` (an RST, or
  a keep-alive that timed out);
- a `Send` to a node that is down or unreachable, with no connection to it, is a
  failed dial: `PeerUnreachable(dst)` after `dial_timeout_s`. A send over a connection
  to a node that just crashed is lost; the close notice is already on its way;
- messages between two nodes arrive in the order they were sent (one stream per peer,
  as the runtime keeps): the network model's per-message jitter would otherwise let a
  DISCONNECT overtake the NEIGHBOR sent just before it;
- `Disconnect` effects are counted (the cores also send DISCONNECT in-band);
- with `wire=True` every message is encoded to canonical CBOR and decoded again
  (`to_wire`, `cbor_encode`, `decode_topic_message`): slower, and proof that what the
  cores send is what the wire carries.

Per node slot: the core, a liveness flag, a timer map and two small connection maps
(bounded by the active view), so the driver adds no per-node state that grows with N.
Payload (`Gossip`) deliveries are reported to `on_gossip` for RMR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gossip.hyparview import NeighborDown, NeighborUp
from gossip.topic_messages import Gossip, decode_topic_message
from overlay.core.effects import (
    Disconnect,
    Disconnected,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode
from sim.engine import Engine
from sim.network import Network


class Core(Protocol):
    def handle(self, inp: Any, now: float) -> list[Effect]: ...


class LinkWorld:
    """Nodes, timers, connections and delivery for tier-2 cores."""

    def __init__(self, engine: Engine, net: Network, *, dial_timeout_s: float = 2.0,
                 close_detect_s: float = 0.0, wire: bool = False) -> None:
        self.engine = engine
        self.net = net
        self.dial_timeout_s = dial_timeout_s
        self.close_detect_s = close_detect_s
        self.wire = wire
        self.cores: list[Core] = []
        self.peers: list[PeerId] = []
        self.alive: list[bool] = []
        self.epoch: list[int] = []
        self.timers: list[dict[Any, float]] = []
        #: links[i]: peers i pinned (NeighborUp); linked_by[i]: peers that pinned i.
        self.links: list[dict[int, None]] = []
        self.linked_by: list[dict[int, None]] = []
        #: last_at[i][j]: arrival time of the latest message i → j (FIFO per link).
        self.last_at: list[dict[int, float]] = []
        self.index: dict[PeerId, int] = {}
        self.on_emit: Callable[[int, Any], None] | None = None
        self.on_gossip: Callable[[int, Gossip], None] | None = None
        self.by_type: dict[str, int] = {}
        self.stats: dict[str, int] = {"sent": 0, "delivered": 0, "lost": 0, "to_dead": 0,
                                      "dial_failed": 0, "closed": 0, "disconnects": 0,
                                      "timers_fired": 0}

    # ------------------------------------------------------------ population

    def add(self, peer: PeerId, core: Core) -> int:
        idx = self.net.place(None)
        assert idx == len(self.cores)
        self.cores.append(core)
        self.peers.append(peer)
        self.alive.append(True)
        self.epoch.append(0)
        self.timers.append({})
        self.links.append({})
        self.linked_by.append({})
        self.last_at.append({})
        self.index[peer] = idx
        return idx

    def inject(self, idx: int, inp: Any) -> None:
        if self.alive[idx]:
            self.apply(idx, self.cores[idx].handle(inp, self.engine.now))

    def crash(self, idx: int) -> None:
        """Stop a node; its connections close and their other ends notice."""
        if not self.alive[idx]:
            return
        self.alive[idx] = False
        self.epoch[idx] += 1
        self.timers[idx] = {}
        for other in {**self.links[idx], **self.linked_by[idx]}:
            self._close_notice(other, idx)
            self.links[other].pop(idx, None)
            self.linked_by[other].pop(idx, None)
        self.links[idx] = {}
        self.linked_by[idx] = {}
        self.last_at[idx] = {}

    def _close_notice(self, to: int, gone: int) -> None:
        if not self.alive[to]:
            return
        self.stats["closed"] += 1
        at = self.engine.now + self.net.base_delay_s(gone, to) + self.close_detect_s
        self.engine.at(at, self._notify, (to, self.epoch[to], Disconnected(self.peers[gone])))

    # ------------------------------------------------------------ effects

    def apply(self, idx: int, effects: list[Effect]) -> None:
        for eff in effects:
            t = type(eff)
            if t is Send:
                self._send(idx, eff.peer, eff.msg)  # type: ignore[union-attr]
            elif t is SetTimer:
                at = eff.at  # type: ignore[union-attr]
                self.timers[idx][eff.timer] = at  # type: ignore[union-attr]
                self.engine.at(at, self._fire, (idx, self.epoch[idx], eff.timer, at))  # type: ignore[union-attr]
            elif t is Emit:
                self._emit(idx, eff.event)  # type: ignore[union-attr]
            elif t is Disconnect:
                self.stats["disconnects"] += 1
            else:  # CancelTimer
                self.timers[idx].pop(eff.timer, None)  # type: ignore[union-attr]

    def _emit(self, idx: int, ev: Any) -> None:
        t = type(ev)
        if t is NeighborUp or t is NeighborDown:
            other = self.index.get(ev.peer)
            if other is not None:
                if t is NeighborUp and not self.alive[other]:
                    # Its acceptance was in flight when it crashed: the connection
                    # the node now relies on is already closed.
                    self._close_notice(idx, other)
                elif t is NeighborUp:
                    self.links[idx][other] = None
                    self.linked_by[other][idx] = None
                elif t is NeighborDown:
                    self.links[idx].pop(other, None)
                    self.linked_by[other].pop(idx, None)
        if self.on_emit is not None:
            self.on_emit(idx, ev)

    def _send(self, src: int, dst_peer: PeerId, msg: Any) -> None:
        stats = self.stats
        stats["sent"] += 1
        name = type(msg).__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1
        dst = self.index.get(dst_peer)
        now = self.engine.now
        if dst is None or not self.alive[dst] or not self.net.reachable(src, dst, now):
            if dst is not None and (dst in self.links[src] or dst in self.linked_by[src]):
                stats["to_dead"] += 1  # the close notice is on its way
                return
            stats["dial_failed"] += 1
            self.engine.at(now + self.dial_timeout_s, self._notify,
                           (src, self.epoch[src], PeerUnreachable(dst_peer)))
            return
        delay = self.net.delay(src, dst)
        if delay is None:
            stats["lost"] += 1
            return
        if self.wire:
            msg = decode_topic_message(cbor_decode(cbor_encode(msg.to_wire())))
        at = now + delay
        last = self.last_at[src]
        prev = last.get(dst)
        if prev is not None and at <= prev:
            at = prev + 1e-6
        if len(last) >= 64:
            # Only arrivals still in the future can be overtaken: bounded map.
            for k in [k for k, v in last.items() if v < now]:
                del last[k]
        last[dst] = at
        self.engine.at(at, self._deliver, (src, dst, msg))

    def _deliver(self, arg: tuple[int, int, Any]) -> None:
        src, dst, msg = arg
        if not self.alive[dst]:
            self.stats["to_dead"] += 1
            return
        self.stats["delivered"] += 1
        if type(msg) is Gossip and self.on_gossip is not None:
            self.on_gossip(dst, msg)
        self.apply(dst, self.cores[dst].handle(Received(self.peers[src], msg), self.engine.now))

    def _notify(self, arg: tuple[int, int, Any]) -> None:
        idx, epoch, inp = arg
        if self.alive[idx] and self.epoch[idx] == epoch:
            self.apply(idx, self.cores[idx].handle(inp, self.engine.now))

    def _fire(self, arg: tuple[int, int, Any, float]) -> None:
        idx, epoch, timer, at = arg
        if not self.alive[idx] or self.epoch[idx] != epoch or self.timers[idx].get(timer) != at:
            return
        del self.timers[idx][timer]
        self.stats["timers_fired"] += 1
        self.apply(idx, self.cores[idx].handle(TimerFired(timer), self.engine.now))

    # ------------------------------------------------------------ queries

    def live(self) -> list[int]:
        return [i for i, a in enumerate(self.alive) if a]
