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

Layout: this module holds the entry point (`handle`), the commands, the timer and
message dispatch, alive claims and the member queries; the rest of the protocol lives
in layers below `Swim` (gossip/swim_state.py lists them: dissemination, user events,
colony admission, accusations, probing, push-pull).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from gossip.events import (
    Join,
    Leave,
    LeftColony,
    MemberJoined,
    MemberUpdated,
    PublishRevocation,
    SendUserEvent,
    UpdateAd,
)
from gossip.members import Member, MemberInfo, MemberState
from gossip.messages import (
    KIND_ALIVE,
    Accuse,
    AccuseKind,
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
from gossip.push_pull import AntiEntropy, push_pull_scale
from gossip.resources import Query
from gossip.swim_state import LIVE, RTT_ALPHA
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

__all__ = ["RTT_ALPHA", "Swim", "push_pull_scale"]


class Swim(AntiEntropy):
    """The gossip core. `handle(inp, now) -> list[Effect]`; see docs/gossip.md.

    Constructor: `SwimState.__init__` (gossip/swim_state.py)."""

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
        for peer in self._sample(self.config.gossip_nodes, LIVE):
            out.append(Send(peer, Gossip((self._left,))))
        out.append(CancelTimer("probe"))
        out.append(CancelTimer("probe-timeout"))
        out.append(SetTimer("leave", now + self.config.leave_propagate_s))

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
        # Ads last, oldest version first. The broadcast queue sends newest first, and a
        # delta applies only on top of exactly its base (gossip/dissemination.py): two
        # deltas of one owner queued within a gossip interval (a load refresh, then the
        # reachability) arrived newest first, the newer was dropped as a gap, and every
        # member kept the older ad until push-pull (60 s in the edge profile). Last
        # also puts an ad after its owner's alive claim, as push-pull merges them.
        ads = sorted((u for u in updates if isinstance(u, AdUpdate)), key=lambda u: u.version)
        for u in updates:
            if not isinstance(u, AdUpdate):
                self._apply_update(u, now, out, merge=False)
        for u in ads:
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
            rejoined = m.state not in LIVE
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
            if include_gone or m.state in LIVE:
                info = self.member(p)
                if info is not None:
                    out.append(info)
        return out

    def find(self, query: Query) -> list[PeerId]:
        """Live members (self included) whose latest ad matches `query`."""
        found = [self.me] if not self.leaving and query.matches(self.ad) else []
        found.extend(p for p, m in self.members.items() if m.state in LIVE and query.matches(m.ad))
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
