"""Running the core's lookups: start an op, send its queries, take answers, finish it.

Each op (dht/ops.py) drives one iterative lookup (dht/lookup.py; Maymounkov &
Mazières 2002, §2.3): α queries in flight through the `RpcTable`, each answer's closer
peers fed back, until the lookup ends or the op has enough (`Op.satisfied`). Then:
FIND_NODE, GET_PROVIDERS and GET_VALUE emit `LookupDone`; PUT_VALUE stores its record
at the k closest peers and emits once all have answered; a bootstrap emits
`BootstrapDone` and refreshes every bucket; a region lookup hands its peers to the
reprovide sweep.

GET_PROVIDERS streams what it finds (kubo's FindProvidersAsync): `ProvidersFound` for
every new provider as its answer arrives. Its walk ends by the paper's rule, which no
longer waits for a query past its soft timeout; a provider that is slow to answer (a
busy node: the one that just fetched the data and is announcing it) would be lost. So
an op that ends its walk with queries unanswered and fewer providers than asked
*waits* (`waiting`, no new queries) until each is answered or fails at its hard
timeout, and reports the providers those late answers bring; then the command's last
`ProvidersFound(last=True)`. The caller has its `LookupDone` when the walk ends, as
before, and can start with what it has.

Rules (libp2p kad-dht spec; docs/dht.md):
- Untrusted lists are cut to k and self-referrals dropped, each counted in `DhtStats`;
  records are validated before they count towards a quorum.
- A GET_VALUE corrects peers that answered an older record (go-libp2p-kad-dht).
- Bucket refresh (Kademlia §2.3): a lookup for a key in each stale bucket; the only
  randomness in the core (`_key_in_bucket`), drawn from the injected rng.

Bounded: at most `max_lookups` ops at once; a command beyond it fails with "busy". At
most `max_lookups` provider ops wait for late answers, each at most `rpc_timeout_s`
after its last query left; beyond that bound one ends at once (counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from dht.api import (
    BootstrapDone,
    ClosestPeers,
    KadConfig,
    LookupDone,
    PeerAddressesLearned,
    Providers,
    ProvidersFound,
    Result,
    Stored,
    Value,
)
from dht.lookup import DisjointLookup, Lookup
from dht.ops import (
    NO_OP,
    BootstrapOp,
    FindOp,
    GetOp,
    Op,
    ProvidersOp,
    PutOp,
    RefreshOp,
    RegionOp,
    RpcTable,
)
from dht.records import Validators
from dht.routing_table import RoutingTable
from dht.stats import DhtStats
from dht.wire import KadMessage, MessageType, PeerInfo, Record
from overlay.core.effects import Effect, Emit
from overlay.core.errors import RemoteProtocolError
from overlay.core.ids import PeerId, key_of_bytes

if TYPE_CHECKING:
    import random

OpT = TypeVar("OpT", bound=Op)


class LookupRunner:
    """The ops under way, by id (see the module docstring)."""

    __slots__ = ("_next_id", "config", "me", "ops", "rng", "rpcs", "stats", "table",
                 "validators", "waiting")

    def __init__(self, me: PeerId, config: KadConfig, *, table: RoutingTable,
                 rpcs: RpcTable, stats: DhtStats, validators: Validators,
                 rng: random.Random) -> None:
        self.me = me
        self.config = config
        self.table = table
        self.rpcs = rpcs
        self.stats = stats
        self.validators = validators
        self.rng = rng
        self.ops: dict[int, Op] = {}
        #: Provider ops whose walk ended, waiting for answers past their soft timeout.
        self.waiting: dict[int, ProvidersOp] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.ops)

    def new_id(self) -> int:
        """A fresh id; ops and provide sweeps draw from the same sequence."""
        op_id = self._next_id
        self._next_id += 1
        return op_id

    # ------------------------------------------------------------ starting

    def _new_lookup(self, target: int, k: int) -> Lookup | DisjointLookup:
        cfg = self.config
        if cfg.disjoint_paths > 1:
            return DisjointLookup(target, self.me, k=k, alpha=cfg.alpha, d=cfg.disjoint_paths)
        return Lookup(target, self.me, k=k, alpha=cfg.alpha)

    def start(self, kind: type[OpT], request_id: int, key: bytes, now: float,
              out: list[Effect], *, defer: bool = False,
              seeds: list[PeerId] | None = None, k: int | None = None) -> OpT | None:
        """Create an op and seed its lookup from our table (plus `seeds`); walk at once
        unless `defer` (the caller fills the op in first, then calls `advance`)."""
        cfg = self.config
        if len(self.ops) >= cfg.max_lookups:
            self.stats.lookups_refused_busy += 1
            if kind.reports:
                out.append(Emit(LookupDone(request_id, kind.empty_result(), 0, 0, "busy")))
            return None
        target = key_of_bytes(key)
        size = k or cfg.k
        lk = self._new_lookup(target, size)
        # Seed with 2k (d·k for disjoint paths) so early failures do not starve the walk.
        lk.add(self.table.closest(target, size * max(2, cfg.disjoint_paths)), 1)
        if seeds:
            lk.add(seeds, 1)
        op = kind(self.new_id(), request_id, key, lk)
        self.ops[op.id] = op
        if not defer:
            self.advance(op, now, out)
        return op

    # ------------------------------------------------------------ walking

    def advance(self, op: Op, now: float, out: list[Effect]) -> None:
        """Send the queries the lookup allows now; finish the walk once it is over."""
        if not op.walking():
            return
        if op.satisfied():
            self._walk_done(op, now, out)
            return
        op_id = op.id
        msg = KadMessage(op.walk_type, op.key)
        lk = op.lookup
        while True:
            qs = lk.next_queries()
            if not qs:
                break
            for p in qs:
                if not self.rpcs.request(p, msg, op_id, now, out, soft=True):
                    lk.on_failure(p)
        if lk.finished():
            self._walk_done(op, now, out)

    def on_answer(self, op_id: int, peer: PeerId, msg: KadMessage, now: float,
                  out: list[Effect]) -> None:
        """`peer` answered a query of op `op_id` (type already checked)."""
        op = self.ops.get(op_id)
        if op is None:
            late = self.waiting.get(op_id)
            if late is not None and late.lookup.state(peer) is not None:
                self.stats.late_providers += self._take_providers(late, msg, out)
                late.lookup.on_answer(peer, ())  # no more walking: closer peers unused
                self._end_wait_if_over(late, out)
            return
        if isinstance(op, PutOp) and op.putting:
            if msg.type == MessageType.PUT_VALUE:
                op.pending -= 1
                rec = op.record
                if rec is not None and msg.record is not None and msg.record.value == rec.value:
                    op.acked.append(peer)
                if op.pending == 0:
                    self._finish(op, Stored(len(op.acked), tuple(op.acked)), out)
            return
        lk = op.lookup
        if lk.state(peer) is None:
            return
        closer = self._filter_peers(peer, msg.closer_peers, out)
        if isinstance(op, ProvidersOp):
            self._take_providers(op, msg, out)
        elif isinstance(op, GetOp):
            self._take_record(op, peer, msg, now)
        lk.on_answer(peer, closer)
        self.advance(op, now, out)

    def on_stall(self, op_id: int, peer: PeerId, now: float, out: list[Effect]) -> None:
        """A query of op `op_id` to `peer` passed its soft timeout: walk on without it."""
        op = self.ops.get(op_id)
        if op is None:
            late = self.waiting.get(op_id)
            if late is not None:  # a query beyond the window when the walk ended
                late.lookup.on_stall(peer)
            return
        if isinstance(op, PutOp) and op.putting:
            return
        if op.lookup.on_stall(peer):
            self.advance(op, now, out)

    def on_failure(self, op_id: int, peer: PeerId, now: float, out: list[Effect]) -> None:
        """A query of op `op_id` to `peer` timed out, was refused or went unanswered."""
        op = self.ops.get(op_id)
        if op is None:
            late = self.waiting.get(op_id)
            if late is not None and late.lookup.on_failure(peer):
                self._end_wait_if_over(late, out)
            return
        if isinstance(op, PutOp) and op.putting:
            op.pending -= 1
            if op.pending == 0:
                self._finish(op, Stored(len(op.acked), tuple(op.acked)), out)
            return
        if op.lookup.on_failure(peer):
            self.advance(op, now, out)

    # ------------------------------------------------------------ answers

    def _filter_peers(self, responder: PeerId, infos: tuple[PeerInfo, ...],
                      out: list[Effect]) -> list[PeerId]:
        k = self.config.k
        if len(infos) > k:
            self.stats.peer_lists_truncated += 1
            infos = infos[:k]
        peers: list[PeerId] = []
        for info in infos:
            p = info.peer
            if p == responder:
                self.stats.self_referrals += 1
                continue
            if p == self.me:
                continue
            if info.addrs and info.addrs != self.table.addrs(p):
                out.append(Emit(PeerAddressesLearned(p, info.addrs)))
            peers.append(p)
        return peers

    def _take_providers(self, op: ProvidersOp, msg: KadMessage, out: list[Effect]) -> int:
        """Take the answer's new providers (up to the op's count) and report them in
        one `ProvidersFound`; how many were new."""
        infos = msg.provider_peers
        # As many as we would answer ourselves (every record a server may hold for a
        # key), at least k.
        cap = max(self.config.k, self.config.max_providers_per_answer)
        if len(infos) > cap:
            self.stats.peer_lists_truncated += 1
            infos = infos[:cap]
        new: list[PeerInfo] = []
        for info in infos:
            had = op.found.get(info.peer)
            if had is not None:
                if info.addrs and not had.addrs:
                    # Known without addresses (our store's record of a peer that sent
                    # none): keep the ones this answer brings, or nobody can dial it.
                    op.found[info.peer] = info
                    out.append(Emit(PeerAddressesLearned(info.peer, info.addrs)))
                continue
            if len(op.found) >= op.count:
                break
            op.found[info.peer] = info
            new.append(info)
            if info.addrs:
                out.append(Emit(PeerAddressesLearned(info.peer, info.addrs)))
        if new:
            out.append(Emit(ProvidersFound(op.request_id, tuple(new))))
        return len(new)

    def _wait_late(self, op: ProvidersOp, out: list[Effect]) -> None:
        """The walk ended: wait for its unanswered queries if they may add providers."""
        if op.satisfied() or op.lookup.outstanding() == 0:
            out.append(Emit(ProvidersFound(op.request_id, (), last=True)))
        elif len(self.waiting) >= self.config.max_lookups:
            self.stats.provider_waits_refused += 1
            out.append(Emit(ProvidersFound(op.request_id, (), last=True)))
        else:
            self.waiting[op.id] = op

    def _end_wait_if_over(self, op: ProvidersOp, out: list[Effect]) -> None:
        if op.satisfied() or op.lookup.outstanding() == 0:
            del self.waiting[op.id]
            out.append(Emit(ProvidersFound(op.request_id, (), last=True)))

    def _take_record(self, op: GetOp, peer: PeerId, msg: KadMessage, now: float) -> None:
        r = msg.record
        if r is None:
            return
        if r.key != op.key:
            self.stats.records_rejected += 1
            return
        try:
            rec = self.validators.validate(r.key, r.value, now)
        except RemoteProtocolError:
            self.stats.records_rejected += 1
            return
        op.valid += 1
        op.answers.append((peer, rec.value))
        if op.best is None or self.validators.better(op.best, rec):
            op.best = rec

    # ------------------------------------------------------------ finishing

    def _walk_done(self, op: Op, now: float, out: list[Effect]) -> None:
        lk = op.lookup
        self.table.mark_refreshed(lk.target, now)
        if isinstance(op, PutOp) and op.record is not None:
            self._put(op, now, out)
            return
        if isinstance(op, RegionOp):
            self._finish(op, ClosestPeers(()), out)
            if op.on_done is not None:
                op.on_done(op, now, out)
            return
        closest = tuple(lk.closest(self.config.k))
        if isinstance(op, FindOp):
            self._finish(op, ClosestPeers(closest), out,
                         None if closest else "no peers answered")
        elif isinstance(op, ProvidersOp):
            self._finish(op, Providers(tuple(op.found.values())[: op.count], closest), out)
            self._wait_late(op, out)
        elif isinstance(op, GetOp):
            self._finish_get(op, now, out)
        elif isinstance(op, BootstrapOp):
            self._finish(op, ClosestPeers(closest), out)
            out.append(Emit(BootstrapDone(op.request_id, len(self.table))))
            self.refresh(now, out, force=True)
        else:  # RefreshOp
            self._finish(op, ClosestPeers(closest), out)

    def _put(self, op: PutOp, now: float, out: list[Effect]) -> None:
        """The walk found the k closest peers: store the record at each of them."""
        rec = op.record
        assert rec is not None  # checked by the caller
        op.putting = True
        msg = KadMessage(MessageType.PUT_VALUE, op.key, Record(rec.key, rec.value))
        for p in op.lookup.closest(self.config.k):
            if self.rpcs.request(p, msg, op.id, now, out):
                op.pending += 1
        if op.pending == 0:
            self._finish(op, Stored(0, ()), out)

    def _finish_get(self, op: GetOp, now: float, out: list[Effect]) -> None:
        best = op.best
        if best is None:
            self._finish(op, Value(None, 0, None, 0), out, "not found")
            return
        # Correct peers that served an older record (go-libp2p-kad-dht does the same).
        msg = KadMessage(MessageType.PUT_VALUE, op.key, Record(best.key, best.value))
        for p, value in op.answers:
            if value != best.value:
                self.rpcs.request(p, msg, NO_OP, now, out)
        self._finish(op, Value(best.value, best.seq, best.payload, op.valid), out)

    def _finish(self, op: Op, result: Result, out: list[Effect],
                error: str | None = None) -> None:
        del self.ops[op.id]
        if op.reports:
            lk = op.lookup
            out.append(Emit(LookupDone(op.request_id, result, lk.hops(), lk.queried, error)))

    # ------------------------------------------------------------ bucket refresh

    def refresh(self, now: float, out: list[Effect], force: bool = False) -> None:
        """Refresh stale buckets (Kademlia §2.3): a lookup for a key in each one."""
        cfg = self.config
        interval = -1.0 if force else cfg.refresh_interval_s
        stale = self.table.stale_cpls(now, interval, cfg.max_refresh_cpl)
        if not stale:
            return
        self.start(RefreshOp, 0, self.me.raw, now, out)
        for c in stale:
            # Counted as refreshed even if no key was found: retry next interval, not
            # at every check (deep empty buckets are normal in small networks).
            self.table.touch(c, now)
            key = self._key_in_bucket(c)
            if key is not None:
                self.start(RefreshOp, 0, key, now, out)

    def _key_in_bucket(self, cpl: int) -> bytes | None:
        """Key bytes whose sha256 has CPL `cpl` with us. An existing member's peer id if
        the bucket has one (its neighbourhood lies in the bucket's subtree), else a
        bounded random search (expected 2^(cpl+1) hashes, at most 4096)."""
        b = self.table.bucket(cpl)
        if b is not None and b.peers:
            return self.rng.choice(b.peers).raw
        for _ in range(1 << min(cpl + 2, 12)):
            cand = self.rng.getrandbits(256).to_bytes(32, "big")
            if self.table.cpl(key_of_bytes(cand)) == cpl:
                return cand
        return None
