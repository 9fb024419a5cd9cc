"""Dissemination: what rides on every message, gossip rounds, and signed resource ads.

SWIM §4.1 (infection-style dissemination) with memberlist's queue discipline
(gossip/broadcast_queue.py): two broadcast queues — membership and ads newest-first,
user events oldest-first — fewest-transmitted-first, each update sent
`retransmit_mult × ceil(log10(N + 1))` times. Every message's byte budget gives user
events first claim on `user_share`, so user payloads are never starved (DESIGN §6).
Pings to a suspect carry the accusation first (buddy system, Lifeguard §IV-C).

Ads (`Ads`): a full signed ad on publish (gossiped only when ≤ `ad_gossip_max_bytes`;
push-pull carries it otherwise), then signed deltas against exactly the previous
version; after `max_ad_deltas` deltas a fresh full ad. A member's delta applies only
on top of exactly its base; a gap waits for push-pull.

Invariants: both queues stay within their `SwimConfig` maximum (the queue drops and
counts); a member's ad chain holds at most `2 × max_ad_deltas` deltas.
"""

from __future__ import annotations

import random

from gossip.broadcast_queue import BroadcastQueue, retransmit_limit, take_split
from gossip.claim_verifier import Verifier
from gossip.counters import count
from gossip.events import MemberUpdated
from gossip.local_node import LocalNode
from gossip.member_table import MemberTable
from gossip.members import LIVE, MemberState
from gossip.messages import KIND_AD, AdUpdate, Gossip, Update, update_size
from gossip.profiles import SwimConfig
from gossip.resources import ResourceAd
from overlay.core.effects import Effect, Emit, Send
from overlay.core.validate import counter_step_ok


class Dissemination:
    """The two broadcast queues, piggybacking and gossip rounds."""

    __slots__ = ("_bq_index", "_uq_index", "bq", "config", "rng", "table", "uq")

    def __init__(self, config: SwimConfig, table: MemberTable, rng: random.Random) -> None:
        self.config = config
        self.table = table
        self.rng = rng
        #: Membership, revocations and ads: newest first.
        self.bq = BroadcastQueue(config.max_broadcasts)
        #: User events: oldest first, first claim on `user_share` of every message.
        self.uq = BroadcastQueue(config.max_user_events_queued, newest_first=False)
        # The queues' key → item dicts (never replaced): every ping and ack asks
        # whether both queues are empty, and `len()` on a queue is a Python call.
        self._bq_index = self.bq._index
        self._uq_index = self.uq._index

    def retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self.table.n_live)

    def piggyback(self, budget: int, first: Update | None = None) -> tuple[Update, ...]:
        """Updates for one message of `budget` bytes; `first` (a suspicion) leads."""
        if not (self._bq_index or self._uq_index):  # the steady state: nothing to piggyback
            return () if first is None else (first,)
        c = self.config
        taken = take_split(self.bq, self.uq, budget, c.user_share, self.retransmit_limit())
        if first is not None:  # buddy system: the suspicion rides first
            taken = [first, *(u for u in taken if u is not first)]
        return tuple(taken)

    def gossip_round(self, now: float, out: list[Effect]) -> None:
        """Send queued updates to `gossip_nodes` random live (or recently dead) members."""
        c = self.config
        if not (self._bq_index or self._uq_index):
            return
        limit = self.retransmit_limit()
        targets = self.table.sample(
            c.gossip_nodes, LIVE, self.rng, dead_since=now - c.gossip_to_the_dead_s
        )
        for peer in targets:
            updates = take_split(self.bq, self.uq, c.gossip_bytes, c.user_share, limit)
            if not updates:
                break
            out.append(Send(peer, Gossip(tuple(updates))))


class Ads:
    """Our own ad chain (publish) and the members' ad chains (apply)."""

    __slots__ = ("bq", "config", "local", "stats", "table", "verifier")

    def __init__(
        self,
        local: LocalNode,
        table: MemberTable,
        bq: BroadcastQueue,
        config: SwimConfig,
        verifier: Verifier,
        stats: dict[str, int],
    ) -> None:
        self.local = local
        self.table = table
        self.bq = bq
        self.config = config
        self.verifier = verifier
        self.stats = stats

    def update(self, ad: ResourceAd) -> None:
        """The `UpdateAd` command: publish now if started, else remember it."""
        me = self.local
        if ad == me.ad and me.ad_full is not None:
            return
        if me.started:
            full = me.ad_full is None or len(me.ad_deltas) >= self.config.max_ad_deltas
            self.publish(ad, full=full)
        else:
            me.ad = ad

    def publish(self, ad: ResourceAd, *, full: bool) -> None:
        me = self.local
        version = me.ad_version + 1
        if full or me.ad is None or me.ad_full is None:
            u = AdUpdate.create(me.keys, version, ad.to_body())
            me.ad_full, me.ad_deltas = u, ()
            if update_size(u.env) <= self.config.ad_gossip_max_bytes:
                self.bq.queue(("ad", me.me, version), u)
        else:
            u = AdUpdate.create(me.keys, version, ad.delta_from(me.ad), me.ad_version)
            me.ad_deltas = (*me.ad_deltas, u)
            self.bq.queue(("ad", me.me, version), u)
        me.ad_version = version
        me.ad = ad

    def on_ad(self, u: AdUpdate, out: list[Effect]) -> None:
        me = self.local
        if u.peer == me.me:
            if (
                u.version > me.ad_version
                and counter_step_ok(u.version, me.ad_version)
                and u.env.signature not in me.own_ad_sigs()
            ):
                self.verifier.check(u.env, KIND_AD)
                me.ad_version = u.version  # a previous life's ad: supersede it
                if me.ad is not None:
                    self.publish(me.ad, full=True)
            return
        m = self.table.get(u.peer)
        if m is None or m.state is MemberState.LEFT:
            count(self.stats, "ad_unknown_member")
            return
        current = m.ad_version
        if u.version <= current:
            count(self.stats, "stale_ad")
            return
        if u.base is not None and u.base != current:
            count(self.stats, "ad_gap")  # a full ad will come by push-pull
            return
        if u.base is not None and len(m.ad_deltas) >= 2 * self.config.max_ad_deltas:
            count(self.stats, "ad_chain_full")
            return
        self.verifier.check(u.env, KIND_AD)
        if u.base is None:
            m.ad_full, m.ad_deltas, m.ad = u, (), u.full()
        else:
            m.ad_deltas = (*m.ad_deltas, u)
            m.ad = u.apply_to(m.ad or ResourceAd())
        out.append(Emit(MemberUpdated(u.peer, m.incarnation, m.ad)))
        if u.base is not None or update_size(u.env) <= self.config.ad_gossip_max_bytes:
            self.bq.queue(("ad", u.peer, u.version), u)
