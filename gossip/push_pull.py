"""Push-pull anti-entropy: periodic full state exchange, joins and reaping (SWIM §4.4,
memberlist pushPull).

Every `push_pull_interval` (scaled above 32 members, `push_pull_scale`) this node sends
its whole member table, paged by `push_pull_page`, to one random live member, which
answers with its own. Joining is a push-pull to the seeds. Each tick also tries one
dead member (serf-style reconnect) so healed partitions merge. Alive claims are merged
before accusations and ads, so their authors are known; revocations come first of all,
since they may invalidate the claims (`merge`). Dead and left members are reaped
after `tombstone_s` (gossip/member_table.py).

`AntiEntropy` builds and sends exchanges and says in which order a received one is
merged; applying the claims is the state machine's job (gossip/transitions.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gossip.cell import Cell
from gossip.counters import count
from gossip.members import MemberState
from gossip.messages import (
    MAX_PUSH_PULL_REVOCATIONS,
    AccuseKind,
    AdUpdate,
    Alive,
    MemberRecord,
    PushPull,
    Revoke,
    Update,
)
from overlay.core.effects import Effect, Send
from overlay.core.ids import PeerId


def push_pull_scale(interval_s: float, n: int) -> float:
    """memberlist util.go: back push-pull off logarithmically above 32 members."""
    if n <= 32:
        return interval_s
    return interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)


class AntiEntropy:
    """Push-pull exchanges: whom to send to, what to send, how to merge a reply."""

    __slots__ = ("config", "gate", "joined", "local", "rng", "seeds", "stats", "table")

    def __init__(self, cell: Cell) -> None:
        self.local, self.table, self.gate = cell.local, cell.table, cell.gate
        self.config, self.rng, self.stats = cell.config, cell.rng, cell.stats
        #: The seeds of the last `Join` (at most `max_seeds`, never ourselves).
        self.seeds: tuple[PeerId, ...] = ()
        #: A seed has sent us a push-pull since the last `Join` (it knows we are back).
        self.joined = False

    def interval(self) -> float:
        return push_pull_scale(self.config.push_pull_interval_s, self.table.n_live)

    def exchange(self, now: float, out: list[Effect]) -> None:
        """One tick: push-pull with a random alive member (or the seeds while we know
        nobody), and with one recently dead member."""
        if self.local.leaving:
            return
        live = self.table.sample(1, (MemberState.ALIVE,), self.rng)
        if live:
            self.send(live[0], reply=True, join=False, out=out)
        if self.seeds and (not live or not self.joined):
            # Nobody known yet, or no seed has answered the join: keep knocking. Knowing
            # someone is not enough: a node whose join push-pulls were all lost, back
            # after a graceful leave (the others hold it as left, so none probes it),
            # knew only another rejoining node and the two stayed an island for good
            # (campaign seed 1202, 23 % loss).
            for seed in self.seeds:
                self.send(seed, reply=True, join=True, out=out)
        # serf-style reconnect: try one failed member, so healed partitions merge.
        dead = self.table.sample(1, (), self.rng, dead_since=now - self.config.tombstone_s)
        if dead:
            self.send(dead[0], reply=True, join=False, out=out)

    def records(self) -> list[MemberRecord]:
        """Our own record first, then every member's, in table order."""
        recs = [self.local.record()]
        recs.extend(self.table.records())
        return recs

    def send(self, peer: PeerId, *, reply: bool, join: bool, out: list[Effect]) -> None:
        revs: tuple[Revoke, ...] = ()
        admission = self.gate.admission
        if admission is None:
            recs = self.records()
        elif peer not in self.table:
            # Colony mode, a seed not yet known to be a member: show only our own
            # certified claim; the seed answers with its state if it admits us.
            recs = self.records()[:1]
        else:
            recs = self.records()
            revs = admission.known_revocations(MAX_PUSH_PULL_REVOCATIONS)
        tomb = self.table.tombstone(peer)
        if tomb is not None and tomb.accuse is not None:
            # A reaped member talks to us again (a restart): show it the notice that
            # ended its past life, so it refutes with a higher incarnation.
            recs = [*recs, tomb]
        page = self.config.push_pull_page
        pages = max(1, -(-len(recs) // page))
        for i in range(pages):
            chunk = tuple(recs[i * page : (i + 1) * page])
            first = i == 0
            out.append(Send(peer, PushPull(chunk, reply and first, join, i, pages,
                                           revs if first else ())))  # fmt: skip
        count(self.stats, "push_pull_sent")

    def merge(self, msg: PushPull, apply: Callable[[Update], None]) -> None:
        """Apply the claims of a received exchange (after its revocations) with `apply`,
        in merge order: every record's alive claim first, so that accusers and ad
        owners are known when their accusations and ads are merged (a joiner learns
        everything in one go), then each record's accusation and ads. Lazy: whether a
        member is known is read as each claim is reached.

        Most records of a steady-state exchange carry the very alive claim we hold
        (the simulator passes claims by reference): `Transitions.on_alive`'s stale
        path, taken here without the calls and counted in bulk, added to `stats`
        before anything else can touch it (so its keys keep the order one count at a
        time would give them). A record with neither accusation nor ads has nothing
        for the second pass and is not visited again. Likewise in the second pass, a
        record whose ads are, object for object, the chain the table holds for that
        member (not left, not us): `Ads.on_ad`'s stale path for each of them; a
        claim's shared one-ad record that is stale in both passes is settled in the
        first (below). The shortcuts need the very objects, so only the simulator
        takes them; a decoded
        message goes the long way to the same counts (tests/unit/gossip/
        test_push_pull_merge.py compares the two)."""
        table, me = self.table, self.local.me
        slot_of, alive_col = table.alive_lookup()
        ad_full, ad_deltas, state = table.ad_columns()
        stats = self.stats
        stale = 0
        # A record that is a claim's shared one-ad record (`Alive.ad_record`: no
        # accusation, the full ad and no delta) holding the very claim and ad we hold is
        # stale in both passes: counted here for both, and the second pass never visits
        # it (a settled cell's every record). Open mode only (applying another member's
        # claim cannot touch this member's slot there), and once `stale_ad` is a key of
        # `stats` (counted earlier than the second pass would, it must not take a place
        # in the keys' order).
        both = self.gate.admission is None and "stale_ad" in stats
        me_raw = me.raw
        stale_ads = 0
        later: list[MemberRecord] = []  # records with an accusation or ads
        for r in msg.states:
            a = r.alive
            if type(a) is Alive and r is a.record_cache:
                # The claim's shared plain record (no accusation, no ads): most records.
                i = slot_of(a.peer.raw)
                if i is not None and alive_col[i] is a:
                    stale += 1
                    continue
            else:
                if both and type(a) is Alive:
                    c = a.ad_record_cache
                    if c is not None and r is c[1]:
                        raw = a.peer.raw
                        i = slot_of(raw)
                        if (i is not None and alive_col[i] is a and ad_full[i] is c[0]
                                and not ad_deltas[i] and state[i] != _LEFT and raw != me_raw):
                            stale += 1
                            stale_ads += 1
                            continue
                acc = r.accuse
                if acc is not None or r.ads:
                    later.append(r)
                    if (
                        acc is not None
                        and acc.kind is not AccuseKind.SUSPECT
                        and acc.incarnation >= a.incarnation
                        and a.peer not in table
                        and a.peer != me  # our past life: we refute it
                    ):
                        continue  # do not learn (or resurrect after reaping) a dead member
                if type(a) is Alive:
                    i = slot_of(a.peer.raw)
                    if i is not None and alive_col[i] is a:
                        stale += 1
                        continue
            if stale:
                stats["stale_alive"] = stats.get("stale_alive", 0) + stale
                stale = 0
            apply(a)
        if stale:
            stats["stale_alive"] = stats.get("stale_alive", 0) + stale
        # Second pass. Most ads of a steady-state exchange are the very chain we hold for
        # that member (the simulator shares the objects): `Ads.on_ad`'s stale path for
        # each, counted in bulk as above.
        if stale_ads:
            stats["stale_ad"] += stale_ads
        stale = 0
        for r in later:
            if r.accuse is not None:
                if stale:
                    stats["stale_ad"] = stats.get("stale_ad", 0) + stale
                    stale = 0
                apply(r.accuse)
            ads = r.ads
            if ads:
                peer = r.alive.peer
                i = slot_of(peer.raw)
                if i is not None and ad_full[i] is ads[0] and state[i] != _LEFT:
                    held = ad_deltas[i]
                    if ((len(ads) == 1 and not held) or _same(held, ads)) and peer != me:
                        stale += len(ads)
                        continue
                if stale:
                    stats["stale_ad"] = stats.get("stale_ad", 0) + stale
                    stale = 0
                for u in ads:
                    apply(u)
        if stale:
            stats["stale_ad"] = stats.get("stale_ad", 0) + stale

    def should_reply(self, peer: PeerId, msg: PushPull) -> bool:
        return (
            msg.reply
            and not self.local.leaving
            and (self.gate.admission is None or peer in self.table)
        )


#: The state column's byte for a left member (`Ads.on_ad` treats its ad as from an
#: unknown member, not as stale).
_LEFT = int(MemberState.LEFT)


def _same(held: tuple[AdUpdate, ...], ads: tuple[AdUpdate, ...]) -> bool:
    """`ads` is (the held full ad, *`held`), object for object."""
    return len(held) == len(ads) - 1 and all(
        x is y for x, y in zip(held, ads[1:], strict=True))
