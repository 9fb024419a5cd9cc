"""Push-sum aggregation (Kempe, Dobra, Gehrke, "Gossip-Based Computation of Aggregate
Information", FOCS 2003, §3): colony-wide sums and averages over the tier-2 overlay.

Each node holds a vector of sums `s` and a weight `w`. Every round it keeps half of
(s, w) and sends the other half to one neighbour (in Colony: a random member of its
HyParView active view; Kempe's analysis picks uniformly among all nodes). A received
share is added. Mass is conserved (Σs and Σw never change while no share is lost), so
every node's estimate s/w converges to Σx / Σw₀:

- average: every node starts with w = 1 → s/w → the mean of the x's;
- sum (e.g. the colony's member count with x = 1, or its free CPUs): one node, the
  epoch's *initiator*, starts with w = 1, every other with w = 0 → s/w → Σx; a node
  has no estimate until some weight reached it.

With `pull=True` the receiver of a round's share answers with half of its own mass
(push-pull, as the averaging protocol of Jelasity, Montresor and Babaoglu, TOCS 2005):
each exchange then averages the two nodes, and the variance of the estimates shrinks
by about 1/(2√e) ≈ 0.30 per round (Jelasity et al.) against about 1/2 for push only
(Kempe et al.: the potential at least halves in expectation per round); both
conserve mass. The simulator measures both (sim/aggregation.py).

Values change (free CPUs), so aggregation runs in *epochs* (as Jelasity, Montresor and
Babaoglu, "Gossip-based aggregation in large dynamic networks", TOCS 2005): `Restart`
starts an epoch with fresh values; a share of an older epoch is dropped (counted), a
share of a newer one makes the node restart into it with its current values first.
A node that hears of an epoch before its own `Restart` joins it with its current
values (weight 1 in average mode, 0 in sum mode); its own `Restart` of that epoch then
*rebases* (s += x_new − x_joined, w += weight − join weight), which keeps mass
conserved as if it had started the epoch with the new values (daemons start epochs
by their clocks, so a peer's first share may come first). A `Restart` of an epoch
older than the one a peer's share already moved the node to is ignored (counted
`restart_behind`). A lost share loses mass: the epoch's estimates are off until the
next epoch.

Sans-IO: `handle(inp, now) -> list[Effect]`; the round timer is an effect; the rng
picks the neighbour. Invariants (property-tested): with no share in flight, Σs and
Σw over all nodes equal their initial totals; w ≥ 0.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from overlay.core.effects import Effect, Received, Send, SetTimer, TimerFired
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import finite

ROUND_TIMER = ("pushsum", "round")
MAX_VALUES = 16
TAG = 40


@dataclass(frozen=True, slots=True)
class PushSumShare:
    """Half of a node's (s, w) for `epoch`; `reply`: answer with half of yours
    (push-pull). `[40, epoch, [s…], w, reply]` on the wire."""

    epoch: int
    sums: tuple[float, ...]
    weight: float
    reply: bool = False

    def to_wire(self) -> list[Any]:
        return [TAG, self.epoch, list(self.sums), self.weight, self.reply]

    @classmethod
    def from_wire(cls, obj: Any) -> PushSumShare:
        if not (isinstance(obj, list) and len(obj) == 5 and obj[0] == TAG):
            raise MalformedFrame("push-sum share must be [40, epoch, [s…], w, reply]")
        _, epoch, sums, weight, reply = obj
        if type(reply) is not bool:
            raise MalformedFrame("push-sum reply flag must be a boolean")
        if type(epoch) is not int or not 0 <= epoch < 2**62:
            raise MalformedFrame("push-sum epoch must be an unsigned integer")
        if not isinstance(sums, list) or not 1 <= len(sums) <= MAX_VALUES:
            raise MalformedFrame(f"push-sum sums must hold 1 to {MAX_VALUES} numbers")
        vals = [*sums, weight]
        if not all(type(v) in (int, float) and finite(v) and abs(v) < 1e300 for v in vals):
            raise MalformedFrame("push-sum numbers must be finite")
        if weight < 0:
            raise MalformedFrame("push-sum weight must not be negative")
        return cls(epoch, tuple(float(v) for v in sums), float(weight), reply)


@dataclass(frozen=True, slots=True)
class Restart:
    """Command: start `epoch` with these values and weight (1 for averages; for sums,
    1 at the epoch's initiator and 0 elsewhere)."""

    epoch: int
    values: tuple[float, ...]
    weight: float


@dataclass(frozen=True, slots=True)
class SetNeighbors:
    """Input: the peers a round may send to (the HyParView active view)."""

    peers: tuple[PeerId, ...]


class PushSum:
    """One node's push-sum state; see the module docstring."""

    __slots__ = ("average", "epoch", "interval_s", "neighbors", "own_epoch", "pull", "rng",
                 "started", "stats", "sums", "values", "weight")  # fmt: skip

    def __init__(self, rng: random.Random, *, average: bool = False, pull: bool = False,
                 interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError("push-sum round interval must be positive")
        self.rng = rng
        #: Average mode: every node weighs 1 (also when it joins an epoch it heard of).
        self.average = average
        #: Push-pull: the receiver of a round's share answers with half of its own.
        self.pull = pull
        self.interval_s = interval_s
        self.epoch = -1
        self.values: tuple[float, ...] = ()
        self.sums: list[float] = []
        self.weight = 0.0
        self.neighbors: tuple[PeerId, ...] = ()
        self.started = False
        #: The last epoch this node started itself (a `Restart`), vs joined by hearing.
        self.own_epoch = -1
        self.stats: dict[str, int] = {}

    def estimate(self) -> tuple[float, ...] | None:
        """s / w per value, or None while no weight reached this node."""
        if self.weight <= 0.0:
            return None
        w = self.weight
        return tuple(s / w for s in self.sums)

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        t = type(inp)
        if t is Restart:
            if inp.epoch < self.epoch:
                # A peer's share already moved us to a newer epoch (its clock is ahead,
                # or its share was queued before this command): ours is over.
                self.stats["restart_behind"] = self.stats.get("restart_behind", 0) + 1
                return out
            if inp.epoch == self.epoch and self.own_epoch < inp.epoch:
                self._rebase(inp.values, inp.weight)
            else:
                self._restart(inp.epoch, inp.values, inp.weight)
            self.own_epoch = inp.epoch
            if not self.started:
                self.started = True
                out.append(SetTimer(ROUND_TIMER, now + self.interval_s * self.rng.random()))
        elif t is SetNeighbors:
            self.neighbors = tuple(inp.peers)
        elif t is TimerFired and inp.timer == ROUND_TIMER and self.started:
            self.round(out)
            out.append(SetTimer(ROUND_TIMER, now + self.interval_s))
        elif t is Received and type(inp.msg) is PushSumShare:
            self.receive(inp.peer, inp.msg, out)
        return out

    def _restart(self, epoch: int, values: tuple[float, ...], weight: float) -> None:
        if not 1 <= len(values) <= MAX_VALUES or weight < 0 or not all(map(math.isfinite, values)):
            raise LocalProtocolError("push-sum needs 1-16 finite values and a weight ≥ 0")
        if epoch <= self.epoch:
            raise LocalProtocolError("push-sum epochs must increase")
        # s = x at every node; the weights alone say average (all 1) or sum (one 1).
        self.epoch, self.values = epoch, tuple(values)
        self.sums, self.weight = list(values), weight

    def _rebase(self, values: tuple[float, ...], weight: float) -> None:
        """Our own start of the epoch we joined by hearing: swap the values we joined
        with for `values` and add the weight we did not join with (mass conserved)."""
        if len(values) != len(self.values) or weight < 0 or not all(map(math.isfinite, values)):
            raise LocalProtocolError("push-sum rebase needs as many finite values, weight ≥ 0")
        for i, (new, old) in enumerate(zip(values, self.values, strict=True)):
            self.sums[i] += new - old
        self.weight = max(0.0, self.weight + weight - (1.0 if self.average else 0.0))
        self.values = tuple(values)
        self.stats["rebased"] = self.stats.get("rebased", 0) + 1

    def round(self, out: list[Effect]) -> None:
        """Keep half, send half to one random neighbour (nobody: keep all)."""
        if not self.neighbors or self.epoch < 0:
            self.stats["round_alone"] = self.stats.get("round_alone", 0) + 1
            return
        peer = self.neighbors[self.rng.randrange(len(self.neighbors))]
        half = [s / 2 for s in self.sums]
        self.sums = half
        self.weight /= 2
        out.append(Send(peer, PushSumShare(self.epoch, tuple(half), self.weight, self.pull)))

    def receive(self, peer: PeerId, share: PushSumShare, out: list[Effect]) -> None:
        if not self.values:
            self.stats["not_started"] = self.stats.get("not_started", 0) + 1
            return
        if share.epoch < self.epoch:
            self.stats["stale_epoch"] = self.stats.get("stale_epoch", 0) + 1
            return
        if len(share.sums) != len(self.values) and share.epoch == self.epoch:
            self.stats["bad_width"] = self.stats.get("bad_width", 0) + 1
            return
        if share.epoch > self.epoch:
            # A newer epoch: join it with our current values (sum mode: weight 0,
            # the initiator's weight makes the sums; average mode: weight 1).
            if len(share.sums) != len(self.values):
                self.stats["bad_width"] = self.stats.get("bad_width", 0) + 1
                return
            self._restart(share.epoch, self.values, 1.0 if self.average else 0.0)
            self.stats["joined_epoch"] = self.stats.get("joined_epoch", 0) + 1
        if share.reply and share.epoch == self.epoch:
            # Push-pull: answer with half of our mass before adding theirs, so the
            # pair ends with the average of the two (when no other share interleaves).
            half = [s / 2 for s in self.sums]
            self.sums = half
            self.weight /= 2
            out.append(Send(peer, PushSumShare(self.epoch, tuple(half), self.weight)))
        sums = self.sums
        for i, v in enumerate(share.sums):
            sums[i] += v
        self.weight += share.weight
