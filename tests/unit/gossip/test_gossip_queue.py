"""Broadcast queue: fewest-sent-first, invalidation, limits, user share."""

from typing import Any

from gossip.broadcast_queue import BroadcastQueue, take_split
from gossip.messages import Alive, Update, UserEvent, update_size
from overlay.core.crypto import KeyPair

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(40)]


def alive(i: int, inc: int = 0) -> Alive:
    return Alive.create(KEYS[i], inc)


def test_fewest_sent_first_and_retransmit_limit() -> None:
    q = BroadcastQueue(100)
    for i in range(3):
        q.queue(("m", i), alive(i))
    size = update_size(alive(0).env)
    out: list[Update] = []
    q.take(size, limit=2, out=out)  # room for one: newest first
    assert out == [alive(2)]
    out.clear()
    q.take(2 * size, limit=2, out=out)  # the two never-sent ones come before a resend
    assert out == [alive(1), alive(0)]
    out.clear()
    q.take(10 * size, limit=2, out=out)
    assert len(out) == 3 and len(q) == 0  # everyone reached the limit of 2


def test_newer_update_for_same_key_replaces_older() -> None:
    q = BroadcastQueue(10)
    q.queue(("m", 1), alive(1, 0))
    q.queue(("m", 1), alive(1, 5))
    out: list[Update] = []
    q.take(10_000, limit=5, out=out)
    assert out == [alive(1, 5)]
    q.invalidate(("m", 1))
    assert len(q) == 0


def test_bounded_drop_is_counted() -> None:
    q = BroadcastQueue(5)
    for i in range(8):
        q.queue(("m", i), alive(i))
    assert len(q) == 5 and q.dropped == 3


def test_user_events_are_not_starved_by_membership_churn() -> None:
    members, users = BroadcastQueue(4096), BroadcastQueue(64)
    for i in range(40):
        members.queue(("m", i), alive(i))
    ev = UserEvent.create(KEYS[0], "e", b"p" * 300, 1, 0)
    users.queue(("ev", 0), ev)
    out = take_split(members, users, budget=1400, user_share=0.4, limit=10)
    assert out[0] is ev
    assert sum(update_size(u.env) for u in out) <= 1400
    assert len(out) > 1  # membership used the rest


def test_large_event_uses_leftover_budget() -> None:
    members, users = BroadcastQueue(10), BroadcastQueue(10)
    big = UserEvent.create(KEYS[0], "big", b"b" * 60_000, 1, 0)
    users.queue(("ev", 0), big)
    members.queue(("m", 1), alive(1))
    out = take_split(members, users, budget=72 * 1024, user_share=0.4, limit=3)
    assert big in out and alive(1) in out


def _reference_take(queue: list[list[Any]], budget: int, limit: int) -> list[Update]:
    """The queue discipline spelled out on a plain list of [key, update, size, transmits,
    order] (fewest sent first, newest first within a count), scanning every entry: what
    `BroadcastQueue.take` must give, although it stops scanning once nothing can fit."""
    used, taken = 0, []
    for t in sorted({e[3] for e in queue}):
        for e in sorted((e for e in queue if e[3] == t), key=lambda e: -e[4]):
            if used + e[2] <= budget:
                taken.append(e)
                used += e[2]
        if budget - used < 112:
            break
    out: list[Update] = []
    for e in taken:
        e[3] += 1
        e[4] = max(x[4] for x in queue) + 1
        if e[3] >= limit:
            queue.remove(e)
        out.append(e[1])
    return out


def test_take_matches_a_full_scan_of_the_queue() -> None:
    """`take` stops at the first entry once the budget left is below any update's size;
    random queues of claims of different sizes (addresses) and random budgets give the
    same updates, in the same order, as scanning every entry, over many rounds."""
    import random

    rng = random.Random(7)
    claims = [Alive.create(KEYS[i], 0, tuple(f"/ip4/10.0.0.{j}/udp/1" for j in range(i % 9)))
              for i in range(40)]
    for _ in range(30):
        q = BroadcastQueue(1000)
        ref: list[list[Any]] = []
        order = 0
        for _step in range(60):
            if rng.random() < 0.4:
                i = rng.randrange(40)
                q.queue(("m", i), claims[i])
                ref = [e for e in ref if e[0] != ("m", i)]
                order += 1
                ref.append([("m", i), claims[i], update_size(claims[i].env), 0, order])
            budget = rng.choice([50, 111, 112, 300, 500, 1400, 3000])
            limit = rng.randint(1, 4)
            out: list[Update] = []
            q.take(budget, limit, out)
            assert out == _reference_take(ref, budget, limit)
            assert sorted(map(repr, q.keys())) == sorted(repr(e[0]) for e in ref)


def test_an_emptied_queue_frees_its_index_table_and_keeps_the_dict() -> None:
    """After a join's burst drains, the index dict (read directly by `Swim`, the prober
    and the dissemination) is the same object, but no longer holds a table sized for
    the burst: a dict never shrinks on deletion by itself."""
    import sys

    for drain in ("take", "invalidate"):
        q = BroadcastQueue(4096)
        index = q._index
        empty = sys.getsizeof(index)
        for i in range(40):
            for inc in range(25):  # 1,000 distinct keys, 40 signed claims reused
                q.queue(("m", i, inc), alive(i))
        assert sys.getsizeof(index) > 20 * empty
        if drain == "take":
            out: list[Update] = []
            while len(q):
                q.take(100_000, limit=1, out=out)
            assert len(out) == 1000
        else:
            keys = q.keys()  # a list: the walk does not see the invalidations
            for key in keys:
                q.invalidate(key)
        assert q._index is index and len(q) == 0
        assert sys.getsizeof(index) == empty, drain
        q.queue(("m", 0), alive(0))  # and it still works
        assert len(q) == 1
