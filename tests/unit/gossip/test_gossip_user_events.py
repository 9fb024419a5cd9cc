"""Per-sender ordering, duplicate suppression, hold-back and bounds of user events."""

from gossip.messages import UserEvent
from gossip.user_events import EventOrderer
from overlay.core.crypto import KeyPair

KA, KB = KeyPair(b"\x01" * 32), KeyPair(b"\x02" * 32)


def ev(seq: int, lamport: int = 0, keys: KeyPair = KA) -> UserEvent:
    return UserEvent.create(keys, "e", bytes([seq % 256]), lamport or seq + 1, seq)


def test_in_order_delivery_and_duplicates() -> None:
    o = EventOrderer(10, 8, 5.0)
    assert o.offer(ev(0), 0.0) == (True, [ev(0)])
    assert o.offer(ev(2), 0.0) == (True, [])  # held: 1 is missing
    assert o.offer(ev(2), 0.0) == (False, [])
    assert o.offer(ev(1), 0.0) == (True, [ev(1), ev(2)])
    assert o.offer(ev(1), 1.0) == (False, [])
    assert o.duplicates == 2
    assert o.lamport >= 4


def test_gap_skipped_after_holdback() -> None:
    o = EventOrderer(10, 8, 5.0)
    o.offer(ev(0), 0.0)
    o.offer(ev(3), 1.0)
    assert o.expire(5.9) == []
    assert o.expire(6.0) == [ev(3)]
    assert o.gaps == 2
    assert o.offer(ev(1), 7.0) == (True, [ev(1)])  # late, delivered once
    assert o.offer(ev(1), 7.0) == (False, [])


def test_bounded_holdback_and_senders() -> None:
    o = EventOrderer(2, 3, 100.0)
    o.offer(ev(0), 0.0)
    for s in range(2, 6):
        o.offer(ev(s), 0.0)
    assert o.held_count() <= 3
    o.offer(ev(0, keys=KB), 0.0)
    o.offer(ev(0, keys=KeyPair(b"\x03" * 32)), 0.0)
    assert len(o) == 2


def test_lamport_clock_witnesses_and_ticks() -> None:
    o = EventOrderer(10, 8, 5.0)
    o.offer(ev(0, lamport=41), 0.0)
    assert o.tick() == 43
