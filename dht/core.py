"""The Kademlia sans-IO core: `Kademlia.handle(inp, now) -> list[Effect]`.

Inputs: `Received(peer, DhtRequest | DhtResponse)`, `TimerFired`, `PeerUnreachable`
and the commands in dht.api. Effects: `Send(peer, DhtRequest | DhtResponse)`,
`SetTimer`/`CancelTimer` (absolute deadlines), `Emit(LookupDone | ProvideDone |
BootstrapDone | PeerAddressesLearned)`.

This module routes inputs; the rules live with their concern:
- dht/ops.py: the ops (one class per kind) and the pending RPCs (rids, timeouts);
- dht/lookup_runner.py: iterative lookups for the ops, their results, bucket refresh;
- dht/serve.py: the reply to each request type (a function of the request and state);
- dht/reprovide.py: `Provide`, the 22 h reprovide cycle and its sweeps;
- dht/routing_table.py, dht/providers.py, dht/records.py: the state.

Rules kept here (Maymounkov & Mazières 2002; libp2p kad-dht spec):
- An answer must come from the peer asked, with the same message type; anything else
  is counted and dropped. A timeout or `PeerUnreachable` fails the request: the lookup
  moves on and the routing table counts the failure.
- Any message from a peer is proof of life (`RoutingTable.seen`); a full bucket makes
  the core PING the least-recently-seen entry, which is evicted only if that fails.
- A requester enters the table only once it has answered us (client mode).
- Inbound requests pass a per-peer token bucket first (dht/rate_limit.py); over the
  limit they are dropped unanswered, before any table or store work, and counted.
- Housekeeping timers: ("refresh",) bucket refresh, ("reprovide",) 22 h sweep,
  ("expire",) record expiry. A stale TimerFired (earlier than the deadline we set, or
  for an rpc no longer pending) is ignored.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from dht.api import (
    AddPeer,
    Bootstrap,
    FindNode,
    GetProviders,
    GetValue,
    KadConfig,
    ModeChanged,
    PeerAddressesLearned,
    PeerRoleLearned,
    Provide,
    ProvidersFound,
    PutValue,
    ReachabilityLearned,
    RequestFailed,
    StopProviding,
)
from dht.labels import default_validators
from dht.lookup_runner import LookupRunner
from dht.ops import NO_OP, VERIFY_OP, BootstrapOp, FindOp, GetOp, ProvidersOp, PutOp, Rpc, RpcTable
from dht.providers import ProviderLimits, ProviderStore, is_provider_key
from dht.rate_limit import PeerRateLimiter
from dht.records import Validators, ValueStore, ValueStoreLimits
from dht.reprovide import Reprovider
from dht.roles import RequesterRoles
from dht.routing_table import RoutingTable
from dht.serve import ServeState, serve
from dht.stats import DhtStats
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from overlay.core.effects import (
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError, RemoteProtocolError
from overlay.core.ids import PeerId

if TYPE_CHECKING:
    import random


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
        self.validators = validators or default_validators()
        self.providers = ProviderStore(
            replace(provider_limits or ProviderLimits(), ttl_s=cfg.provider_ttl_s))
        self.values = ValueStore(value_limits)
        self.stats = DhtStats()
        #: multihash → dht key of what we provide; bounded by max_provided_keys.
        self.provided: dict[bytes, int] = {}
        self.rpcs = RpcTable(cfg, self.stats)
        self.lookups = LookupRunner(me, cfg, table=self.table, rpcs=self.rpcs,
                                    stats=self.stats, validators=self.validators, rng=rng)
        self.reprovider = Reprovider(me, addrs, cfg, table=self.table, lookups=self.lookups,
                                     stats=self.stats, provided=self.provided)
        self._serving = ServeState(me, addrs, cfg, self.table, self.providers, self.values,
                                   self.validators, self.provided, self.stats)
        #: Server/client verdicts on requesters not in our table (client mode).
        self.roles = RequesterRoles(cfg.max_role_checks, cfg.role_check_ttl_s)
        #: Per-peer token buckets for inbound requests.
        self.limiter = PeerRateLimiter(cfg.request_burst, cfg.request_rate_per_s,
                                       cfg.max_rate_limited_peers)
        #: Whether we answer requests: mode "server", or "auto" until told we are unreachable.
        self.serving = cfg.mode != "client"
        #: Deadlines of the ("refresh",) and ("expire",) timers, to recognise stale firings.
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
            for rpc in self.rpcs.drop_peer(inp.peer, out):
                self._rpc_failed(rpc, now, out)
        else:
            self._command(inp, now, out)
        return out

    def _arm(self, name: str, at: float, out: list[Effect]) -> None:
        self._hk[name] = at
        out.append(SetTimer((name,), at))

    # ================================================================ commands

    def _command(self, cmd: object, now: float, out: list[Effect]) -> None:
        if isinstance(cmd, FindNode):
            self.lookups.start(FindOp, cmd.request_id, cmd.key, now, out)
        elif isinstance(cmd, GetProviders):
            self._get_providers(cmd, now, out)
        elif isinstance(cmd, GetValue):
            self._get_value(cmd, now, out)
        elif isinstance(cmd, PutValue):
            self._put_value(cmd, now, out)
        elif isinstance(cmd, Provide):
            self.reprovider.provide(cmd, now, out)
        elif isinstance(cmd, StopProviding):
            for mh in cmd.keys:
                self.provided.pop(mh, None)
        elif isinstance(cmd, PeerRoleLearned):
            self.roles.learn(cmd.peer, cmd.server, now)
            if not cmd.server:
                self.table.remove(cmd.peer)
        elif isinstance(cmd, RequestFailed):
            rpc = self.rpcs.fail(cmd.rid, cmd.peer, out)
            if rpc is not None:
                self._rpc_failed(rpc, now, out)
        elif isinstance(cmd, ReachabilityLearned):
            if self.config.mode == "auto" and cmd.reachable != self.serving:
                self.serving = cmd.reachable
                self.stats.mode_changes += 1
                out.append(Emit(ModeChanged(self.serving)))
        elif isinstance(cmd, AddPeer):
            if cmd.addrs:
                out.append(Emit(PeerAddressesLearned(cmd.peer, cmd.addrs)))
            if cmd.peer != self.me:
                self.rpcs.request(cmd.peer, KadMessage(MessageType.PING), NO_OP, now, out)
        elif isinstance(cmd, Bootstrap):
            self._bootstrap(cmd, now, out)
        else:
            raise LocalProtocolError(f"unknown DHT command {type(cmd).__name__}")

    def _get_providers(self, cmd: GetProviders, now: float, out: list[Effect]) -> None:
        if not is_provider_key(cmd.key):
            raise LocalProtocolError("GetProviders key must be a multihash")
        op = self.lookups.start(ProvidersOp, cmd.request_id, cmd.key, now, out, defer=True)
        if op is None:  # refused ("busy"): its LookupDone is out; nothing will follow
            out.append(Emit(ProvidersFound(cmd.request_id, (), last=True)))
            return
        op.count = cmd.count or self.config.get_providers_count
        if cmd.key in self.provided:
            op.found[self.me] = PeerInfo(self.me, self.addrs)
        for info in self.providers.get(cmd.key, now, op.count):
            op.found.setdefault(info.peer, info)
        if op.found:  # what we know already, at once: a fetch can start with it
            out.append(Emit(ProvidersFound(cmd.request_id, tuple(op.found.values()))))
        self.lookups.advance(op, now, out)

    def _get_value(self, cmd: GetValue, now: float, out: list[Effect]) -> None:
        op = self.lookups.start(GetOp, cmd.request_id, cmd.key, now, out, defer=True)
        if op is not None:
            op.count = cmd.quorum or self.config.get_value_quorum
            local = self.values.get(cmd.key, now)
            if local is not None:
                op.best, op.valid = local, 1
            self.lookups.advance(op, now, out)

    def _put_value(self, cmd: PutValue, now: float, out: list[Effect]) -> None:
        try:
            rec = self.validators.validate(cmd.key, cmd.value, now)
        except RemoteProtocolError as e:
            raise LocalProtocolError(f"PutValue of an invalid record: {e}") from None
        self.values.put(rec, self.me, self.validators, now)
        op = self.lookups.start(PutOp, cmd.request_id, cmd.key, now, out, defer=True)
        if op is not None:
            op.record = rec
            self.lookups.advance(op, now, out)

    def _bootstrap(self, cmd: Bootstrap, now: float, out: list[Effect]) -> None:
        seeds = []
        for info in cmd.peers:
            if info.peer == self.me:
                continue
            seeds.append(info.peer)
            if info.addrs:
                out.append(Emit(PeerAddressesLearned(info.peer, info.addrs)))
        self.lookups.start(BootstrapOp, cmd.request_id, self.me.raw, now, out, seeds=seeds)

    # ================================================================ responses

    def _on_response(self, peer: PeerId, resp: DhtResponse, now: float,
                     out: list[Effect]) -> None:
        rpc = self.rpcs.answered(peer, resp.rid, now, out)
        if rpc is None:
            return
        msg = resp.msg
        if msg.type != rpc.kind:
            self.stats.mismatched_responses += 1
            self._rpc_failed(rpc, now, out)
            return
        if rpc.op == VERIFY_OP:
            self.roles.learn(peer, True, now)
        self._seen(peer, now, out)
        self.lookups.on_answer(rpc.op, peer, msg, now, out)

    def _seen(self, peer: PeerId, now: float, out: list[Effect]) -> None:
        probe = self.table.seen(peer, now)
        if probe is not None:
            self.rpcs.request(probe, KadMessage(MessageType.PING), NO_OP, now, out)

    def _rpc_failed(self, rpc: Rpc, now: float, out: list[Effect]) -> None:
        if rpc.op == VERIFY_OP:
            # No kad answer: a client (no handler), or gone. Either way not a contact.
            self.roles.learn(rpc.peer, False, now)
            self.stats.role_checks_failed += 1
            return
        self.table.failed(rpc.peer)
        self.lookups.on_failure(rpc.op, rpc.peer, now, out)

    # ================================================================ timers

    def _on_timer(self, timer: object, now: float, out: list[Effect]) -> None:
        if not isinstance(timer, tuple) or not timer:
            return
        name = timer[0]
        if name == "rpc" and len(timer) == 2:
            fired = self.rpcs.timed_out(timer[1], now, out)
            if fired is None:  # answered already: stale
                return
            rpc, soft = fired
            if soft:
                self.lookups.on_stall(rpc.op, rpc.peer, now, out)
            else:
                self._rpc_failed(rpc, now, out)
            return
        if name == "sweep" and len(timer) == 2:
            self.reprovider.on_sweep_timer(timer[1], now, out)
            return
        if name == "reprovide":
            self.reprovider.on_cycle_timer(now, out)
            return
        due = self._hk.get(name) if isinstance(name, str) else None
        if due is None or now < due:
            return  # stale or unknown
        cfg = self.config
        if name == "refresh":
            self._arm("refresh", now + cfg.refresh_check_s, out)
            self.lookups.refresh(now, out)
        elif name == "expire":
            self._arm("expire", now + cfg.expire_interval_s, out)
            self.providers.expire(now)
            self.values.expire(now)

    # ================================================================ serving

    def _serve(self, peer: PeerId, req: DhtRequest, now: float, out: list[Effect]) -> None:
        if peer == self.me:
            return
        if not self.serving:
            # kad-dht client mode: we do not serve (the driver should not even accept
            # the stream); the requester's RPC fails and it drops us.
            self.stats.requests_refused_client += 1
            return
        if not self.limiter.allow(peer, now):
            self.stats.requests_rate_limited += 1
            return
        self.stats.rate_limit_buckets_dropped = self.limiter.dropped
        self.stats.requests_served += 1
        self._requester(peer, now, out)
        reply = serve(peer, req.msg, now, self._serving)
        if reply is not None:
            out.append(Send(peer, DhtResponse(req.rid, reply)))

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
        if not self.table.has_room(peer):
            # Its bucket is full, so even a verified server would only wait in the
            # replacement cache; verifying it now would cost every server it asks one
            # PING per new requester (two thirds of a lookup's messages in a converged
            # network). Replacements come from peers that answered us instead, as in
            # Kademlia §4.1's lazy probing.
            self.stats.role_checks_skipped_full += 1
            return
        if self.rpcs.request(peer, KadMessage(MessageType.PING), VERIFY_OP, now, out):
            self.roles.checking[peer] = None
            self.stats.role_checks_sent += 1

    # ================================================================ introspection

    def pending_rpcs(self) -> int:
        return len(self.rpcs)

    def running_lookups(self) -> int:
        return len(self.lookups)

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
