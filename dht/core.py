"""The Kademlia sans-IO core: `Kademlia.handle(inp, now) -> list[Effect]`.

Inputs: `Received(peer, DhtRequest | DhtResponse)`, `TimerFired`, `PeerUnreachable`
and the commands in dht.api. Effects: `Send(peer, DhtRequest | DhtResponse)`,
`SetTimer`/`CancelTimer` (absolute deadlines), `Emit(LookupDone | ProvideDone |
BootstrapDone | PeerAddressesLearned)`.

Rules (Maymounkov & Mazières 2002; libp2p kad-dht spec):
- Every outbound request gets a core-local rid and a timer ("rpc", rid). The answer must
  come from the peer asked, with the same message type; anything else is counted and
  dropped. A timeout or `PeerUnreachable` fails the request: the lookup moves on and the
  routing table counts the failure.
- Any message from a peer is proof of life (`RoutingTable.seen`); a full bucket makes
  the core PING the least-recently-seen entry, which is evicted only if that fails.
- Untrusted lists are cut to k, self-referrals dropped, records validated before they
  are stored or counted — each with a counter in `DhtStats`.
- Housekeeping timers: ("refresh",) bucket refresh, ("reprovide",) 22 h sweep,
  ("expire",) record expiry. A stale TimerFired (earlier than the deadline we set, or
  for an rpc no longer pending) is ignored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace

from dht import providers as prov
from dht.api import (
    AddPeer,
    Bootstrap,
    BootstrapDone,
    ClosestPeers,
    FindNode,
    GetProviders,
    GetValue,
    KadConfig,
    LookupDone,
    PeerAddressesLearned,
    PeerRoleLearned,
    Provide,
    ProvideDone,
    Providers,
    PutValue,
    Result,
    StopProviding,
    Stored,
    Value,
)
from dht.lookup import DisjointLookup, Lookup
from dht.providers import ProviderLimits, ProviderStore
from dht.records import Validators, ValidRecord, ValueStore, ValueStoreLimits
from dht.roles import RequesterRoles
from dht.routing_table import RoutingTable
from dht.sweep import Region, Sweep
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo, Record
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import split_multihash

# op kinds
_FIND, _PROVIDERS, _GET, _PUT, _REFRESH, _BOOTSTRAP, _REGION = range(7)
_WALK, _PUTTING = 0, 1
#: The op id of a PING that checks whether a requester is a DHT server.
_VERIFY = -1


@dataclass(slots=True)
class DhtStats:
    rpcs_sent: int = 0
    rpc_timeouts: int = 0
    rpcs_refused_pending_limit: int = 0
    late_or_duplicate_responses: int = 0
    unsolicited_responses: int = 0
    mismatched_responses: int = 0
    peer_lists_truncated: int = 0
    self_referrals: int = 0
    records_rejected: int = 0
    records_stored: int = 0
    record_store_refusals: int = 0
    providers_stored: int = 0
    provider_refusals: int = 0
    provider_sender_mismatch: int = 0
    bad_keys: int = 0
    lookups_refused_busy: int = 0
    provided_keys_refused: int = 0
    requests_served: int = 0
    #: Requests a client-mode core received (it answers none).
    requests_refused_client: int = 0
    #: PINGs sent to requesters not in the table, and how many went unanswered (a
    #: client, or a peer gone since): those requesters stay out of the table.
    role_checks_sent: int = 0
    role_checks_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Rpc:
    __slots__ = ("kind", "op", "peer")

    def __init__(self, peer: PeerId, op: int, kind: MessageType) -> None:
        self.peer = peer
        self.op = op
        self.kind = kind


class _Op:
    __slots__ = (
        "acked",
        "answers",
        "best",
        "count",
        "found",
        "id",
        "job",
        "key",
        "kind",
        "lookup",
        "pending",
        "phase",
        "record",
        "request_id",
        "sweep",
        "valid",
    )

    def __init__(self, op_id: int, kind: int, request_id: int, key: bytes,
                 lookup: Lookup | DisjointLookup) -> None:
        self.id = op_id
        self.kind = kind
        self.request_id = request_id
        self.key = key
        self.lookup = lookup
        self.phase = _WALK
        self.count = 0
        #: GET_PROVIDERS: provider → info, insertion ordered, ≤ count.
        self.found: dict[PeerId, PeerInfo] = {}
        #: GET_VALUE: best record so far, number of valid answers, (peer, value) answers.
        self.best: ValidRecord | None = None
        self.valid = 0
        self.answers: list[tuple[PeerId, bytes]] = []
        #: PUT_VALUE: the record, acks, puts in flight.
        self.record: ValidRecord | None = None
        self.acked: list[PeerId] = []
        self.pending = 0
        #: REGION: owning sweep id and region job.
        self.sweep = 0
        self.job: Region | None = None


_WALK_TYPE = {
    _FIND: MessageType.FIND_NODE, _REFRESH: MessageType.FIND_NODE,
    _BOOTSTRAP: MessageType.FIND_NODE, _REGION: MessageType.FIND_NODE,
    _PUT: MessageType.FIND_NODE, _PROVIDERS: MessageType.GET_PROVIDERS,
    _GET: MessageType.GET_VALUE,
}


class Kademlia:
    """One node's DHT. See the module docstring and docs/dht.md."""

    def __init__(
        self,
        me: PeerId,
        config: KadConfig | None = None,
        *,
        rng: random.Random,
        addrs: tuple[bytes, ...] = (),
        validators: Validators | None = None,
        provider_limits: ProviderLimits | None = None,
        value_limits: ValueStoreLimits | None = None,
    ) -> None:
        self.me = me
        self.config = cfg = config or KadConfig()
        self.rng = rng
        self.addrs = addrs
        self.table = RoutingTable(me, cfg.k, cfg.replacement_size, cfg.max_fails,
                                  cfg.probe_after_s)
        self.validators = validators or Validators()
        self.providers = ProviderStore(
            replace(provider_limits or ProviderLimits(), ttl_s=cfg.provider_ttl_s))
        self.values = ValueStore(value_limits)
        self.stats = DhtStats()
        #: multihash → dht key of what we provide; bounded by max_provided_keys.
        self.provided: dict[bytes, int] = {}
        self._rpcs: dict[int, _Rpc] = {}
        self._ops: dict[int, _Op] = {}
        self._sweeps: dict[int, Sweep] = {}
        self._next_rid = 1
        self._next_op = 1
        #: Server/client verdicts on requesters not in our table (client mode).
        self.roles = RequesterRoles(cfg.max_role_checks, cfg.role_check_ttl_s)
        #: Deadlines of housekeeping timers, to recognise stale firings.
        self._hk: dict[str, float] = {}

    # ================================================================ entry point

    def handle(self, inp: object, now: float) -> list[Effect]:
        out: list[Effect] = []
        if not self._hk:
            self._arm("refresh", now + self.config.refresh_check_s, out)
            self._arm("expire", now + self.config.expire_interval_s, out)
        if isinstance(inp, Received):
            msg = inp.msg
            if isinstance(msg, DhtRequest):
                self._serve(inp.peer, msg, now, out)
            elif isinstance(msg, DhtResponse):
                self._on_response(inp.peer, msg, now, out)
        elif isinstance(inp, TimerFired):
            self._on_timer(inp.timer, now, out)
        elif isinstance(inp, PeerUnreachable):
            for rid, rpc in list(self._rpcs.items()):
                if rpc.peer == inp.peer:
                    del self._rpcs[rid]
                    out.append(CancelTimer(("rpc", rid)))
                    self._rpc_failed(rpc, now, out)
        else:
            self._command(inp, now, out)
        return out

    def _arm(self, name: str, at: float, out: list[Effect]) -> None:
        self._hk[name] = at
        out.append(SetTimer((name,), at))

    # ================================================================ commands

    def _command(self, cmd: object, now: float, out: list[Effect]) -> None:
        cfg = self.config
        if isinstance(cmd, FindNode):
            self._start(_FIND, cmd.request_id, cmd.key, now, out)
        elif isinstance(cmd, GetProviders):
            if not self._valid_mh(cmd.key):
                raise LocalProtocolError("GetProviders key must be a multihash")
            op = self._start(_PROVIDERS, cmd.request_id, cmd.key, now, out, defer=True)
            if op is not None:
                op.count = cmd.count or cfg.get_providers_count
                if cmd.key in self.provided:
                    op.found[self.me] = PeerInfo(self.me, self.addrs)
                for info in self.providers.get(cmd.key, now, op.count):
                    op.found.setdefault(info.peer, info)
                self._advance(op, now, out)
        elif isinstance(cmd, GetValue):
            op = self._start(_GET, cmd.request_id, cmd.key, now, out, defer=True)
            if op is not None:
                op.count = cmd.quorum or cfg.get_value_quorum
                local = self.values.get(cmd.key, now)
                if local is not None:
                    op.best, op.valid = local, 1
                self._advance(op, now, out)
        elif isinstance(cmd, PutValue):
            try:
                rec = self.validators.validate(cmd.key, cmd.value, now)
            except RemoteProtocolError as e:
                raise LocalProtocolError(f"PutValue of an invalid record: {e}") from None
            self.values.put(rec, self.me, self.validators, now)
            op = self._start(_PUT, cmd.request_id, cmd.key, now, out, defer=True)
            if op is not None:
                op.record = rec
                self._advance(op, now, out)
        elif isinstance(cmd, Provide):
            self._provide(cmd, now, out)
        elif isinstance(cmd, StopProviding):
            for mh in cmd.keys:
                self.provided.pop(mh, None)
        elif isinstance(cmd, PeerRoleLearned):
            self.roles.learn(cmd.peer, cmd.server, now)
            if not cmd.server:
                self.table.remove(cmd.peer)
        elif isinstance(cmd, AddPeer):
            if cmd.addrs:
                out.append(Emit(PeerAddressesLearned(cmd.peer, cmd.addrs)))
            if cmd.peer != self.me:
                self._request(cmd.peer, KadMessage(MessageType.PING), 0, now, out)
        elif isinstance(cmd, Bootstrap):
            seeds = []
            for info in cmd.peers:
                if info.peer == self.me:
                    continue
                seeds.append(info.peer)
                if info.addrs:
                    out.append(Emit(PeerAddressesLearned(info.peer, info.addrs)))
            self._start(_BOOTSTRAP, cmd.request_id, self.me.raw, now, out, seeds=seeds)
        else:
            raise LocalProtocolError(f"unknown DHT command {type(cmd).__name__}")

    def _new_lookup(self, target: int, k: int) -> Lookup | DisjointLookup:
        cfg = self.config
        if cfg.disjoint_paths > 1:
            return DisjointLookup(target, self.me, k=k, alpha=cfg.alpha, d=cfg.disjoint_paths)
        return Lookup(target, self.me, k=k, alpha=cfg.alpha)

    def _start(self, kind: int, request_id: int, key: bytes, now: float, out: list[Effect],
               *, defer: bool = False, seeds: list[PeerId] | None = None,
               k: int | None = None) -> _Op | None:
        """Create an op and seed its lookup from our table (plus `seeds`)."""
        cfg = self.config
        if len(self._ops) >= cfg.max_lookups:
            self.stats.lookups_refused_busy += 1
            if kind in (_FIND, _PROVIDERS, _GET, _PUT):
                out.append(Emit(LookupDone(request_id, _empty_result(kind), 0, 0, "busy")))
            return None
        target = key_of_bytes(key)
        size = k or cfg.k
        lk = self._new_lookup(target, size)
        # Seed with 2k (d·k for disjoint paths) so early failures do not starve the walk.
        lk.add(self.table.closest(target, size * max(2, cfg.disjoint_paths)), 1)
        if seeds:
            lk.add(seeds, 1)
        op = _Op(self._next_op, kind, request_id, key, lk)
        self._next_op += 1
        self._ops[op.id] = op
        if not defer:
            self._advance(op, now, out)
        return op

    # ================================================================ lookup driving

    def _walk_msg(self, op: _Op) -> KadMessage:
        return KadMessage(_WALK_TYPE[op.kind], op.key)

    def _advance(self, op: _Op, now: float, out: list[Effect]) -> None:
        if op.phase != _WALK:
            return
        if self._satisfied(op):
            self._walk_done(op, now, out)
            return
        op_id = op.id
        msg = self._walk_msg(op)
        lk = op.lookup
        while True:
            qs = lk.next_queries()
            if not qs:
                break
            for p in qs:
                if not self._request(p, msg, op_id, now, out):
                    lk.on_failure(p)
        if lk.finished():
            self._walk_done(op, now, out)

    def _satisfied(self, op: _Op) -> bool:
        if op.kind == _PROVIDERS:
            return len(op.found) >= op.count
        if op.kind == _GET:
            return op.valid >= op.count
        return False

    def _request(self, peer: PeerId, msg: KadMessage, op_id: int, now: float,
                 out: list[Effect]) -> bool:
        if len(self._rpcs) >= self.config.max_pending_rpcs:
            self.stats.rpcs_refused_pending_limit += 1
            return False
        rid = self._next_rid
        self._next_rid += 1
        self._rpcs[rid] = _Rpc(peer, op_id, msg.type)
        self.stats.rpcs_sent += 1
        out.append(Send(peer, DhtRequest(rid, msg)))
        out.append(SetTimer(("rpc", rid), now + self.config.rpc_timeout_s))
        return True

    def _walk_done(self, op: _Op, now: float, out: list[Effect]) -> None:
        lk = op.lookup
        self.table.mark_refreshed(lk.target, now)
        kind = op.kind
        if kind == _PUT and op.record is not None:
            op.phase = _PUTTING
            op_id = op.id
            rec = op.record
            msg = KadMessage(MessageType.PUT_VALUE, op.key, Record(rec.key, rec.value))
            for p in lk.closest(self.config.k):
                if self._request(p, msg, op_id, now, out):
                    op.pending += 1
            if op.pending == 0:
                self._finish(op, Stored(0, ()), out)
            return
        if kind == _REGION:
            self._region_done(op, now, out)
            return
        closest = tuple(lk.closest(self.config.k))
        if kind == _FIND:
            self._finish(op, ClosestPeers(closest), out,
                         None if closest else "no peers answered")
        elif kind == _PROVIDERS:
            self._finish(op, Providers(tuple(op.found.values())[: op.count], closest), out)
        elif kind == _GET:
            self._finish_get(op, now, out)
        elif kind == _BOOTSTRAP:
            self._finish(op, ClosestPeers(closest), out)
            out.append(Emit(BootstrapDone(op.request_id, len(self.table))))
            self._refresh(now, out, force=True)
        else:  # _REFRESH
            self._finish(op, ClosestPeers(closest), out)

    def _finish_get(self, op: _Op, now: float, out: list[Effect]) -> None:
        best = op.best
        if best is None:
            self._finish(op, Value(None, 0, None, 0), out, "not found")
            return
        # Correct peers that served an older record (go-libp2p-kad-dht does the same).
        msg = KadMessage(MessageType.PUT_VALUE, op.key, Record(best.key, best.value))
        for p, value in op.answers:
            if value != best.value:
                self._request(p, msg, 0, now, out)
        self._finish(op, Value(best.value, best.seq, best.payload, op.valid), out)

    def _finish(self, op: _Op, result: Result, out: list[Effect],
                error: str | None = None) -> None:
        del self._ops[op.id]
        if op.kind in (_FIND, _PROVIDERS, _GET, _PUT):
            lk = op.lookup
            out.append(Emit(LookupDone(op.request_id, result, lk.hops(), lk.queried, error)))

    # ================================================================ responses

    def _on_response(self, peer: PeerId, resp: DhtResponse, now: float,
                     out: list[Effect]) -> None:
        rpc = self._rpcs.get(resp.rid)
        if rpc is None:
            self.stats.late_or_duplicate_responses += 1
            return
        if rpc.peer != peer:
            self.stats.unsolicited_responses += 1
            return
        del self._rpcs[resp.rid]
        out.append(CancelTimer(("rpc", resp.rid)))
        msg = resp.msg
        if msg.type != rpc.kind:
            self.stats.mismatched_responses += 1
            self._rpc_failed(rpc, now, out)
            return
        if rpc.op == _VERIFY:
            self.roles.learn(peer, True, now)
        self._seen(peer, now, out)
        op = self._ops.get(rpc.op)
        if op is None:
            return
        if op.phase == _PUTTING:
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
        if op.kind == _PROVIDERS:
            self._take_providers(op, peer, msg, out)
        elif op.kind == _GET:
            self._take_record(op, peer, msg, now)
        lk.on_answer(peer, closer)
        self._advance(op, now, out)

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

    def _take_providers(self, op: _Op, peer: PeerId, msg: KadMessage,
                        out: list[Effect]) -> None:
        infos = msg.provider_peers
        if len(infos) > self.config.k:
            self.stats.peer_lists_truncated += 1
            infos = infos[: self.config.k]
        for info in infos:
            if len(op.found) >= op.count:
                break
            if info.peer not in op.found:
                op.found[info.peer] = info
                if info.addrs:
                    out.append(Emit(PeerAddressesLearned(info.peer, info.addrs)))

    def _take_record(self, op: _Op, peer: PeerId, msg: KadMessage, now: float) -> None:
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

    def _seen(self, peer: PeerId, now: float, out: list[Effect]) -> None:
        probe = self.table.seen(peer, now)
        if probe is not None:
            self._request(probe, KadMessage(MessageType.PING), 0, now, out)

    def _rpc_failed(self, rpc: _Rpc, now: float, out: list[Effect]) -> None:
        if rpc.op == _VERIFY:
            # No kad answer: a client (no handler), or gone. Either way not a contact.
            self.roles.learn(rpc.peer, False, now)
            self.stats.role_checks_failed += 1
            return
        self.table.failed(rpc.peer)
        op = self._ops.get(rpc.op)
        if op is None:
            return
        if op.phase == _PUTTING:
            op.pending -= 1
            if op.pending == 0:
                self._finish(op, Stored(len(op.acked), tuple(op.acked)), out)
            return
        if op.lookup.on_failure(rpc.peer):
            self._advance(op, now, out)

    # ================================================================ timers

    def _on_timer(self, timer: object, now: float, out: list[Effect]) -> None:
        if not isinstance(timer, tuple) or not timer:
            return
        name = timer[0]
        if name == "rpc" and len(timer) == 2:
            rpc = self._rpcs.pop(timer[1], None)
            if rpc is None:
                return  # answered already: stale
            self.stats.rpc_timeouts += 1
            self._rpc_failed(rpc, now, out)
            return
        if name == "sweep" and len(timer) == 2:
            sw = self._sweeps.get(timer[1])
            if sw is not None and sw.timer_at is not None and now >= sw.timer_at:
                sw.timer_at = None
                self._pump(timer[1], now, out)
            return
        due = self._hk.get(name) if isinstance(name, str) else None
        if due is None or now < due:
            return  # stale or unknown
        cfg = self.config
        if name == "refresh":
            self._arm("refresh", now + cfg.refresh_check_s, out)
            self._refresh(now, out)
        elif name == "expire":
            self._arm("expire", now + cfg.expire_interval_s, out)
            self.providers.expire(now)
            self.values.expire(now)
        elif name == "reprovide":
            self._arm("reprovide", now + cfg.reprovide_interval_s, out)
            self._retire_paced_sweeps(now, out)
            if self.provided:
                spread = cfg.reprovide_interval_s if cfg.pace_reprovide else 0.0
                self._sweep(0, dict(self.provided), now, out, spread_s=spread)

    def _refresh(self, now: float, out: list[Effect], force: bool = False) -> None:
        """Refresh stale buckets (Kademlia §2.3): a lookup for a key in each one."""
        cfg = self.config
        interval = -1.0 if force else cfg.refresh_interval_s
        stale = self.table.stale_cpls(now, interval, cfg.max_refresh_cpl)
        if not stale:
            return
        self._start(_REFRESH, 0, self.me.raw, now, out)
        for c in stale:
            # Counted as refreshed even if no key was found: retry next interval, not
            # at every check (deep empty buckets are normal in small networks).
            self.table.touch(c, now)
            key = self._key_in_bucket(c)
            if key is not None:
                self._start(_REFRESH, 0, key, now, out)

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

    # ================================================================ providing (sweep)

    def _provide(self, cmd: Provide, now: float, out: list[Effect]) -> None:
        keys: dict[bytes, int] = {}
        for mh in cmd.keys:
            if not self._valid_mh(mh):
                raise LocalProtocolError("Provide keys must be multihashes")
            if mh not in self.provided and len(self.provided) >= self.config.max_provided_keys:
                self.stats.provided_keys_refused += 1
                continue
            key = self.provided.get(mh)
            if key is None:
                key = self.provided[mh] = key_of_bytes(mh)
            keys[mh] = key
        if "reprovide" not in self._hk:
            self._arm("reprovide", now + self.config.reprovide_interval_s, out)
        self._join_paced_sweeps(keys)
        self._sweep(cmd.request_id, keys, now, out)

    def _join_paced_sweeps(self, keys: dict[bytes, int]) -> None:
        """Add newly provided keys to the reprovide under way when their region has not
        started yet, so none waits almost two intervals for its first reprovide."""
        for sw in self._sweeps.values():
            sw.add_keys(keys)

    def _sweep(self, request_id: int, keys: dict[bytes, int], now: float,
               out: list[Effect], *, spread_s: float = 0.0) -> None:
        """Announce `keys` region by region, spread over `spread_s` (dht/sweep.py)."""
        bits = prov.region_bits(self.table.estimate_network_size(), self.config.k,
                                self.config.region_peers_per_k)
        sid = self._next_op
        self._next_op += 1
        self._sweeps[sid] = Sweep(request_id, keys, bits, now, spread_s)
        self._pump(sid, now, out)

    def _retire_paced_sweeps(self, now: float, out: list[Effect]) -> None:
        """A new reprovide cycle covers every key: regions of the last one that never
        started (the node was too busy) are dropped, running lookups finish."""
        for sid, sw in list(self._sweeps.items()):
            if sw.paced and sw.queue:
                sw.retire()
                self._pump(sid, now, out)

    def _pump(self, sid: int, now: float, out: list[Effect]) -> None:
        """Start due regions while under `sweep_parallelism` lookups; arm the sweep's
        timer for the next region that is not due yet."""
        sw = self._sweeps[sid]
        cfg = self.config
        busy = False
        while sw.running < cfg.sweep_parallelism:
            start = sw.next_start()
            if start is None or start > now:
                break
            if len(self._ops) + 2 > cfg.max_lookups:
                busy = True  # retried when a lookup of ours ends, or by the timer below
                break
            mhs = sw.next_due(now)
            assert mhs is not None  # due: checked above
            if sw.paced:  # stopped since the cycle began: not reprovided
                mhs = [m for m in mhs if m in self.provided]
                if not mhs:
                    continue
            self._explore(sid, sw, mhs, now, out)
        if sid not in self._sweeps:
            return
        at = sw.next_start()
        if at is not None:
            if busy and sw.running == 0:
                at = now + cfg.rpc_timeout_s
            if at > now and sw.timer_at != at:
                sw.timer_at = at
                out.append(SetTimer(("sweep", sid), at))
        elif sw.done():
            del self._sweeps[sid]
            if sw.timer_at is not None:
                out.append(CancelTimer(("sweep", sid)))
            out.append(Emit(ProvideDone(sw.request_id, len(sw.keys), sw.regions, sw.lookups,
                                        sw.messages)))

    def _explore(self, sid: int, sw: Sweep, mhs: list[bytes], now: float,
                 out: list[Effect]) -> None:
        cfg = self.config
        job = Region(mhs)
        # One lookup per half of the region that holds keys, aimed at its median
        # key: together they enumerate the region's peers (docs/dht.md, "Sweep").
        halves = [mhs] if len(mhs) == 1 else [
            part for _, part in prov.group_by_region({m: sw.keys[m] for m in mhs},
                                                     sw.bits + 1)]
        ops: list[_Op] = []
        for part in halves:
            op = self._start(_REGION, 0, part[len(part) // 2], now, out, defer=True,
                             k=cfg.region_lookup_size)
            if op is None:  # pragma: no cover - guarded by the busy check in _pump
                break
            op.sweep = sid
            op.job = job
            ops.append(op)
            job.pending += 1
            sw.running += 1
            sw.lookups += 1
        for op in ops:
            self._advance(op, now, out)

    def _region_done(self, op: _Op, now: float, out: list[Effect]) -> None:
        sid = op.sweep
        job = op.job
        self._finish(op, ClosestPeers(()), out)
        sw = self._sweeps.get(sid)
        if sw is None or job is None:
            return
        sw.running -= 1
        job.pending -= 1
        for p in op.lookup.closest(len(op.lookup)):
            job.peers[p] = None
        if job.pending == 0:
            sw.regions += 1
            me = (PeerInfo(self.me, self.addrs),)
            for mh, targets in prov.assign(sw.keys, job.mhs, list(job.peers), self.config.k):
                msg = KadMessage(MessageType.ADD_PROVIDER, mh, provider_peers=me)
                for p in targets:
                    out.append(Send(p, DhtRequest(0, msg)))
                    sw.messages += 1
        self._pump(sid, now, out)

    # ================================================================ serving

    def _serve(self, peer: PeerId, req: DhtRequest, now: float, out: list[Effect]) -> None:
        if peer == self.me:
            return
        if self.config.mode == "client":
            # kad-dht client mode: we do not serve (the driver should not even accept
            # the stream); the requester's RPC times out and it drops us.
            self.stats.requests_refused_client += 1
            return
        self.stats.requests_served += 1
        self._requester(peer, now, out)
        m = req.msg
        t = m.type
        if t == MessageType.PING:
            reply = KadMessage(MessageType.PING)
        elif t == MessageType.FIND_NODE:
            reply = KadMessage(t, m.key, closer_peers=self._closer(m.key, peer))
        elif t == MessageType.GET_PROVIDERS:
            if not self._valid_mh(m.key):
                self.stats.bad_keys += 1
                return
            n = self.config.max_providers_per_answer
            found = self.providers.get(m.key, now, n)
            if m.key in self.provided and len(found) < n:
                found.append(PeerInfo(self.me, self.addrs))
            reply = KadMessage(t, m.key, closer_peers=self._closer(m.key, peer),
                               provider_peers=tuple(found))
        elif t == MessageType.ADD_PROVIDER:
            self._add_provider(peer, m, now)
            return
        elif t == MessageType.GET_VALUE:
            rec = self.values.get(m.key, now)
            reply = KadMessage(t, m.key,
                               None if rec is None else Record(rec.key, rec.value),
                               closer_peers=self._closer(m.key, peer))
        else:  # PUT_VALUE
            reply = KadMessage(t, m.key, self._put_value(peer, m, now))
        out.append(Send(peer, DhtResponse(req.rid, reply)))

    # ================================================================ client mode

    def _requester(self, peer: PeerId, now: float, out: list[Effect]) -> None:
        """A request is proof of life but not of being a server: kad-dht clients ask
        without answering, and must not enter routing tables (go-libp2p-kad-dht adds only
        peers that speak the kad protocol). A requester already in our table was
        verified by answering us; one we know nothing about gets one PING, and enters
        the table (via `_seen`) only if it answers. docs/dht.md, "Client mode"."""
        if peer in self.table:
            self._seen(peer, now, out)
            return
        server = self.roles.verdict(peer, now)
        if server is not None:
            if server:
                self._seen(peer, now, out)
            return
        if peer in self.roles.checking:
            return
        if self._request(peer, KadMessage(MessageType.PING), _VERIFY, now, out):
            self.roles.checking[peer] = None
            self.stats.role_checks_sent += 1

    def _closer(self, key: bytes, requester: PeerId) -> tuple[PeerInfo, ...]:
        t = self.table
        return tuple(PeerInfo(p, t.addrs(p))
                     for p in t.closest(key_of_bytes(key), self.config.k, exclude=requester))

    def _add_provider(self, peer: PeerId, m: KadMessage, now: float) -> None:
        if not self._valid_mh(m.key):
            self.stats.bad_keys += 1
            return
        for info in m.provider_peers[: self.config.k]:
            if info.peer != peer:
                # Only the sender may announce itself (go-libp2p-kad-dht does the same).
                self.stats.provider_sender_mismatch += 1
                continue
            res = self.providers.add(m.key, peer, info.addrs, now)
            if res in ("stored", "refreshed"):
                self.stats.providers_stored += 1
            else:
                self.stats.provider_refusals += 1

    def _put_value(self, peer: PeerId, m: KadMessage, now: float) -> Record | None:
        """Validate and store; echo the record on success, answer without one otherwise."""
        r = m.record
        if r is None or r.key != m.key or len(r.value) > self.config.max_record_bytes:
            self.stats.records_rejected += 1
            return None
        try:
            rec = self.validators.validate(r.key, r.value, now)
        except (RemoteProtocolError, WireError):
            self.stats.records_rejected += 1
            return None
        res = self.values.put(rec, peer, self.validators, now)
        if res != "stored":
            self.stats.record_store_refusals += 1
            return None
        self.stats.records_stored += 1
        return Record(r.key, r.value)

    @staticmethod
    def _valid_mh(key: bytes) -> bool:
        try:
            split_multihash(key)
        except WireError:
            return False
        return 0 < len(key) <= 128

    # ================================================================ introspection

    def pending_rpcs(self) -> int:
        return len(self._rpcs)

    def running_lookups(self) -> int:
        return len(self._ops)

    def table_snapshot(self, now: float, limit: int = 1024) -> list[tuple[PeerInfo, float]]:
        """Routing-table entries as (peer info, seconds since last heard), freshest first.

        For persistence (DESIGN §9): the daemon saves this and, at the next start, hands
        each entry back as `AddPeer`, so it re-enters the table only once it answers a
        PING (entries come from real traffic, §5): a peer gone meanwhile costs one PING,
        never a lookup timeout.
        """
        rows: list[tuple[PeerInfo, float]] = []
        for c in self.table.bucket_cpls():
            b = self.table.bucket(c)
            assert b is not None
            for peer, seen in zip(b.peers, b.seen_at, strict=True):
                rows.append((PeerInfo(peer, self.table.addrs(peer)), max(0.0, now - seen)))
        rows.sort(key=lambda r: r[1])
        return rows[:limit]


def _empty_result(kind: int) -> Result:
    if kind == _PROVIDERS:
        return Providers((), ())
    if kind == _GET:
        return Value(None, 0, None, 0)
    if kind == _PUT:
        return Stored(0, ())
    return ClosestPeers(())
