"""`AntiEntropy.merge` applies a push-pull's claims in the documented merge order.

The order (gossip/push_pull.py): every record's alive claim first, except a dead or
left member we do not know (its accusation at or above the claim's incarnation), then
each record's accusation and ads, in record order. An alive claim that is the very
object the table holds is stale: counted in `stale_alive`, not applied. `merge` takes
shortcuts for the claims' shared plain records (`Alive.plain_record`); this checks it
against that definition written out as two plain passes, on a message that mixes
every kind of record.
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
