"""Colony-wide totals by push-sum: members, CPUs, GPUs, memory and disk, for `colony stats`.

DESIGN §6 (what crosses cells: aggregates, never per-node claims); the core is
`gossip.pushsum.PushSum` (Kempe, Dobra and Gehrke, FOCS 2003), run in a `Driver` of its
own on `/colony/aggregate/1.0.0` (one CBOR share per message). Every round (`round_s`)
a node keeps half of its (sums, weight) and sends the other half to a random live
member; the receiver answers with half of its own (push-pull: the variance of the
estimates shrinks by ~0.3 per round). In sum mode every node's s/w converges to the
colony's totals of the values each node put in (`VALUES`, from its own resource ad; 1
for `members`).

Epochs: values change, so aggregation restarts every `epoch_s` seconds of wall clock
(epoch = ⌊time / epoch_s⌋). A node whose clock is behind hears the new epoch from a
peer's share first and joins it; its own start then rebases (pushsum.py), so skewed
clocks lose no mass. The epoch's *initiator* — the only node that starts with weight 1
— is the live member whose sha256(epoch ‖ peer id) is smallest; every node decides
from its own view, so with converged membership exactly one starts with weight. A
view that disagrees (a join or a death during the epoch's first second) gives zero or
two initiators, and that epoch's totals are absent or off; the next epoch repairs it.

Reported: the last *completed* epoch's estimate (`colony stats` → "colony"), and the
current one while it converges. A share this node cannot post (no route, a full
queue) comes back to itself, so mass is conserved; a share lost after it was posted
loses its mass for the rest of the epoch (the next epoch starts clean).

Cells (services/cells.py): the SWIM view is the node's cell, so on its own push-sum
would sum each cell apart. Two hooks make it colony-wide: `Bridges.bridges()` — a
cell's *seeds* (its four smallest-ranked members, the same in every member's report)
add the other current cells' seeds to their neighbours, so mass crosses cells — and
`Bridges.holds(key)`: only the cell holding the epoch's key (`epoch_key`) has an
initiator, so the colony has one. A share from another cell is taken only from one of
that cell's seeds (`Bridges.accepts`): both ends agree on who the seeds are. With one
cell (the root holds every key, no other cell) this is exactly the single-pool
behaviour. Mixing across cells goes through four bridges per cell, so a colony of
large cells needs more rounds per epoch.

Trust: push-sum is not Byzantine-tolerant (a member that lies moves the totals): only
live members' shares are taken (others are dropped and counted), malformed ones cost
the sender its stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import trio

from gossip.pushsum import PushSum, PushSumShare, Restart, SetNeighbors
from overlay.core.effects import Received
from overlay.core.errors import RemoteProtocolError, WireError
from overlay.runtime.driver import Driver
from overlay.runtime.net.transport_types import Codec

if TYPE_CHECKING:
    from gossip.resources import ResourceAd
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Membership, Network

log = structlog.get_logger("colony.aggregate")

PROTO_AGGREGATE = "/colony/aggregate/1.0.0"
#: What each node adds in, in this order on the wire (≤ pushsum.MAX_VALUES).
VALUES = ("members", "cpu_cores", "gpus", "mem_bytes", "mem_free_bytes", "disk_free_bytes")


class Bridges(Protocol):
    """What the cell service tells push-sum (see the module docstring, "Cells")."""

    def bridges(self) -> list[PeerId]: ...

    def accepts(self, peer: PeerId) -> bool: ...

    def holds(self, key: int) -> bool: ...


def epoch_key(epoch: int) -> int:
    """The 64-bit cell key of an epoch: the cell holding it has the epoch's initiator."""
    return int.from_bytes(hashlib.sha256(b"colony/aggregate\0" + epoch.to_bytes(8, "big"))
                          .digest()[:8], "big")


def initiator(epoch: int, peers: list[PeerId]) -> PeerId | None:
    """The epoch's initiator among `peers`: the smallest sha256(epoch ‖ peer id)."""
    e = epoch.to_bytes(8, "big")
    return min(peers, key=lambda p: hashlib.sha256(e + p.raw).digest(), default=None)


def values_of(ad: ResourceAd | None) -> tuple[float, ...]:
    if ad is None:
        return (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return (1.0, float(ad.cpu_cores), float(ad.gpus), float(ad.mem_bytes),
            float(ad.mem_free_bytes), float(ad.disk_free_bytes))  # fmt: skip


@dataclass
class AggregateStats:
    shares_malformed: int = 0
    shares_not_member: int = 0
    shares_returned: int = 0
    epochs_started: int = 0
    epochs_initiated: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    epoch: int
    values: dict[str, float]

    def json(self, epoch_s: float) -> dict[str, Any]:
        return {"epoch": self.epoch, "epoch_start": self.epoch * epoch_s,
                **{k: round(v, 3) for k, v in self.values.items()}}


class AggregateService:
    """Owns the push-sum core and its driver; `totals()` is what `/v1/stats` shows."""

    def __init__(self, me: PeerId, membership: Membership, network: Network,
                 conf: dict[str, Any], rng: random.Random | None = None,
                 bridges: Bridges | None = None) -> None:
        self.me = me
        self._bridges = bridges
        self._members = membership
        self._net = network
        self.epoch_s = float(conf.get("epoch_s", 30.0))
        self.round_s = float(conf.get("round_s", 1.0))
        if not 0 < self.round_s * 5 <= self.epoch_s:
            raise ValueError("[aggregate] epoch_s must hold at least 5 rounds of round_s")
        self.core = PushSum(rng or random.Random(), pull=True, interval_s=self.round_s)
        self.driver = Driver(self.core, send=self._send, emit=lambda ev: None)
        self.stats = AggregateStats()
        #: The last completed epoch's estimate, and the current epoch's as last seen.
        self.last: Totals | None = None
        self._seen: Totals | None = None
        #: The last epoch this service started (its Restart may still be queued in the
        #: driver: `core.own_epoch` moves only once the driver handled it).
        self._started = -1

    def register(self) -> None:
        self._net.set_handler(PROTO_AGGREGATE, on_message=self._on_frame, codec=Codec.CBOR)

    # ------------------------------------------------------------ network

    def _on_frame(self, peer: PeerId, obj: object) -> None:
        if not self._members.is_member(peer) and not (
                self._bridges is not None and self._bridges.accepts(peer)):
            self.stats.shares_not_member += 1
            return
        try:
            share = PushSumShare.from_wire(obj)
        except WireError as e:
            self.stats.shares_malformed += 1
            raise RemoteProtocolError(f"bad push-sum share: {e}") from None
        self.driver.submit(Received(peer, share))

    def _send(self, peer: PeerId, msg: object) -> None:
        assert isinstance(msg, PushSumShare)
        if not self._net.post(peer, PROTO_AGGREGATE, msg.to_wire()):
            # Not sent: keep the mass (as our own share, asking nothing back).
            self.stats.shares_returned += 1
            self.driver.submit(Received(self.me, dataclasses.replace(msg, reply=False)))

    # ------------------------------------------------------------ epochs

    async def run(self) -> None:
        """Start each epoch on its wall-clock boundary; refresh neighbours every round."""
        while True:
            now = time.time()
            self._observe()
            epoch = int(now // self.epoch_s)
            # Not `core.own_epoch` alone: on a loaded machine the driver may not have
            # handled the last Restart by the next loop, and a second Restart of the
            # same epoch is a caller error in the core (it raised, and the daemon died:
            # 11 of 20 daemons of tests/integration/test_cells_long.py at load ~10).
            if epoch > max(self.core.own_epoch, self._started) and epoch >= self.core.epoch:
                self._started = epoch
                self._start(epoch)
            await trio.sleep(min(self.round_s, (epoch + 1) * self.epoch_s - now + 0.001))

    def _live(self) -> list[PeerId]:
        return [m.peer for m in self._members.list_members()]

    def _start(self, epoch: int) -> None:
        live = self._live()
        if self.me not in live:
            live.append(self.me)
        first = initiator(epoch, live) == self.me and (
            self._bridges is None or self._bridges.holds(epoch_key(epoch)))
        self.stats.epochs_started += 1
        self.stats.epochs_initiated += first  # neighbours: set by `_observe` just before
        values = values_of(self._members.own_ad())
        self.driver.submit(Restart(epoch, values, 1.0 if first else 0.0))

    def _observe(self) -> None:
        """Remember the current estimate; when the epoch moved on, the last one stands."""
        near = [p for p in self._live() if p != self.me]
        if self._bridges is not None:
            near += [p for p in self._bridges.bridges() if p != self.me and p not in near]
        self.driver.submit(SetNeighbors(tuple(near)))
        core = self.core
        if self._seen is not None and core.epoch != self._seen.epoch:
            self.last = self._seen
            self._seen = None
        est = core.estimate()
        if est is not None and core.epoch >= 0:
            self._seen = Totals(core.epoch, dict(zip(VALUES, est, strict=True)))

    def totals(self) -> dict[str, Any]:
        """`/v1/stats` "colony": the last completed epoch's totals, the current estimate."""
        out: dict[str, Any] = {"method": "push-sum", "epoch_s": self.epoch_s}
        if self.last is not None:
            out["last"] = self.last.json(self.epoch_s)
        if self._seen is not None:
            out["current"] = self._seen.json(self.epoch_s)
        return out

    def drops(self) -> dict[str, int]:
        return {"aggregate.malformed": self.stats.shares_malformed,
                "aggregate.not_member": self.stats.shares_not_member,
                "aggregate.inbox_full": self.driver.stats.inputs_dropped}  # fmt: skip
