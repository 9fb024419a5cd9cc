"""SWIM failure detection with Lifeguard, signed membership, as one sans-IO core.

Papers: Das, Gupta, Motivala, "SWIM" (DSN 2002) §3–4; Dadgar, Phillips, Currey,
"Lifeguard: Local Health Awareness for More Accurate Failure Detection" (arXiv
1707.00788) §IV. Structure follows hashicorp/memberlist state.go.

Every `probe_interval × health` one member is probed, round-robin over a shuffled list
(SWIM §4.3). No ack within `probe_timeout × health` → `indirect_checks` members are
asked to probe it (ping-req); they nack if they get no ack (Lifeguard §IV-A). No ack by
the end of the interval → the prober signs a suspicion. A suspicion expires into a
death notice after a timeout that shrinks with independent confirmations (Lifeguard
§IV-B, gossip/suspicion.py). The suspect refutes with a higher incarnation — which only
it can sign. Probing a suspect first tells it (buddy system, Lifeguard §IV-C).

Trust beyond memberlist: alive claims are signed by their subject, accusations by
their accuser (a known member, rate-limited per accuser), ads and user events by their
owner. Signatures are checked (through a cache) before any state changes, and only
for claims that would change state; stale claims are dropped unverified.

Colony mode (`admission` given, gossip/admission.py, DESIGN §3): an alive claim is
accepted only with a certificate chain granting ``member`` in this colony; messages
from peers that are not members are refused (a push-pull may carry the sender's own
certified claim: that is how a node joins); nothing is sent to a non-member except a
joiner's own claim to its seeds. A member whose chain expires or is revoked is
expelled. Revocations travel as signed updates and in push-pull. Every refusal is
counted and reported (`MemberRefused`, rate-limited per peer) with its reason.

Layout: `Swim` is the composition root of the core. It holds the entry point
(`handle`), the commands, the timer and message dispatch and the member queries, and
wires plain collaborators that each own their state:

    LocalNode        our keys, claims, lifecycle flags, ad chain   (local_node.py)
    MemberTable      members, probe order, live count              (member_table.py)
    Transitions      every alive/suspect/dead/left/refute rule     (transitions.py)
    ColonyGate       admission, refusals, revocations, expiry      (colony_gate.py)
    Prober           probe rounds, ping/ack/nack/ping-req, RTT     (prober.py)
    Dissemination    broadcast queues, piggyback, gossip rounds    (dissemination.py)
    Ads              our ad chain and the members' ad chains       (dissemination.py)
    UserEventGossip  user events: send, verify, ordered delivery   (user_event_gossip.py)
    AntiEntropy      push-pull exchange and merge order            (push_pull.py)

Collaborators return outcomes (a failed probe target, members to expel, a learned
revocation) and `Swim` carries out the steps that span several of them (expulsion,
reaping). They share one rng, drawn in a fixed order, and one `stats` dict.

Invariants: own incarnation never decreases; member incarnations never decrease
(except by reaping); every map/queue is bounded and overflow is counted in `stats`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from typing import Any, ClassVar

from gossip.admission import Admission
from gossip.awareness import Awareness
from gossip.cell import Cell
from gossip.cells import CellId, cell_key
from gossip.claim_verifier import Verifier
from gossip.colony_gate import ColonyGate
from gossip.coordinates import Coord
from gossip.counters import count
from gossip.dissemination import Ads, Dissemination
from gossip.events import (
    Join,
    KeepCell,
    Leave,
    LeftColony,
    MemberLeftCell,
    MemberReaped,
    PublishRevocation,
    SendUserEvent,
    UpdateAd,
    UserEventSent,
)
from gossip.local_node import LocalNode
from gossip.member_table import MemberTable
from gossip.members import LIVE, MemberInfo
from gossip.messages import (
    Accuse,
    Ack,
    AdUpdate,
    Alive,
    Gossip,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Revoke,
    Update,
    UserEvent,
)
from gossip.prober import Prober
from gossip.profiles import LAN, SwimConfig
from gossip.push_pull import AntiEntropy
from gossip.resources import Query, ResourceAd
from gossip.transitions import Transitions
from gossip.user_event_gossip import UserEventGossip
from overlay.core.crypto import Envelope, KeyPair
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
from overlay.core.errors import BadSignature, LocalProtocolError, WireError
from overlay.core.ids import PeerId

__all__ = ["Swim"]


class Swim:
    """The gossip core. `handle(inp, now) -> list[Effect]`; see docs/gossip.md."""

    #: The timers `quick_tick` may answer for (None for any other).
    QUICK_TIMERS: ClassVar[tuple[str, ...]] = ("gossip",)

    def __init__(
        self,
        keys: KeyPair,
        config: SwimConfig = LAN,
        *,
        rng: random.Random,
        ad: ResourceAd | None = None,
        addrs: tuple[str, ...] = (),
        initial_incarnation: int = 0,
        verifier: Verifier | None = None,
        admission: Admission | None = None,
        chain: tuple[Envelope, ...] = (),
    ) -> None:
        self.config = config
        self.rng = rng
        self.stats: dict[str, int] = {}
        self.stopped = False
        # `is None`, not `or`: an empty shared Verifier is falsy (it has a length).
        self.verifier = Verifier(config.verify_cache_size) if verifier is None else verifier
        self.awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        stats = self.stats
        local = self.local = LocalNode(
            keys, tuple(addrs[: config.max_addrs]), initial_incarnation, tuple(chain), ad
        )
        table = self.table = MemberTable()
        spread = self.spread = Dissemination(config, table, rng)
        gate = self.gate = ColonyGate(admission, local, table, spread.bq, config, stats)
        cell = Cell(local, table, gate, config, rng, stats)
        self.transitions = Transitions(cell, bq=spread.bq, awareness=self.awareness,
                                       verifier=self.verifier)  # fmt: skip
        self.prober = Prober(cell, spread=spread, awareness=self.awareness)
        self.ads = Ads(local, table, spread.bq, config, self.verifier, stats)
        self.user_events = UserEventGossip(local, table, spread.uq, config, self.verifier, stats)
        self.anti_entropy = AntiEntropy(cell)
        # The broadcast queues' key → item dicts (never replaced), for `quick_tick`.
        self._bq_index = spread.bq._index
        self._uq_index = spread.uq._index
        self._has_held = self.user_events.orderer.has_held
        #: The orderer's sender dict (never replaced): no sender, nothing held.
        self._event_senders = self.user_events.orderer._senders

    # ================================================================ entry point

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self.stopped:
            count(self.stats, "input_after_leave")
            return out
        if isinstance(inp, Received):
            self._on_message(inp.peer, inp.msg, now, out)
        elif isinstance(inp, TimerFired):
            self._on_timer(inp.timer, now, out)
        elif isinstance(inp, PeerUnreachable):
            count(self.stats, "peer_unreachable")
        elif isinstance(inp, Join):
            self._join(inp.seeds, now, out)
        elif isinstance(inp, Leave):
            self._leave(now, out)
        elif isinstance(inp, UpdateAd):
            self.ads.update(inp.ad)
        elif isinstance(inp, SendUserEvent):
            e = self.user_events.send(inp.name, inp.payload, now)
            out.append(Emit(UserEventSent(e.sender, e.name, e.payload, e.lamport, e.seq, e.env)))
        elif isinstance(inp, PublishRevocation):
            self._publish_revocation(inp.envelope, now, out)
        elif isinstance(inp, KeepCell):
            self._keep_cell(inp.cell, out)
        else:
            raise LocalProtocolError(f"gossip core does not take {type(inp).__name__}")
        return out

    def quick_tick(self, timer: Hashable, now: float) -> float | None:
        """The deadline `timer` is re-armed at if firing it now would do nothing else,
        else None (then the caller hands `TimerFired(timer)` to `handle`).

        The gossip tick (five a second in the lan profile, most of a simulation's
        events) is idle whenever both broadcast queues are empty and no user event is
        held back: `handle` would only re-arm it. This lets a driver skip building
        the input and effect objects; state, rng draws and counters are exactly those
        of `handle` (it changes nothing on such a tick). While idle the answer is
        `now + gossip_interval_s`, a constant interval: the simulator's parked ticks
        (sim/world.py) rely on that to compute the deadlines they skip."""
        # Asked after every input to a node whose tick is parked: the queues' index
        # dicts are read directly (`len()` on the queue is a Python call each).
        if (
            timer != "gossip"
            or self.stopped
            or self._bq_index
            or self._uq_index
            or (self._event_senders and self._has_held())
        ):
            return None
        return now + self.config.gossip_interval_s

    # ================================================================ commands

    def _join(self, seeds: tuple[PeerId, ...], now: float, out: list[Effect]) -> None:
        me, c = self.local, self.config
        ae = self.anti_entropy
        ae.seeds = tuple(s for s in seeds if s != me.me)[: c.max_seeds]
        ae.joined = False
        if not me.started:
            me.started = True
            out.append(SetTimer("probe", now + self.rng.uniform(0, c.probe_interval_s)))
            out.append(SetTimer("gossip", now + self.rng.uniform(0, c.gossip_interval_s)))
            out.append(SetTimer("pushpull", now + ae.interval()))
            self.spread.bq.queue(("m", me.me), me.alive)
            if me.ad is not None:
                self.ads.publish(me.ad, full=True)
        for seed in ae.seeds:
            ae.send(seed, reply=True, join=True, out=out)

    def _leave(self, now: float, out: list[Effect]) -> None:
        if not self.local.started:
            self.stopped = True
            out.append(Emit(LeftColony()))
            return
        if self.local.leaving:
            return
        left = self.transitions.leave()
        for peer in self.table.sample(self.config.gossip_nodes, LIVE, self.rng):
            out.append(Send(peer, Gossip((left,))))
        out.append(CancelTimer("probe"))
        out.append(CancelTimer("probe-timeout"))
        out.append(SetTimer("leave", now + self.config.leave_propagate_s))

    def _publish_revocation(self, env: Envelope, now: float, out: list[Effect]) -> None:
        r = self.gate.parse_revocation(env)
        refused = self._on_revoke(r, now, out, local=True)
        if refused is not None:
            raise LocalProtocolError(f"revocation refused: {refused}")

    # ================================================================ timers

    def _on_timer(self, timer: Hashable, now: float, out: list[Effect]) -> None:
        # Most frequent first: the gossip tick (5 per second in the lan profile).
        if timer == "gossip":
            out.append(SetTimer("gossip", now + self.config.gossip_interval_s))
            self.user_events.expire(now, out)
            self.spread.gossip_round(now, out)
        elif timer == "probe":
            failed = self.prober.conclude()
            if failed is not None:
                self.transitions.probe_failed(failed, now, out)
            self.prober.start_round(now, out)
        elif timer == "probe-timeout":
            self.prober.probe_timeout(out)
        elif timer == "pushpull":
            out.append(SetTimer("pushpull", now + self.anti_entropy.interval()))
            self._reap(now, out)
            self.anti_entropy.exchange(now, out)
        elif timer == "cert-expiry":
            self.gate.expiry_at = math.inf
            self._recheck_members(now, out, only_expired=True)
        elif timer == "leave":
            self.stopped = True
            out.extend(CancelTimer(t) for t in ("gossip", "pushpull"))
            out.append(Emit(LeftColony()))
        elif isinstance(timer, tuple) and len(timer) == 2 and timer[0] == "suspect":
            self.transitions.suspicion_expired(timer[1], now, out)
        elif isinstance(timer, tuple) and len(timer) == 2 and timer[0] == "relay":
            self.prober.relay_expired(timer[1], out)
        else:
            count(self.stats, "unknown_timer")

    # ================================================================ messages

    def _on_message(self, peer: PeerId, msg: Any, now: float, out: list[Effect]) -> None:
        gate = self.gate
        if gate.admission is not None and peer != self.local.me:
            # Colony mode: only members talk to us. A message may admit its sender
            # through the sender's own certified claim inside it (push-pull record, or
            # the alive a member piggybacks on its first pings: `ColonyGate.introduce`);
            # everything else from a non-member is refused.
            if peer not in self.table and not self._admit_sender(peer, msg, now, out):
                count(self.stats, "refused_non_member")
                gate.refuse(peer, gate.refusal_reason(peer), now, out)
                notice = gate.notice_for(peer, msg, now)
                if notice is not None:  # tell a revoked node why, signed
                    count(self.stats, "revocation_notice_sent")
                    out.append(Send(peer, Gossip((notice,))))
                return
            gate.heard.add(peer)
        prober = self.prober
        # Most pings and acks of a settled cell carry no updates: no call for those.
        if isinstance(msg, Ping):
            if msg.updates:
                self._apply_updates(msg.updates, now, out)
            prober.on_ping(peer, msg, out)
        elif isinstance(msg, Ack):
            if msg.updates:
                self._apply_updates(msg.updates, now, out)
            prober.on_ack(peer, msg, now, out)
        elif isinstance(msg, Nack):
            prober.on_nack(peer, msg)
        elif isinstance(msg, PingReq):
            self._apply_updates(msg.updates, now, out)
            prober.on_ping_req(peer, msg, now, out)
        elif isinstance(msg, Gossip):
            self._apply_updates(msg.updates, now, out)
        elif isinstance(msg, PushPull):
            self._on_push_pull(peer, msg, now, out)
        else:
            count(self.stats, "unknown_message")

    def _admit_sender(self, peer: PeerId, msg: Any, now: float, out: list[Effect]) -> bool:
        """A message from a non-member: admit the sender through its own alive claim
        in it, if it carries one."""
        own = self.gate.own_claim(peer, msg)
        if own is None:
            return False
        # Its revocations wait until it is admitted (`_on_push_pull`): an outsider
        # must not be able to fill the bounded revocation list.
        self._apply_update(own, now, out, merge=True)
        return peer in self.table

    def _apply_updates(self, updates: tuple[Update, ...], now: float, out: list[Effect]) -> None:
        # Ads last, oldest version first. The broadcast queue sends newest first, and a
        # delta applies only on top of exactly its base (gossip/dissemination.py): two
        # deltas of one owner queued within a gossip interval (a load refresh, then the
        # reachability) arrived newest first, the newer was dropped as a gap, and every
        # member kept the older ad until push-pull (60 s in the edge profile). Last
        # also puts an ad after its owner's alive claim, as push-pull merges them.
        #
        # Stale alive claims (the very object the table holds: the simulator passes
        # claims by reference) are `Transitions.on_alive`'s first, stale path, taken
        # here without the calls: after a join every member relays the joiner's claim
        # `retransmit_limit` times, so most updates a cell receives are these. Their
        # count is added to `stats` before anything else can touch it (the key order
        # one count at a time gives), as `AntiEntropy.merge` does.
        if not updates:  # most pings and acks of a settled cell carry none
            return
        slot_of, alive_col = self.table.alive_lookup()
        stats = self.stats
        stale = 0
        ads: list[AdUpdate] | None = None
        for u in updates:
            t = type(u)
            if t is Alive:
                i = slot_of(u.peer.raw)  # type: ignore[union-attr]
                if i is not None and alive_col[i] is u:
                    stale += 1
                    continue
            elif t is AdUpdate or isinstance(u, AdUpdate):
                if ads is None:
                    ads = [u]  # type: ignore[list-item]
                else:
                    ads.append(u)  # type: ignore[arg-type]
                continue
            if stale:
                stats["stale_alive"] = stats.get("stale_alive", 0) + stale
                stale = 0
            self._apply_update(u, now, out, merge=False)
        if stale:
            stats["stale_alive"] = stats.get("stale_alive", 0) + stale
        if ads is not None:
            ads.sort(key=lambda u: u.version)  # stable, as `sorted` was
            for u in ads:
                self._apply_update(u, now, out, merge=False)

    def _apply_update(self, u: Any, now: float, out: list[Effect], *, merge: bool) -> None:
        """Apply one signed update (alive, accusation, ad, user event, revocation)."""
        try:
            if isinstance(u, Alive):
                self.transitions.on_alive(u, now, out)
            elif isinstance(u, Accuse):
                self.transitions.on_accuse(u, now, out, merge=merge)
            elif isinstance(u, AdUpdate):
                self.ads.on_ad(u, out)
            elif isinstance(u, UserEvent):
                self.user_events.on_event(u, now, out)
            elif isinstance(u, Revoke):
                self._on_revoke(u, now, out)
            else:
                count(self.stats, "unknown_update")
        except BadSignature:
            count(self.stats, "bad_signature")
        except WireError:
            count(self.stats, "malformed_update")

    def _on_push_pull(self, peer: PeerId, msg: PushPull, now: float, out: list[Effect]) -> None:
        count(self.stats, "push_pull_received")
        ae = self.anti_entropy
        if not ae.joined and peer in ae.seeds:
            ae.joined = True
        for rv in msg.revocations:  # before the claims they may invalidate
            self._on_revoke(rv, now, out)
        ae.merge(msg, lambda u: self._apply_update(u, now, out, merge=True))
        if ae.should_reply(peer, msg):
            ae.send(peer, reply=False, join=False, out=out)

    # ================================================================ leaving the table

    def _on_revoke(
        self, r: Revoke, now: float, out: list[Effect], *, local: bool = False
    ) -> str | None:
        """Apply a revocation; None if it is (now or already) in force, else why not."""
        learned, refused = self.gate.on_revoke(r, now, out, local=local)
        if learned:
            self._recheck_members(now, out, only_expired=False)
        return refused

    def _recheck_members(self, now: float, out: list[Effect], *, only_expired: bool) -> None:
        """Expel members whose chain expired (timer) or no longer verifies (after a
        revocation), then re-arm the expiry timer at the earliest remaining expiry."""
        for p, reason in self.gate.to_expel(now, only_expired=only_expired):
            m = self.table.remove(p)
            self.transitions.forget(p, out)
            self.prober.forget(p)
            self.gate.expelled(p, m.alive.chain, reason, now, out)
        self.gate.rearm_expiry(out)

    def _keep_cell(self, cell: CellId | None, out: list[Effect]) -> None:
        """Restrict membership to `cell` (a split): drop the members outside it."""
        self.transitions.cell = cell
        if cell is None:
            return
        for p in [p for p in self.table if not cell.contains(cell_key(p))]:
            self.table.remove(p)
            self.transitions.forget(p, out)
            self.prober.forget(p)
            self.gate.heard.discard(p)
            out.append(Emit(MemberLeftCell(p, cell)))
        count(self.stats, "cell_changes")

    def _reap(self, now: float, out: list[Effect]) -> None:
        gone = self.table.reap(now - self.config.tombstone_s)
        for p in gone:
            self.gate.heard.discard(p)
            self.prober.forget(p)
            out.append(Emit(MemberReaped(p)))
        if gone:
            count(self.stats, "reaped", len(gone))
        dropped = self.table.tombstones_dropped - self.stats.get("tombstones_dropped", 0)
        if dropped:
            count(self.stats, "tombstones_dropped", dropped)

    # ================================================================ members API

    @property
    def members(self) -> MemberTable:
        """Known members (never this node), a read-only mapping peer -> `Member`."""
        return self.table

    @property
    def me(self) -> PeerId:
        return self.local.me

    @property
    def keys(self) -> KeyPair:
        return self.local.keys

    @property
    def addrs(self) -> tuple[str, ...]:
        return self.local.addrs

    @property
    def chain(self) -> tuple[Envelope, ...]:
        return self.local.chain

    @property
    def incarnation(self) -> int:
        return self.local.incarnation

    @property
    def ad(self) -> ResourceAd | None:
        return self.local.ad

    @property
    def started(self) -> bool:
        return self.local.started

    @property
    def leaving(self) -> bool:
        return self.local.leaving

    @property
    def admission(self) -> Admission | None:
        return self.gate.admission

    @property
    def coord(self) -> Coord:
        return self.prober.coord

    def num_members(self) -> int:
        """Live members (alive or suspect), this node included."""
        return self.table.n_live

    def member(self, peer: PeerId) -> MemberInfo | None:
        if peer == self.local.me:
            return self.local.info(self.prober.coord)
        m = self.table.get(peer)
        if m is None:
            return None
        return MemberInfo(
            peer,
            m.state,
            m.incarnation,
            m.alive.addrs,
            m.ad,
            m.ad_version,
            m.since,
            self.prober.rtt_estimate(peer),
            self.prober.coord_of(peer),
        )

    def list_members(self, *, include_gone: bool = False) -> list[MemberInfo]:
        out = [self.local.info(self.prober.coord)]
        for p, m in self.table.items():
            if include_gone or m.state in LIVE:
                info = self.member(p)
                if info is not None:
                    out.append(info)
        return out

    def find(self, query: Query) -> list[PeerId]:
        """Live members (self included) whose latest ad matches `query`."""
        me = self.local
        found = [me.me] if not me.leaving and query.matches(me.ad) else []
        found.extend(p for p, m in self.table.items() if m.state in LIVE and query.matches(m.ad))
        return found

    def rtt_estimate(self, peer: PeerId) -> float | None:
        """Measured RTT (EWMA) if we probed `peer`, else the Vivaldi prediction."""
        return self.prober.rtt_estimate(peer)

    def queue_sizes(self) -> dict[str, int]:
        return {
            "broadcasts": len(self.spread.bq),
            "user_events": len(self.spread.uq),
            "relays": len(self.prober.relays),
            "suspicions": len(self.transitions.suspicions),
            "event_senders": len(self.user_events.orderer),
            "held_events": self.user_events.orderer.held_count(),
            "accusers": len(self.transitions.limiter),
            "verify_cache": len(self.verifier),
            "coords": len(self.prober.coords),
            "rtts": len(self.prober.rtt),
        }
