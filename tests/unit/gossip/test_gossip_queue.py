"""Broadcast queue: fewest-sent-first, invalidation, limits, user share."""

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
