"""`AntiEntropy.merge` applies a push-pull's claims in the documented merge order.

The order (gossip/push_pull.py): every record's alive claim first, except a dead or
left member we do not know (its accusation at or above the claim's incarnation), then
each record's accusation and ads, in record order. An alive claim that is the very
object the table holds is stale: counted in `stale_alive`, not applied. `merge` takes
shortcuts for the claims' shared plain records (`Alive.plain_record`); this checks it
against that definition written out as two plain passes, on a message that mixes
every kind of record; and the second pass's shortcut for ad chains the table holds
(object for object) against the long way, `Ads.on_ad` for each ad of a decoded copy.
"""

from __future__ import annotations

import random

from gossip.messages import (
    Accuse,
    AccuseKind,
    AdUpdate,
    Alive,
    MemberRecord,
    PushPull,
    Update,
)
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(8)]
IDS = [k.peer_id for k in KEYS]


def two_passes(core: Swim, msg: PushPull) -> tuple[list[Update], int]:
    """The merge order by its definition: (claims to apply, stale claims)."""
    table, me = core.table, core.me
    applied: list[Update] = []
    stale = 0
    for r in msg.states:
        acc, a = r.accuse, r.alive
        if (acc is not None and acc.kind is not AccuseKind.SUSPECT
                and acc.incarnation >= a.incarnation and a.peer not in table
                and a.peer != me):
            continue
        if table.alive_of(a.peer) is a:
            stale += 1
        else:
            applied.append(a)
    for r in msg.states:
        if r.accuse is not None:
            applied.append(r.accuse)
        applied.extend(r.ads)
    return applied, stale


def test_merge_applies_claims_in_the_two_pass_order() -> None:
    core = Swim(KEYS[0], rng=random.Random(1))
    known = [Alive.create(KEYS[i], 0) for i in (1, 2, 3, 4)]
    core.handle(Received(IDS[1], PushPull(tuple(MemberRecord(a) for a in known))), 1.0)
    held = {a.peer: a for a in known}
    assert all(core.table.alive_of(p) is a for p, a in held.items())

    ad = AdUpdate.create(KEYS[7], 0, ResourceAd.make(cpu_cores=4, mem_bytes=1 << 30).to_body())
    msg = PushPull((
        held[IDS[1]].plain_record(),                           # shared plain record: stale
        MemberRecord(held[IDS[2]]),                            # plain, built apart: stale
        Alive.create(KEYS[3], 1).plain_record(),               # newer claim: applied
        MemberRecord(Alive.create(KEYS[5], 0),                 # unknown and dead: only
                     Accuse.create(KEYS[1], IDS[5], 0, AccuseKind.DEAD)),  # the accusation
        Alive.create(KEYS[6], 0).plain_record(),               # a new member
        MemberRecord(held[IDS[4]],                             # stale claim, suspected
                     Accuse.create(KEYS[2], IDS[4], 0, AccuseKind.SUSPECT)),
        MemberRecord(Alive.create(KEYS[7], 0), None, (ad,)),   # a new member with an ad
    ))
    want, want_stale = two_passes(core, msg)
    assert want_stale == 3 and len(want) == 6  # the message exercises every branch

    got: list[Update] = []
    before = core.stats.get("stale_alive", 0)
    core.anti_entropy.merge(msg, got.append)
    assert got == want
    assert all(g is w for g, w in zip(got, want, strict=True))
    assert core.stats["stale_alive"] - before == want_stale


def test_plain_record_is_built_once_per_claim_and_not_copied_by_replace() -> None:
    import dataclasses

    a = Alive.create(KEYS[1], 3)
    r = a.plain_record()
    assert r == MemberRecord(a) and a.plain_record() is r
    b = dataclasses.replace(a, incarnation=4)  # another claim: its own record
    assert b.record_cache is None and b.plain_record().alive is b
    assert a == dataclasses.replace(a)  # the cache takes no part in equality


def _with_ads(core: Swim, n: int) -> None:
    """Teach `core` members 1..n, each with a full ad and members 1..2 with a delta on
    top."""
    recs = []
    for i in range(1, n + 1):
        full = AdUpdate.create(KEYS[i], 1, ResourceAd.make(cpu_cores=i, mem_bytes=1 << 30)
                               .to_body())
        chain: tuple[AdUpdate, ...] = (full,)
        if i <= 2:
            chain += (AdUpdate.create(KEYS[i], 2, {"c": i + 1}, 1),)
        recs.append(MemberRecord(Alive.create(KEYS[i], 0), None, chain))
    core.handle(Received(IDS[1], PushPull(tuple(recs))), 1.0)


def _twin_cores() -> tuple[Swim, Swim, Alive, AdUpdate]:
    """Two cores that hold the same members 1..6 with ads; member 3's claim, and an ad
    of member 3 newer than the one they hold."""
    shared, copied = (Swim(KEYS[0], rng=random.Random(1)) for _ in range(2))
    for core in (shared, copied):
        _with_ads(core, 6)
    newer = AdUpdate.create(KEYS[3], 5, ResourceAd.make(cpu_cores=9, mem_bytes=1 << 30)
                            .to_body())
    alive3 = shared.table.alive_of(IDS[3])
    assert alive3 is not None
    return shared, copied, alive3, newer


def test_held_ad_chains_are_stale_exactly_as_on_ad_counts_them() -> None:
    """The second pass's shortcut (the very chain the table holds: counted in
    `stale_ad`, not applied) gives what `Ads.on_ad` gives for those ads one by one:
    the same counters, in the same key order, and the same table, whether the message
    shares the table's objects (the simulator) or is a decoded copy (the wire)."""
    shared, copied, alive3, newer = _twin_cores()
    # Every held record, plus an ad newer than the held one for member 3.
    msg = PushPull((*shared.table.records(), MemberRecord(alive3, None, (newer,))))
    wire = PushPull(tuple(MemberRecord.from_wire(r.to_wire()) for r in msg.states))
    assert all(w.ads[0] is not r.ads[0] for w, r in zip(wire.states, msg.states, strict=True))
    for core, m in ((shared, msg), (copied, wire)):
        core.handle(Received(IDS[2], m), 2.0)
    assert list(shared.stats.items()) == list(copied.stats.items())
    assert shared.stats["stale_ad"] >= 8  # 6 full ads and 2 deltas held
    for p in IDS[1:7]:
        a, b = shared.table.get(p), copied.table.get(p)
        assert a is not None and b is not None
        assert (a.ad_version, a.ad) == (b.ad_version, b.ad)
    held = shared.table.get(IDS[3])
    assert held is not None and held.ad_version == 5


def test_shared_one_ad_records_settled_in_the_first_pass_count_as_the_long_way() -> None:
    """A claim's shared one-ad record (`Alive.ad_record`) holding the claim and ad the
    table holds is settled in the first pass once `stale_ad` is a counter: the same
    counters (key order included) and table as a decoded copy merged the long way."""
    shared, copied, alive3, newer = _twin_cores()
    for t, extra in ((2.0, (MemberRecord(alive3, None, (newer,)),)),
                     (3.0, (Alive.create(KEYS[7], 0).plain_record(),))):
        msg = PushPull((*shared.table.records(), *extra))
        wire = PushPull(tuple(MemberRecord.from_wire(r.to_wire()) for r in msg.states))
        shortcut = sum(1 for r in msg.states if r.alive.ad_record_cache is not None
                       and r is r.alive.ad_record_cache[1])
        assert shortcut >= 4  # members 3..6: one full ad each, shared records
        for core, m in ((shared, msg), (copied, wire)):
            core.handle(Received(IDS[2], m), t)
        assert list(shared.stats.items()) == list(copied.stats.items())
    assert "stale_ad" in shared.stats
    for p in IDS[1:8]:
        a, b = shared.table.get(p), copied.table.get(p)
        assert a is not None and b is not None
        assert ((a.alive.incarnation, a.ad_version, a.ad)
                == (b.alive.incarnation, b.ad_version, b.ad))
