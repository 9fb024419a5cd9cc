"""Push-pull anti-entropy: periodic full state exchange, joins and reaping (SWIM §4.4,
memberlist pushPull).

Every `push_pull_interval` (scaled above 32 members, `push_pull_scale`) this node sends
its whole member table, paged by `push_pull_page`, to one random live member, which
answers with its own. Joining is a push-pull to the seeds. Each tick also tries one
dead member (serf-style reconnect) so healed partitions merge. Alive claims are merged
before accusations and ads, so their authors are known; revocations come first of all,
since they may invalidate the claims. Dead and left members are reaped after
`tombstone_s`.
"""

from __future__ import annotations

import math

from gossip.events import MemberReaped
from gossip.members import MemberState
from gossip.messages import (
    MAX_PUSH_PULL_REVOCATIONS,
    AccuseKind,
    AdUpdate,
    MemberRecord,
    PushPull,
    Revoke,
)
from gossip.probing import Probing
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId


def push_pull_scale(interval_s: float, n: int) -> float:
    """memberlist util.go: back push-pull off logarithmically above 32 members."""
    if n <= 32:
        return interval_s
    return interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)


class AntiEntropy(Probing):
    """Push-pull exchange and reaping of dead members."""

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
