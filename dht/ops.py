"""DHT operations and the RPCs they have in flight: the core's bookkeeping.

An *op* is one lookup the core runs for a command or for itself: one class per kind
(`FindOp`, `ProvidersOp`, `GetOp`, `PutOp` answer a caller; `BootstrapOp`,
`RefreshOp`, `RegionOp` are the core's own). Each class carries only its own state
and says which message its walk sends and whether its caller gets a `LookupDone`.

`RpcTable` holds every outbound request awaiting an answer (libp2p kad-dht spec; one
request id per RPC, core-local):
- a request gets rid n+1 and a timer ("rpc", rid). A lookup query's timer first fires
  at the *soft* timeout, an RTO from the RTTs of answered RPCs (Jacobson/Karels, RFC 6298:
  srtt + 4·rttvar, clamped to [rpc_soft_timeout_min_s, rpc_timeout_s]); then the query
  is *stalled* (its op stops waiting for it) and the timer is re-armed for the hard
  timeout at sent + rpc_timeout_s. Other RPCs wait for the hard timeout only;
- an answer must come from the peer asked (else counted, and the RPC stays pending);
  the table then forgets the RPC and cancels its timer;
- a timeout or an unreachable peer fails the RPC; the caller decides what that means.

Invariants: at most `max_pending_rpcs` RPCs pending (beyond it a request is refused
and counted, never queued); rids are never reused. An RPC names the op it serves by
id: `NO_OP` (a PING probe or a record correction) or `VERIFY_OP` (a PING that checks
whether a requester is a DHT server) belong to no op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

from dht.api import ClosestPeers, Providers, Result, Stored, Value
from dht.wire import DhtRequest, KadMessage, MessageType, PeerInfo
from overlay.core.effects import CancelTimer, Effect, Send, SetTimer
from overlay.core.ids import PeerId

if TYPE_CHECKING:
    from dht.api import KadConfig
    from dht.lookup import DisjointLookup, Lookup
    from dht.records import ValidRecord
    from dht.stats import DhtStats
    from dht.sweep import Region

#: The op id of an RPC that belongs to no op.
NO_OP = 0
#: The op id of a PING that checks whether a requester is a DHT server.
VERIFY_OP = -1


# ---------------------------------------------------------------- ops


class Op:
    """A lookup under way: its id, the caller's request id, the key, the walk."""

    __slots__ = ("id", "key", "lookup", "request_id")

    #: The message the walk sends to each peer it queries.
    walk_type: ClassVar[MessageType] = MessageType.FIND_NODE
    #: Whether the op answers a caller with `LookupDone` (the core's own ops do not).
    reports: ClassVar[bool] = False

    def __init__(self, op_id: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        self.id = op_id
        self.request_id = request_id
        self.key = key
        self.lookup = lookup

    def walking(self) -> bool:
        """Still walking towards the key (a put then stores at the closest peers)."""
        return True

    def satisfied(self) -> bool:
        """Enough found to stop walking before the lookup ends."""
        return False

    @staticmethod
    def empty_result() -> Result:
        return ClosestPeers(())


class FindOp(Op):
    """FIND_NODE for a caller: the k closest peers to a key."""

    __slots__ = ()
    reports = True


class BootstrapOp(Op):
    """The self-lookup that joins the network; a forced refresh follows."""

    __slots__ = ()


class RefreshOp(Op):
    """A bucket refresh: a lookup for a key in a stale bucket (Kademlia §2.3)."""

    __slots__ = ()


class ProvidersOp(Op):
    """GET_PROVIDERS: walk until `count` providers are found or the walk ends."""

    __slots__ = ("count", "found")
    walk_type = MessageType.GET_PROVIDERS
    reports = True

    def __init__(self, op_id: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        super().__init__(op_id, request_id, key, lookup)
        self.count = 0
        #: provider → info, insertion ordered, ≤ count.
        self.found: dict[PeerId, PeerInfo] = {}

    def satisfied(self) -> bool:
        return len(self.found) >= self.count

    @staticmethod
    def empty_result() -> Result:
        return Providers((), ())


class GetOp(Op):
    """GET_VALUE: walk until `count` valid records are heard (a quorum)."""

    __slots__ = ("answers", "best", "count", "valid")
    walk_type = MessageType.GET_VALUE
    reports = True

    def __init__(self, op_id: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        super().__init__(op_id, request_id, key, lookup)
        self.count = 0
        #: Best record so far, number of valid answers, (peer, value) answers.
        self.best: ValidRecord | None = None
        self.valid = 0
        self.answers: list[tuple[PeerId, bytes]] = []

    def satisfied(self) -> bool:
        return self.valid >= self.count

    @staticmethod
    def empty_result() -> Result:
        return Value(None, 0, None, 0)


class PutOp(Op):
    """PUT_VALUE: walk to the key, then store the record at the k closest peers."""

    __slots__ = ("acked", "pending", "putting", "record")
    reports = True

    def __init__(self, op_id: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        super().__init__(op_id, request_id, key, lookup)
        #: The record, the peers that stored it, PUT_VALUEs in flight.
        self.record: ValidRecord | None = None
        self.acked: list[PeerId] = []
        self.pending = 0
        self.putting = False

    def walking(self) -> bool:
        return not self.putting

    @staticmethod
    def empty_result() -> Result:
        return Stored(0, ())


#: What a region lookup calls once its walk has ended (the reprovide sweep).
RegionDone = Callable[["RegionOp", float, list[Effect]], None]


class RegionOp(Op):
    """One lookup of a provide sweep's key region (dht/reprovide.py)."""

    __slots__ = ("job", "on_done", "sweep")

    def __init__(self, op_id: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        super().__init__(op_id, request_id, key, lookup)
        #: The owning sweep's id, its region job, and what to call when the walk ends.
        self.sweep = 0
        self.job: Region | None = None
        self.on_done: RegionDone | None = None


# ---------------------------------------------------------------- RPCs


class Rpc:
    """One request awaiting an answer: the peer asked, the op it serves, its type,
    when it left, and whether its soft timeout has passed."""

    __slots__ = ("kind", "op", "peer", "sent_at", "soft", "stalled")

    def __init__(self, peer: PeerId, op: int, kind: MessageType, sent_at: float) -> None:
        self.peer = peer
        self.op = op
        self.kind = kind
        self.sent_at = sent_at
        #: Armed first for the soft timeout; `stalled` once that passed.
        self.soft = False
        self.stalled = False


class RttEstimator:
    """Smoothed RTT and its variation over answered RPCs (RFC 6298 §2, α=1/8, β=1/4)."""

    __slots__ = ("initial_s", "max_s", "min_s", "rttvar", "samples", "srtt")

    def __init__(self, initial_s: float, min_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.min_s = min_s
        self.max_s = max_s
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, rtt: float) -> None:
        if rtt < 0.0 or rtt != rtt:  # a clock going backwards gives no evidence
            return
        if self.samples == 0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    def rto(self) -> float:
        base = self.initial_s if self.samples == 0 else self.srtt + 4 * self.rttvar
        return min(self.max_s, max(self.min_s, base))


class RpcTable:
    """The pending RPCs by request id (see the module docstring)."""

    __slots__ = ("_next_rid", "config", "pending", "rtt", "stats")

    def __init__(self, config: KadConfig, stats: DhtStats) -> None:
        self.config = config
        self.stats = stats
        self.pending: dict[int, Rpc] = {}
        self._next_rid = 1
        self.rtt = RttEstimator(min(config.rpc_soft_timeout_initial_s, config.rpc_timeout_s),
                                config.rpc_soft_timeout_min_s, config.rpc_timeout_s)

    def __len__(self) -> int:
        return len(self.pending)

    def request(self, peer: PeerId, msg: KadMessage, op_id: int, now: float,
                out: list[Effect], *, soft: bool = False) -> bool:
        """Send `msg` to `peer` and arm its timeout (first the soft one if `soft`);
        False if the pending limit refuses."""
        if len(self.pending) >= self.config.max_pending_rpcs:
            self.stats.rpcs_refused_pending_limit += 1
            return False
        rid = self._next_rid
        self._next_rid += 1
        rpc = Rpc(peer, op_id, msg.type, now)
        self.pending[rid] = rpc
        self.stats.rpcs_sent += 1
        out.append(Send(peer, DhtRequest(rid, msg)))
        wait = self.config.rpc_timeout_s
        if soft:
            soft_wait = self.rtt.rto()
            if soft_wait < wait:
                wait = soft_wait
                rpc.soft = True
        out.append(SetTimer(("rpc", rid), now + wait))
        return True

    def answered(self, peer: PeerId, rid: int, now: float, out: list[Effect]) -> Rpc | None:
        """The RPC `peer` answered with `rid`, now no longer pending; None (counted) if
        there is none or another peer was asked (then it stays pending)."""
        rpc = self.pending.get(rid)
        if rpc is None:
            self.stats.late_or_duplicate_responses += 1
            return None
        if rpc.peer != peer:
            self.stats.unsolicited_responses += 1
            return None
        del self.pending[rid]
        out.append(CancelTimer(("rpc", rid)))
        if rpc.stalled:
            self.stats.late_answers_after_stall += 1
        self.rtt.sample(now - rpc.sent_at)
        return rpc

    def timed_out(self, rid: int, now: float, out: list[Effect]) -> tuple[Rpc, bool] | None:
        """The RPC whose ("rpc", rid) timer fired and whether this was its soft timeout
        (then it stays pending, re-armed for the hard one); None if answered already."""
        rpc = self.pending.get(rid)
        if rpc is None:
            return None
        if rpc.soft and not rpc.stalled:
            rpc.stalled = True
            self.stats.rpc_stalls += 1
            out.append(SetTimer(("rpc", rid), rpc.sent_at + self.config.rpc_timeout_s))
            return rpc, True
        del self.pending[rid]
        self.stats.rpc_timeouts += 1
        return rpc, False

    def fail(self, rid: int, peer: PeerId, out: list[Effect]) -> Rpc | None:
        """Forget RPC `rid` to `peer` (its stream failed); None if not pending."""
        rpc = self.pending.get(rid)
        if rpc is None or rpc.peer != peer:
            return None
        del self.pending[rid]
        out.append(CancelTimer(("rpc", rid)))
        return rpc

    def drop_peer(self, peer: PeerId, out: list[Effect]) -> Iterator[Rpc]:
        """Forget the RPCs to an unreachable peer, one at a time: each is removed (and
        its timer cancelled) just before it is yielded, so the caller fails it before
        the next one leaves the table. RPCs added meanwhile are not visited."""
        for rid, rpc in list(self.pending.items()):
            if rpc.peer == peer:
                del self.pending[rid]
                out.append(CancelTimer(("rpc", rid)))
                yield rpc
