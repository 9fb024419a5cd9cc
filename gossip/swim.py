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

Invariants: own incarnation never decreases; member incarnations never decrease
(except by reaping); every map/queue is bounded and overflow is counted in `stats`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from typing import Any

from gossip import coordinates
from gossip.admission import Admission, who
from gossip.awareness import Awareness
from gossip.broadcast_queue import BroadcastQueue, retransmit_limit, take_split
from gossip.coordinates import Coord
from gossip.events import (
    Join,
    Leave,
    LeftColony,
    MemberExpelled,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRefused,
    MemberSuspected,
    MemberUpdated,
    PublishRevocation,
    RevocationLearned,
    SendUserEvent,
    UpdateAd,
    UserEventReceived,
)
from gossip.members import Member, MemberInfo, MemberState
from gossip.messages import (
    KIND_ACCUSE,
    KIND_AD,
    KIND_ALIVE,
    KIND_EVENT,
    MAX_PUSH_PULL_REVOCATIONS,
    MAX_USER_PAYLOAD_BYTES,
    Accuse,
    AccuseKind,
    Ack,
    AdUpdate,
    Alive,
    Gossip,
    MemberRecord,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Revoke,
    Update,
    UserEvent,
    check_event,
    update_size,
)
from gossip.profiles import LAN, SwimConfig
from gossip.resources import Query, ResourceAd
from gossip.suspicion import Suspicion, suspicion_timeout_s
from gossip.trust import AccuserLimiter, Verifier
from gossip.user_events import EventOrderer
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

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
RTT_ALPHA = 0.2


class _Probe:
    __slots__ = ("acked", "expected_nacks", "helpers", "nacks", "sent", "seq", "target")

    def __init__(self, seq: int, target: PeerId, sent: float) -> None:
        self.seq = seq
        self.target = target
        self.sent = sent
        self.acked = False
        self.helpers: tuple[PeerId, ...] = ()
        self.expected_nacks = 0
        self.nacks: set[PeerId] = set()  # membership tests only, never iterated


def push_pull_scale(interval_s: float, n: int) -> float:
    """memberlist util.go: back push-pull off logarithmically above 32 members."""
    if n <= 32:
        return interval_s
    return interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)


class Swim:
    """The gossip core. `handle(inp, now) -> list[Effect]`; see docs/gossip.md."""

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
        self.keys = keys
        self.me = keys.peer_id
        self.config = config
        self.rng = rng
        self.addrs = tuple(addrs[: config.max_addrs])
        self.incarnation = initial_incarnation
        #: Colony mode gate (None: open mode) and our own certificate chain.
        self.admission = admission
        self.chain = tuple(chain)
        self._alive = Alive.create(keys, initial_incarnation, self.addrs, self.chain)
        self._refused: dict[PeerId, tuple[str, float]] = {}
        self._expiry_at = math.inf
        #: Colony mode: members a message came from (they know us; `_introduce`).
        #: Kept outside `Member` so open mode pays nothing; membership tests only.
        self._heard: set[PeerId] = set()
        self.members: dict[PeerId, Member] = {}
        self._ids: list[PeerId] = []  # every member once: probe order and sampling
        self._probe_idx = 0
        self._n_live = 1  # ALIVE + SUSPECT members, self included
        self._suspicions: dict[PeerId, Suspicion] = {}
        self.awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._bq = BroadcastQueue(config.max_broadcasts)
        self._uq = BroadcastQueue(config.max_user_events_queued, newest_first=False)
        self._probe: _Probe | None = None
        self._seq = 0
        self._relays: dict[int, tuple[PeerId, int, PeerId]] = {}
        self._seeds: tuple[PeerId, ...] = ()
        self.started = False
        self.leaving = False
        self.stopped = False
        self._left: Accuse | None = None
        self._events = EventOrderer(
            config.max_event_senders, config.max_holdback_per_sender, config.holdback_s
        )
        self._event_seq = 0
        self.verifier = verifier or Verifier(config.verify_cache_size)
        self._limiter = AccuserLimiter(
            config.accuse_burst,
            config.accuse_refill_per_probe / config.probe_interval_s,
            config.max_accusers,
        )
        self.coord = Coord()
        self._coords: dict[PeerId, Coord] = {}
        self._rtt: dict[PeerId, float] = {}
        self.ad = ad
        self._ad_version = -1
        self._ad_full: AdUpdate | None = None
        self._ad_deltas: tuple[AdUpdate, ...] = ()
        self.stats: dict[str, int] = {}

    # ================================================================ entry point

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self.stopped:
            self._count("input_after_leave")
            return out
        if isinstance(inp, Received):
            self._on_message(inp.peer, inp.msg, now, out)
        elif isinstance(inp, TimerFired):
            self._on_timer(inp.timer, now, out)
        elif isinstance(inp, PeerUnreachable):
            self._count("peer_unreachable")
        elif isinstance(inp, Join):
            self._join(inp.seeds, now, out)
        elif isinstance(inp, Leave):
            self._leave(now, out)
        elif isinstance(inp, UpdateAd):
            self._update_ad(inp.ad, out)
        elif isinstance(inp, SendUserEvent):
            self._send_event(inp.name, inp.payload, now)
        elif isinstance(inp, PublishRevocation):
            self._publish_revocation(inp.envelope, now, out)
        else:
            raise LocalProtocolError(f"gossip core does not take {type(inp).__name__}")
        return out

    def _count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    # ================================================================ commands

    def _join(self, seeds: tuple[PeerId, ...], now: float, out: list[Effect]) -> None:
        self._seeds = tuple(s for s in seeds if s != self.me)[: self.config.max_seeds]
        if not self.started:
            self.started = True
            c = self.config
            out.append(SetTimer("probe", now + self.rng.uniform(0, c.probe_interval_s)))
            out.append(SetTimer("gossip", now + self.rng.uniform(0, c.gossip_interval_s)))
            out.append(SetTimer("pushpull", now + self._push_pull_interval()))
            self._bq.queue(("m", self.me), self._alive)
            if self.ad is not None:
                self._publish_ad(self.ad, full=True)
        for seed in self._seeds:
            self._send_push_pull(seed, reply=True, join=True, out=out)

    def _publish_revocation(self, env: Envelope, now: float, out: list[Effect]) -> None:
        if self.admission is None:
            raise LocalProtocolError("revocations need colony mode (an Admission gate)")
        try:
            r = Revoke.from_envelope(env)
        except WireError as e:
            raise LocalProtocolError(f"not a revocation: {e}") from None
        refused = self._on_revoke(r, now, out, local=True)
        if refused is not None:
            raise LocalProtocolError(f"revocation refused: {refused}")

    def _leave(self, now: float, out: list[Effect]) -> None:
        if not self.started:
            self.stopped = True
            out.append(Emit(LeftColony()))
            return
        if self.leaving:
            return
        self.leaving = True
        self._left = Accuse.create(self.keys, self.me, self.incarnation, AccuseKind.LEFT)
        self._bq.queue(("m", self.me), self._left)
        for peer in self._sample(self.config.gossip_nodes, _LIVE):
            out.append(Send(peer, Gossip((self._left,))))
        out.append(CancelTimer("probe"))
        out.append(CancelTimer("probe-timeout"))
        out.append(SetTimer("leave", now + self.config.leave_propagate_s))

    def _update_ad(self, ad: ResourceAd, out: list[Effect]) -> None:
        if ad == self.ad and self._ad_full is not None:
            return
        if self.started:
            full = self._ad_full is None or len(self._ad_deltas) >= self.config.max_ad_deltas
            self._publish_ad(ad, full=full)
        else:
            self.ad = ad

    def _publish_ad(self, ad: ResourceAd, *, full: bool) -> None:
        version = self._ad_version + 1
        if full or self.ad is None or self._ad_full is None:
            u = AdUpdate.create(self.keys, version, ad.to_body())
            self._ad_full, self._ad_deltas = u, ()
            if update_size(u.env) <= self.config.ad_gossip_max_bytes:
                self._bq.queue(("ad", self.me, version), u)
        else:
            u = AdUpdate.create(self.keys, version, ad.delta_from(self.ad), self._ad_version)
            self._ad_deltas = (*self._ad_deltas, u)
            self._bq.queue(("ad", self.me, version), u)
        self._ad_version = version
        self.ad = ad

    def _send_event(self, name: str, payload: bytes, now: float) -> None:
        try:
            check_event(name, payload)
        except WireError as e:
            raise LocalProtocolError(str(e)) from None
        if not self.started or self.leaving:
            raise LocalProtocolError("send user events after Join and before Leave")
        ev = UserEvent.create(self.keys, name, payload, self._events.tick(), self._event_seq)
        self._event_seq += 1
        self._events.offer(ev, now)  # remember it, so echoes are duplicates
        self._uq.queue(("ev", self.me, ev.seq), ev)

    # ================================================================ timers

    def _on_timer(self, timer: Hashable, now: float, out: list[Effect]) -> None:
        if timer == "probe":
            self._probe_tick(now, out)
        elif timer == "probe-timeout":
            self._probe_timeout(now, out)
        elif timer == "gossip":
            self._gossip_tick(now, out)
        elif timer == "pushpull":
            self._push_pull_tick(now, out)
        elif timer == "cert-expiry":
            self._expiry_at = math.inf
            self._recheck_members(now, out, only_expired=True)
        elif timer == "leave":
            self.stopped = True
            out.extend(CancelTimer(t) for t in ("gossip", "pushpull"))
            out.append(Emit(LeftColony()))
        elif isinstance(timer, tuple) and len(timer) == 2 and timer[0] == "suspect":
            self._suspicion_expired(timer[1], now, out)
        elif isinstance(timer, tuple) and len(timer) == 2 and timer[0] == "relay":
            relay = self._relays.pop(timer[1], None)
            if relay is not None and self.config.lifeguard:
                out.append(Send(relay[0], Nack(relay[1])))
        else:
            self._count("unknown_timer")

    # ---------------------------------------------------------------- probing

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _add_id(self, peer: PeerId) -> None:
        """Append, then swap into a random not-yet-probed slot (memberlist does the
        same): otherwise every node would probe newcomers in the same order."""
        ids = self._ids
        ids.append(peer)
        j = self.rng.randint(min(self._probe_idx, len(ids) - 1), len(ids) - 1)
        ids[-1], ids[j] = ids[j], ids[-1]

    def _next_probe_target(self) -> PeerId | None:
        ids = self._ids
        for _ in range(len(ids) + 1):
            if self._probe_idx >= len(ids):
                self._probe_idx = 0
                self.rng.shuffle(ids)
                if not ids:
                    return None
            peer = ids[self._probe_idx]
            self._probe_idx += 1
            if self.members[peer].state in _LIVE:
                return peer
        return None

    def _probe_tick(self, now: float, out: list[Effect]) -> None:
        if self._probe is not None:
            self._conclude_probe(self._probe, now, out)
            self._probe = None
        c = self.config
        out.append(SetTimer("probe", now + self.awareness.scale(c.probe_interval_s)))
        if self.leaving:
            return
        target = self._next_probe_target()
        if target is None:
            return
        probe = self._probe = _Probe(self._next_seq(), target, now)
        buddy = self.members[target].accuse if c.lifeguard else None
        updates = self._introduce(target, self._piggyback(c.piggyback_bytes, buddy))
        out.append(Send(target, Ping(probe.seq, target, updates, self.coord)))
        out.append(SetTimer("probe-timeout", now + self.awareness.scale(c.probe_timeout_s)))

    def _probe_timeout(self, now: float, out: list[Effect]) -> None:
        probe = self._probe
        if probe is None or probe.acked or probe.helpers:
            return
        c = self.config
        helpers = self._sample(c.indirect_checks, (MemberState.ALIVE,), exclude=probe.target)
        probe.helpers = tuple(helpers)
        probe.expected_nacks = len(helpers) if c.lifeguard else 0
        for h in helpers:
            out.append(
                Send(h, PingReq(probe.seq, probe.target, self._piggyback(c.piggyback_bytes)))
            )
        if not helpers:
            probe.helpers = (self.me,)  # mark the indirect phase as done

    def _conclude_probe(self, probe: _Probe, now: float, out: list[Effect]) -> None:
        if probe.acked:
            return
        # Lifeguard §IV-A: missing nacks mean *we* may be the slow one.
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - len(probe.nacks)))
        else:
            self.awareness.apply_delta(1)
        m = self.members.get(probe.target)
        if m is None or m.state not in _LIVE:
            return
        self._count("probe_failed")
        acc = Accuse.create(self.keys, probe.target, m.incarnation, AccuseKind.SUSPECT)
        self._apply_suspect(m, acc, now, out)

    def _on_ack(self, peer: PeerId, msg: Ack, now: float, out: list[Effect]) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and not probe.acked:
            if peer == probe.target:
                probe.acked = True
                self.awareness.apply_delta(-1)
                self._observe_rtt(peer, now - probe.sent, msg.coord)
            elif peer in probe.helpers:
                probe.acked = True
            out.append(CancelTimer("probe-timeout"))
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and relay[2] == peer:
            del self._relays[msg.seq]
            out.append(CancelTimer(("relay", msg.seq)))
            out.append(Send(relay[0], Ack(relay[1])))
            return
        self._count("ack_unexpected")

    def _observe_rtt(self, peer: PeerId, rtt_s: float, coord: Coord | None) -> None:
        if peer not in self._rtt and len(self._rtt) >= self.config.max_coords:
            self._count("rtt_dropped")
            return
        old = self._rtt.get(peer)
        self._rtt[peer] = rtt_s if old is None else old + RTT_ALPHA * (rtt_s - old)
        if coord is not None:
            self.coord = coordinates.update(self.coord, coord, rtt_s, self.rng)
            self._remember_coord(peer, coord)

    def _remember_coord(self, peer: PeerId, coord: Coord) -> None:
        if peer in self._coords or len(self._coords) < self.config.max_coords:
            self._coords[peer] = coord

    def _on_ping(self, peer: PeerId, msg: Ping, out: list[Effect]) -> None:
        if msg.target is not None and msg.target != self.me:
            self._count("ping_misdirected")
            return
        if msg.coord is not None and peer in self.members:
            self._remember_coord(peer, msg.coord)
        updates = self._piggyback(self.config.piggyback_bytes)
        out.append(Send(peer, Ack(msg.seq, updates, self.coord)))

    def _on_ping_req(self, peer: PeerId, msg: PingReq, now: float, out: list[Effect]) -> None:
        if msg.target == self.me:
            out.append(Send(peer, Ack(msg.seq)))
            return
        if self.admission is not None and msg.target not in self.members:
            self._count("ping_req_non_member")  # colony mode: never probe outsiders
            return
        if len(self._relays) >= self.config.max_relays:
            self._count("relay_dropped")
            return
        seq = self._next_seq()
        self._relays[seq] = (peer, msg.seq, msg.target)
        out.append(
            Send(msg.target, Ping(seq, msg.target,
                                  self._introduce(msg.target,
                                                  self._piggyback(self.config.piggyback_bytes))))
        )
        out.append(SetTimer(("relay", seq), now + self.config.probe_timeout_s))

    def _on_nack(self, peer: PeerId, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and peer in probe.helpers:
            probe.nacks.add(peer)
        else:
            self._count("nack_unexpected")

    # ---------------------------------------------------------------- suspicion

    def _apply_suspect(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        """Start (or confirm) a suspicion; `acc` is already verified."""
        target = acc.target
        s = self._suspicions.get(target)
        if m.state is MemberState.SUSPECT and s is not None and acc.incarnation == m.incarnation:
            if s.confirm(acc.accuser):
                out.append(SetTimer(("suspect", target), s.deadline()))
                self._bq.queue(("m", target), acc)
            return
        c = self.config
        self._set_state(m, MemberState.SUSPECT, now)
        m.accuse = acc
        k = min(c.indirect_checks, max(0, self._n_live - 2)) if c.lifeguard else 0
        min_s = suspicion_timeout_s(c.suspicion_mult, self._n_live, c.probe_interval_s)
        max_s = min_s * c.suspicion_max_timeout_mult if c.lifeguard else min_s
        s = self._suspicions[target] = Suspicion(acc.accuser, k, min_s, max_s, now)
        out.append(SetTimer(("suspect", target), s.deadline()))
        out.append(Emit(MemberSuspected(target, acc.incarnation, acc.accuser)))
        self._bq.queue(("m", target), acc)

    def _suspicion_expired(self, target: PeerId, now: float, out: list[Effect]) -> None:
        s = self._suspicions.get(target)
        m = self.members.get(target)
        if s is None or m is None or m.state is not MemberState.SUSPECT:
            return
        if s.deadline() > now + 1e-9:  # stale timer (should not happen; be safe)
            out.append(SetTimer(("suspect", target), s.deadline()))
            return
        acc = Accuse.create(self.keys, target, m.incarnation, AccuseKind.DEAD)
        self._apply_dead(m, acc, now, out)

    def _apply_dead(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        target = acc.target
        if self._suspicions.pop(target, None) is not None:
            out.append(CancelTimer(("suspect", target)))
        left = acc.kind is AccuseKind.LEFT
        self._set_state(m, MemberState.LEFT if left else MemberState.DEAD, now)
        m.accuse = acc
        if left:
            out.append(Emit(MemberLeft(target, acc.incarnation)))
        else:
            out.append(Emit(MemberFailed(target, acc.incarnation, acc.accuser)))
        self._bq.queue(("m", target), acc)

    def _set_state(self, m: Member, state: MemberState, now: float) -> None:
        was_live = m.state in _LIVE
        is_live = state in _LIVE
        self._n_live += int(is_live) - int(was_live)
        m.state = state
        m.since = now

    def _refute(self, incarnation: int) -> None:
        """Someone claims we are suspect/dead/left (or we see a past life): outbid it."""
        self.incarnation = max(self.incarnation, incarnation) + 1
        self._alive = Alive.create(self.keys, self.incarnation, self.addrs, self.chain)
        self._bq.queue(("m", self.me), self._alive)
        self.awareness.apply_delta(1)  # Lifeguard: being suspected hints we are slow
        self._count("refuted")

    # ================================================================ messages

    def _on_message(self, peer: PeerId, msg: Any, now: float, out: list[Effect]) -> None:
        if self.admission is not None and peer != self.me:
            m = self.members.get(peer)
            # Colony mode: only members talk to us. A message may admit its sender
            # through the sender's own certified claim inside it (push-pull record, or
            # the alive a member piggybacks on its first pings: `_introduce`);
            # everything else from a non-member is refused.
            if m is None and not self._admit_sender(peer, msg, now, out):
                self._count("refused_non_member")
                self._refuse(peer, self._refusal_reason(peer), now, out)
                return
            self._heard.add(peer)
        if isinstance(msg, Ping):
            self._apply_updates(msg.updates, now, out)
            self._on_ping(peer, msg, out)
        elif isinstance(msg, Ack):
            self._apply_updates(msg.updates, now, out)
            self._on_ack(peer, msg, now, out)
        elif isinstance(msg, Nack):
            self._on_nack(peer, msg)
        elif isinstance(msg, PingReq):
            self._apply_updates(msg.updates, now, out)
            self._on_ping_req(peer, msg, now, out)
        elif isinstance(msg, Gossip):
            self._apply_updates(msg.updates, now, out)
        elif isinstance(msg, PushPull):
            self._on_push_pull(peer, msg, now, out)
        else:
            self._count("unknown_message")

    def _apply_updates(self, updates: tuple[Update, ...], now: float, out: list[Effect]) -> None:
        for u in updates:
            self._apply_update(u, now, out, merge=False)

    def _apply_update(self, u: Any, now: float, out: list[Effect], *, merge: bool) -> None:
        try:
            if isinstance(u, Alive):
                self._on_alive(u, now, out)
            elif isinstance(u, Accuse):
                self._on_accuse(u, now, out, merge=merge)
            elif isinstance(u, AdUpdate):
                self._on_ad(u, out)
            elif isinstance(u, UserEvent):
                self._on_user_event(u, now, out)
            elif isinstance(u, Revoke):
                self._on_revoke(u, now, out)
            else:
                self._count("unknown_update")
        except BadSignature:
            self._count("bad_signature")
        except WireError:
            self._count("malformed_update")

    # ---------------------------------------------------------------- alive

    def _on_alive(self, a: Alive, now: float, out: list[Effect]) -> None:
        peer = a.peer
        if peer == self.me:
            if a.env.signature != self._alive.env.signature and a.incarnation >= self.incarnation:
                self.verifier.check(a.env, KIND_ALIVE)
                if not self.leaving:
                    self._refute(a.incarnation)  # a previous life of ours
            return
        m = self.members.get(peer)
        if m is not None and a.incarnation <= m.incarnation:
            self._count("stale_alive")
            return
        if m is None and len(self.members) >= self.config.max_members:
            self._count("members_full")
            return
        self.verifier.check(a.env, KIND_ALIVE)
        valid_until = math.inf
        if self.admission is not None:
            verdict = self.admission.check(a, now)
            if isinstance(verdict, str):
                self._count("alive_refused")
                self._refuse(peer, verdict, now, out)
                return
            valid_until = verdict
        if m is None:
            m = self.members[peer] = Member(a, now)
            self._add_id(peer)
            self._n_live += 1
            out.append(Emit(MemberJoined(peer, a.incarnation, a.addrs)))
        else:
            rejoined = m.state not in _LIVE
            if self._suspicions.pop(peer, None) is not None:
                out.append(CancelTimer(("suspect", peer)))
            self._set_state(m, MemberState.ALIVE, now)
            m.alive, m.accuse = a, None
            if rejoined:
                out.append(Emit(MemberJoined(peer, a.incarnation, a.addrs)))
            else:
                out.append(Emit(MemberUpdated(peer, a.incarnation, m.ad)))
        m.valid_until = valid_until
        if valid_until < self._expiry_at:
            self._expiry_at = valid_until
            out.append(SetTimer("cert-expiry", valid_until))
        self._bq.queue(("m", peer), a)

    # ---------------------------------------------------------------- accusations

    def _on_accuse(self, acc: Accuse, now: float, out: list[Effect], *, merge: bool) -> None:
        target = acc.target
        if target == self.me:
            if self.leaving or acc.incarnation < self.incarnation:
                self._count("stale_accusation")
                return
            if acc.accuser != self.me and not self._accuser_ok(acc, now):
                return
            self.verifier.check(acc.env, KIND_ACCUSE)
            self._refute(acc.incarnation)
            return
        m = self.members.get(target)
        if m is None:
            self._count("accusation_unknown_target")
            return
        inc = m.incarnation
        if acc.incarnation < inc or (acc.incarnation == inc and not self._news(acc, m)):
            self._count("stale_accusation")
            return
        if acc.kind is not AccuseKind.LEFT and not self._accuser_ok(acc, now):
            return
        self.verifier.check(acc.env, KIND_ACCUSE)
        if acc.kind is AccuseKind.SUSPECT or (merge and acc.kind is AccuseKind.DEAD):
            if merge and acc.accuser != self.me:
                # memberlist mergeState: remote suspect/dead becomes *our* suspicion,
                # so the target gets a full suspicion timeout to refute.
                if m.state is MemberState.SUSPECT and acc.incarnation == inc:
                    return
                own = Accuse.create(self.keys, target, acc.incarnation, AccuseKind.SUSPECT)
                self._apply_suspect(m, own, now, out)
            else:
                self._apply_suspect(m, acc, now, out)
        else:
            self._apply_dead(m, acc, now, out)

    def _news(self, acc: Accuse, m: Member) -> bool:
        """At equal incarnation: does `acc` say something new about `m`?

        Checked before the rate limit and the signature, so that the many copies of
        one accusation that gossip delivers cost neither tokens nor verifications.
        """
        if m.state is MemberState.ALIVE:
            return True
        if m.state is MemberState.SUSPECT:
            if acc.kind is not AccuseKind.SUSPECT:
                return True
            s = self._suspicions.get(acc.target)
            return s is None or (acc.accuser not in s.accusers and s.confirmations < s.k)
        # dead: only a leave notice adds information
        return m.state is MemberState.DEAD and acc.kind is AccuseKind.LEFT

    def _accuser_ok(self, acc: Accuse, now: float) -> bool:
        if acc.accuser != self.me:
            am = self.members.get(acc.accuser)
            if am is None or am.state is MemberState.LEFT:
                self._count("accusation_from_non_member")
                return False
        if not self._limiter.allow(acc.accuser, now):
            self._count("accusation_rate_limited")
            return False
        return True

    # ---------------------------------------------------------------- ads

    def _on_ad(self, u: AdUpdate, out: list[Effect]) -> None:
        if u.peer == self.me:
            if u.version > self._ad_version and u.env.signature not in self._own_ad_sigs():
                self.verifier.check(u.env, KIND_AD)
                self._ad_version = u.version  # a previous life's ad: supersede it
                if self.ad is not None:
                    self._publish_ad(self.ad, full=True)
            return
        m = self.members.get(u.peer)
        if m is None or m.state is MemberState.LEFT:
            self._count("ad_unknown_member")
            return
        current = m.ad_version
        if u.version <= current:
            self._count("stale_ad")
            return
        if u.base is not None and u.base != current:
            self._count("ad_gap")  # a full ad will come by push-pull
            return
        if u.base is not None and len(m.ad_deltas) >= 2 * self.config.max_ad_deltas:
            self._count("ad_chain_full")
            return
        self.verifier.check(u.env, KIND_AD)
        if u.base is None:
            m.ad_full, m.ad_deltas, m.ad = u, (), u.full()
        else:
            m.ad_deltas = (*m.ad_deltas, u)
            m.ad = u.apply_to(m.ad or ResourceAd())
        out.append(Emit(MemberUpdated(u.peer, m.incarnation, m.ad)))
        if u.base is not None or update_size(u.env) <= self.config.ad_gossip_max_bytes:
            self._bq.queue(("ad", u.peer, u.version), u)

    def _own_ad_sigs(self) -> list[bytes]:
        own = [d.env.signature for d in self._ad_deltas]
        if self._ad_full is not None:
            own.append(self._ad_full.env.signature)
        return own

    # ---------------------------------------------------------------- user events

    def _on_user_event(self, ev: UserEvent, now: float, out: list[Effect]) -> None:
        if len(ev.payload) > MAX_USER_PAYLOAD_BYTES:
            self._count("event_oversized")
            return
        if ev.sender == self.me:
            return  # our own event coming back
        m = self.members.get(ev.sender)
        if m is None or m.state not in _LIVE:
            self._count("event_from_non_member")
            return
        if self._events.is_duplicate(ev):
            self._count("event_duplicate")
            return
        self.verifier.check(ev.env, KIND_EVENT)
        is_new, ready = self._events.offer(ev, now)
        if is_new:
            self._uq.queue(("ev", ev.sender, ev.seq), ev)
        for e in ready:
            out.append(Emit(UserEventReceived(e.sender, e.name, e.payload, e.lamport, e.seq)))

    # ================================================================ dissemination

    def retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self._n_live)

    def _piggyback(self, budget: int, first: Update | None = None) -> tuple[Update, ...]:
        taken = take_split(
            self._bq, self._uq, budget, self.config.user_share, self.retransmit_limit()
        )
        if first is not None:  # buddy system: the suspicion rides first
            taken = [first, *(u for u in taken if u is not first)]
        return tuple(taken)

    def _sample(
        self,
        k: int,
        states: tuple[MemberState, ...],
        *,
        exclude: PeerId | None = None,
        dead_since: float | None = None,
    ) -> list[PeerId]:
        """Up to k distinct random members in `states` (or recently dead), O(k)."""
        ids = self._ids
        if k <= 0 or not ids:
            return []
        chosen: dict[PeerId, None] = {}
        for _ in range(4 * k + 8):
            peer = ids[self.rng.randrange(len(ids))]
            if peer == exclude or peer in chosen:
                continue
            m = self.members[peer]
            if m.state in states or (
                dead_since is not None and m.state is MemberState.DEAD and m.since >= dead_since
            ):
                chosen[peer] = None
                if len(chosen) >= k:
                    break
        return list(chosen)

    def _gossip_tick(self, now: float, out: list[Effect]) -> None:
        c = self.config
        out.append(SetTimer("gossip", now + c.gossip_interval_s))
        for ev in self._events.expire(now):
            out.append(Emit(UserEventReceived(ev.sender, ev.name, ev.payload, ev.lamport, ev.seq)))
        if not (len(self._bq) or len(self._uq)):
            return
        limit = self.retransmit_limit()
        targets = self._sample(c.gossip_nodes, _LIVE, dead_since=now - c.gossip_to_the_dead_s)
        for peer in targets:
            updates = take_split(self._bq, self._uq, c.gossip_bytes, c.user_share, limit)
            if not updates:
                break
            out.append(Send(peer, Gossip(tuple(updates))))

    # ---------------------------------------------------------------- push-pull

    def _push_pull_interval(self) -> float:
        return push_pull_scale(self.config.push_pull_interval_s, self._n_live)

    def _push_pull_tick(self, now: float, out: list[Effect]) -> None:
        out.append(SetTimer("pushpull", now + self._push_pull_interval()))
        self._reap(now, out)
        if self.leaving:
            return
        live = self._sample(1, (MemberState.ALIVE,))
        if live:
            self._send_push_pull(live[0], reply=True, join=False, out=out)
        elif self._seeds:  # nobody known yet: keep knocking on the seeds
            for seed in self._seeds:
                self._send_push_pull(seed, reply=True, join=True, out=out)
        # serf-style reconnect: try one failed member, so healed partitions merge.
        dead = self._sample(1, (), dead_since=now - self.config.tombstone_s)
        if dead:
            self._send_push_pull(dead[0], reply=True, join=False, out=out)

    def _records(self) -> list[MemberRecord]:
        ads: tuple[AdUpdate, ...] = ()
        if self._ad_full is not None:
            ads = (self._ad_full, *self._ad_deltas)
        recs = [MemberRecord(self._alive, self._left, ads)]
        recs.extend(m.record() for m in self.members.values())
        return recs

    def _send_push_pull(self, peer: PeerId, *, reply: bool, join: bool, out: list[Effect]) -> None:
        revs: tuple[Revoke, ...] = ()
        if self.admission is None:
            recs = self._records()
        elif peer not in self.members:
            # Colony mode, a seed not yet known to be a member: show only our own
            # certified claim; the seed answers with its state if it admits us.
            recs = self._records()[:1]
        else:
            recs = self._records()
            revs = self.admission.known_revocations(MAX_PUSH_PULL_REVOCATIONS)
        page = self.config.push_pull_page
        pages = max(1, -(-len(recs) // page))
        for i in range(pages):
            chunk = tuple(recs[i * page : (i + 1) * page])
            first = i == 0
            out.append(Send(peer, PushPull(chunk, reply and first, join, i, pages,
                                           revs if first else ())))
        self._count("push_pull_sent")

    def _on_push_pull(self, peer: PeerId, msg: PushPull, now: float, out: list[Effect]) -> None:
        self._count("push_pull_received")
        for rv in msg.revocations:  # before the claims they may invalidate
            self._on_revoke(rv, now, out)
        # Alive claims first, so that accusers and ad owners are known when their
        # accusations and ads are merged (a joiner learns everything in one go).
        for r in msg.states:
            acc = r.accuse
            if (
                acc is not None
                and acc.kind is not AccuseKind.SUSPECT
                and acc.incarnation >= r.alive.incarnation
                and r.alive.peer not in self.members
            ):
                continue  # do not learn (or resurrect after reaping) a dead member
            self._apply_update(r.alive, now, out, merge=True)
        for r in msg.states:
            if r.accuse is not None:
                self._apply_update(r.accuse, now, out, merge=True)
            for ad in r.ads:
                self._apply_update(ad, now, out, merge=True)
        if msg.reply and not self.leaving and (self.admission is None or peer in self.members):
            self._send_push_pull(peer, reply=False, join=False, out=out)

    def _reap(self, now: float, out: list[Effect]) -> None:
        horizon = now - self.config.tombstone_s
        gone = [
            p
            for p, m in self.members.items()
            if m.state in (MemberState.DEAD, MemberState.LEFT) and m.since <= horizon
        ]
        if not gone:
            return
        for p in gone:
            del self.members[p]
            self._heard.discard(p)
            self._coords.pop(p, None)
            self._rtt.pop(p, None)
            out.append(Emit(MemberReaped(p)))
        gone_set = set(gone)
        self._ids = [p for p in self._ids if p not in gone_set]
        self._probe_idx = min(self._probe_idx, len(self._ids))
        self._count("reaped", len(gone))

    # ================================================================ colony mode

    def _admit_sender(self, peer: PeerId, msg: Any, now: float, out: list[Effect]) -> bool:
        """A message from a non-member: admit the sender through its own alive claim
        in it (a push-pull record, or a piggybacked update), if it carries one."""
        if isinstance(msg, PushPull):
            own = next((r.alive for r in msg.states if r.alive.peer == peer), None)
        else:
            own = next((u for u in getattr(msg, "updates", ())
                        if isinstance(u, Alive) and u.peer == peer), None)  # fmt: skip
        if own is None:
            return False
        # Its revocations wait until it is admitted (`_on_push_pull`): an outsider
        # must not be able to fill the bounded revocation list.
        self._apply_update(own, now, out, merge=True)
        return peer in self.members

    def _introduce(self, target: PeerId, updates: tuple[Update, ...]) -> tuple[Update, ...]:
        """Colony mode: until `target` has talked to us, our pings to it carry our own
        certified alive first. It may have heard of us only from others, or not at all
        yet (joins race); without the claim it would refuse the ping and we would
        suspect a healthy member."""
        if self.admission is None:
            return updates
        if target not in self.members or target in self._heard:
            return updates
        return (self._alive, *(u for u in updates if u is not self._alive))

    def _refusal_reason(self, peer: PeerId) -> str:
        """Why a non-member's message is refused: the last reason its claim was
        refused for (expired, revoked, …), else that it is not a member."""
        last = self._refused.get(peer)
        return last[0] if last else f"{who(peer)} is not a member of this colony"

    def _refuse(self, peer: PeerId, reason: str, now: float, out: list[Effect]) -> None:
        """Report a refusal once per peer and reason per `refuse_report_interval_s`."""
        last = self._refused.pop(peer, None)
        interval = self.config.refuse_report_interval_s
        if last is None or last[0] != reason or now - last[1] >= interval:
            out.append(Emit(MemberRefused(peer, reason)))
            last = (reason, now)
        if len(self._refused) >= self.config.max_refused:
            del self._refused[next(iter(self._refused))]
        self._refused[peer] = last

    def _on_revoke(
        self, r: Revoke, now: float, out: list[Effect], *, local: bool = False
    ) -> str | None:
        """Record a revocation if new and valid, gossip it on, re-check members.
        Returns None if it is (now or already) in force, else why not. `local`: from
        this node's operator, taken without the known-authority filter."""
        adm = self.admission
        if adm is None:
            self._count("revocation_ignored_open_mode")
            return "open mode: no colony"
        if adm.knows(r):
            self._count("revocation_duplicate")
            return None
        verdict = adm.add_revocation(r, now, trusted=local)
        if isinstance(verdict, str):
            self._count("revocation_refused")
            return verdict
        self._count("revocation_learned")
        self._bq.queue(("rv", r.cert_id, r.env.signer), r)
        out.append(Emit(RevocationLearned(r.cert_id, r.env.signer_id, r.env)))
        self._recheck_members(now, out, only_expired=False)
        return None

    def _recheck_members(self, now: float, out: list[Effect], *, only_expired: bool) -> None:
        """Expel members whose chain expired (timer) or no longer verifies (after a
        revocation), then re-arm the expiry timer at the earliest remaining expiry."""
        adm = self.admission
        if adm is None:
            return
        expel: list[tuple[PeerId, str]] = []
        for p, m in self.members.items():
            if only_expired and m.valid_until > now:
                continue
            verdict = adm.check(m.alive, now)
            if isinstance(verdict, str):
                expel.append((p, verdict))
            else:
                m.valid_until = verdict
        for p, reason in expel:
            self._expel(p, reason, now, out)
        nxt = min((m.valid_until for m in self.members.values()), default=math.inf)
        if nxt < math.inf and nxt != self._expiry_at:
            self._expiry_at = nxt
            out.append(SetTimer("cert-expiry", nxt))

    def _expel(self, peer: PeerId, reason: str, now: float, out: list[Effect]) -> None:
        m = self.members.pop(peer)
        self._heard.discard(peer)
        if m.state in _LIVE:
            self._n_live -= 1
        if self._suspicions.pop(peer, None) is not None:
            out.append(CancelTimer(("suspect", peer)))
        self._coords.pop(peer, None)
        self._rtt.pop(peer, None)
        self._ids = [p for p in self._ids if p != peer]
        self._probe_idx = min(self._probe_idx, len(self._ids))
        self._count("expelled")
        self._refused[peer] = (reason, now)  # reported now, by MemberExpelled
        out.append(Emit(MemberExpelled(peer, reason)))

    # ================================================================ members API

    def num_members(self) -> int:
        """Live members (alive or suspect), this node included."""
        return self._n_live

    def member(self, peer: PeerId) -> MemberInfo | None:
        if peer == self.me:
            return self._self_info()
        m = self.members.get(peer)
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
            self.rtt_estimate(peer),
            self._coords.get(peer),
        )

    def _self_info(self) -> MemberInfo:
        state = MemberState.LEFT if self.leaving else MemberState.ALIVE
        return MemberInfo(
            self.me,
            state,
            self.incarnation,
            self.addrs,
            self.ad,
            self._ad_version,
            0.0,
            0.0,
            self.coord,
            is_self=True,
        )

    def list_members(self, *, include_gone: bool = False) -> list[MemberInfo]:
        out = [self._self_info()]
        for p, m in self.members.items():
            if include_gone or m.state in _LIVE:
                info = self.member(p)
                if info is not None:
                    out.append(info)
        return out

    def find(self, query: Query) -> list[PeerId]:
        """Live members (self included) whose latest ad matches `query`."""
        found = [self.me] if not self.leaving and query.matches(self.ad) else []
        found.extend(p for p, m in self.members.items() if m.state in _LIVE and query.matches(m.ad))
        return found

    def rtt_estimate(self, peer: PeerId) -> float | None:
        """Measured RTT (EWMA) if we probed `peer`, else the Vivaldi prediction."""
        rtt = self._rtt.get(peer)
        if rtt is not None:
            return rtt
        coord = self._coords.get(peer)
        return None if coord is None else self.coord.distance_s(coord)

    def queue_sizes(self) -> dict[str, int]:
        return {
            "broadcasts": len(self._bq),
            "user_events": len(self._uq),
            "relays": len(self._relays),
            "suspicions": len(self._suspicions),
            "event_senders": len(self._events),
            "held_events": self._events.held_count(),
            "accusers": len(self._limiter),
            "verify_cache": len(self.verifier),
            "coords": len(self._coords),
            "rtts": len(self._rtt),
        }
