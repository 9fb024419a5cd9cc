"""Dissemination: what rides on every message, gossip rounds, and signed resource ads.

SWIM §4.1 (infection-style dissemination) with memberlist's queue discipline
(gossip/broadcast_queue.py): two broadcast queues — membership and ads newest-first,
user events oldest-first — fewest-transmitted-first, each update sent
`retransmit_mult × ceil(log10(N + 1))` times. Every message's byte budget gives user
events first claim on `user_share`, so user payloads are never starved (DESIGN §6).
Pings to a suspect carry the accusation first (buddy system, Lifeguard §IV-C).

Ads: a full signed ad on publish (gossiped only when ≤ `ad_gossip_max_bytes`; push-pull
carries it otherwise), then signed deltas against exactly the previous version; after
`max_ad_deltas` deltas a fresh full ad.
"""

from __future__ import annotations

from gossip.broadcast_queue import retransmit_limit, take_split
from gossip.events import MemberUpdated, UserEventReceived
from gossip.members import MemberState
from gossip.messages import KIND_AD, AdUpdate, Gossip, Update, update_size
from gossip.resources import ResourceAd
from gossip.swim_state import LIVE, SwimState
from overlay.core.effects import Effect, Emit, Send, SetTimer


class Dissemination(SwimState):
    """Piggybacking, gossip rounds and resource-ad publication (see module docstring)."""

    def retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self._n_live)

    def _piggyback(self, budget: int, first: Update | None = None) -> tuple[Update, ...]:
        taken = take_split(
            self._bq, self._uq, budget, self.config.user_share, self.retransmit_limit()
        )
        if first is not None:  # buddy system: the suspicion rides first
            taken = [first, *(u for u in taken if u is not first)]
        return tuple(taken)

    def _gossip_tick(self, now: float, out: list[Effect]) -> None:
        c = self.config
        out.append(SetTimer("gossip", now + c.gossip_interval_s))
        for ev in self._events.expire(now):
            out.append(Emit(UserEventReceived(ev.sender, ev.name, ev.payload, ev.lamport, ev.seq)))
        if not (len(self._bq) or len(self._uq)):
            return
        limit = self.retransmit_limit()
        targets = self._sample(c.gossip_nodes, LIVE, dead_since=now - c.gossip_to_the_dead_s)
        for peer in targets:
            updates = take_split(self._bq, self._uq, c.gossip_bytes, c.user_share, limit)
            if not updates:
                break
            out.append(Send(peer, Gossip(tuple(updates))))

    # ---------------------------------------------------------------- ads

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
