"""AutoNAT in the simulator: the real reachability core, dial-backs on the network model.

The daemon learns whether others can dial it from `/colony/dialback` answers
(overlay/runtime/edge/dialback.py driving overlay/p2p/reachability.py) and tells its DHT
core (`ReachabilityLearned`), which in mode "auto" stops serving behind a NAT. This
module gives simulated nodes the same loop, with the same `ReachabilityCore`:

- candidates are the peers in the node's DHT routing table (the daemon uses its
  connected peers; in the simulator those are the peers it has talked to);
- `AskDialback(peer)` becomes an answer one round trip later: `ok` if the peer is up
  and a *fresh* connection from it to the asker gets through (`Network.fresh_dial_ok`:
  not across a partition, not into a NAT; mappings do not help a dial-back);
  a peer that is down gives `DialbackFailed` (no evidence, as in the daemon);
- `StatusChanged` to public or nat is injected into the node as `ReachabilityLearned`.

STUN is not modelled (`ProbeStun` is ignored). Each node's core has its own rng, drawn
from the stream the runner hands in, so one seed gives one run. A crash ends the loop
(the world's epoch changes); a rejoin starts a fresh core, like a restarted daemon.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from dht.api import ReachabilityLearned
from overlay.core.effects import TimerFired
from overlay.core.ids import PeerId
from overlay.p2p.reachability import (
    TIMER,
    AskDialback,
    CandidatesChanged,
    DialbackAnswered,
    DialbackFailed,
    Effect,
    ReachabilityConfig,
    ReachabilityCore,
    Status,
    StatusChanged,
)
from sim.engine import Engine
from sim.metrics import Metrics
from sim.network import Network
from sim.world import World

#: A node's candidates to ask (peers it has talked to), in a stable order.
Candidates = Callable[[int], list[PeerId]]


class SimAutoNat:
    """One `ReachabilityCore` per node that runs DHT mode "auto"."""

    def __init__(self, engine: Engine, world: World, net: Network, metrics: Metrics,
                 rng: random.Random, candidates: Candidates,
                 config: ReachabilityConfig | None = None) -> None:
        self.engine = engine
        self.world = world
        self.net = net
        self.metrics = metrics
        self.rng = rng
        self.candidates = candidates
        self.config = config or ReachabilityConfig()
        #: node → (its core, the world epoch it belongs to).
        self.cores: dict[int, tuple[ReachabilityCore, int]] = {}

    def start(self, idx: int) -> None:
        """`idx` (re)joined: a fresh core, first round after `first_check_s`."""
        now = self.engine.now
        core = ReachabilityCore(self.config, random.Random(self.rng.getrandbits(64)), now)
        epoch = self.world.nodes[idx].epoch
        self.cores[idx] = (core, epoch)
        self.engine.at(core.next_deadline(), self._tick, (idx, epoch))

    def _current(self, idx: int, epoch: int) -> ReachabilityCore | None:
        entry = self.cores.get(idx)
        node = self.world.nodes[idx]
        if entry is None or entry[1] != epoch or not node.alive or node.epoch != epoch:
            return None
        return entry[0]

    def _tick(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        core = self._current(idx, epoch)
        if core is None:
            return
        now = self.engine.now
        core.handle(CandidatesChanged(tuple(self.candidates(idx))), now)
        self._apply(idx, epoch, core.handle(TimerFired(TIMER), now))
        self.engine.at(max(now, core.next_deadline()), self._tick, (idx, epoch))

    def _apply(self, idx: int, epoch: int, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, AskDialback):
                j = self.world.index.get(e.peer)
                if j is None:
                    continue
                rtt = 2 * self.net.base_delay_s(idx, j)
                self.engine.at(self.engine.now + rtt, self._answer, (idx, epoch, j, rtt))
            elif isinstance(e, StatusChanged) and e.status is not Status.UNKNOWN:
                public = e.status is Status.PUBLIC
                self.metrics.count("reachability_public" if public else "reachability_nat")
                self.world.inject(idx, ReachabilityLearned(public))

    def _answer(self, arg: tuple[int, int, int, float]) -> None:
        idx, epoch, j, rtt = arg
        core = self._current(idx, epoch)
        if core is None:
            return
        peer = self.world.nodes[j].peer
        if not self.world.nodes[j].alive:
            inp: DialbackAnswered | DialbackFailed = DialbackFailed(peer)
        else:
            inp = DialbackAnswered(peer, self.net.fresh_dial_ok(j, idx), rtt_s=rtt)
        self._apply(idx, epoch, core.handle(inp, self.engine.now))
