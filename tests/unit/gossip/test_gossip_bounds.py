"""Counters a peer can push, and replays after reaping: each test failed before its fix.

- an accusation (or a past life's alive) about us carries an incarnation at the edge of
  the wire's range, or far above ours: we would refute with one no peer accepts;
- a user event with a Lamport time at the edge: our next event would carry 2^63;
- an old signed alive claim replayed after its member was reaped brought it back.
"""

import random
from collections import deque
from typing import Any

from gossip.events import Join, MemberReaped, SendUserEvent, UserEventReceived
from gossip.member_table import MemberTable
from gossip.members import MemberState
from gossip.messages import (
    Accuse,
    AccuseKind,
    Alive,
    Gossip,
    MemberRecord,
    PushPull,
    UserEvent,
    decode_message,
)
from gossip.profiles import LAN, SwimConfig
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, Received, Send, SetTimer, TimerFired
from overlay.core.ids import PeerId
from overlay.core.validate import COUNTER_LIMIT, MAX_COUNTER_JUMP
from overlay.core.wire import cbor_decode, cbor_encode

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]
IDS = [k.peer_id for k in KEYS]
A, B, C, D = IDS
EDGE = (1 << 63) - 1


class Wire:
    """Sends delivered at once in FIFO order, timers recorded and fired by hand."""

    def __init__(self, cfg: SwimConfig = LAN, n: int = 3) -> None:
        self.cfg = cfg
        self.cores = {IDS[i]: Swim(KEYS[i], cfg, rng=random.Random(i)) for i in range(n)}
        self.down: set[PeerId] = set()
        self.events: list[tuple[PeerId, Any]] = []

    def feed(self, peer: PeerId, inp: Any, now: float) -> None:
        first = self.cores[peer].handle(inp, now)
        q: deque[tuple[PeerId, Effect]] = deque((peer, e) for e in first)
        while q:
            who, e = q.popleft()
            if isinstance(e, Send) and e.peer in self.cores and e.peer not in self.down:
                # Through the codec, as a real peer would see it.
                msg = decode_message(cbor_decode(cbor_encode(e.msg.to_wire())))
                q.extend((e.peer, x) for x in self.cores[e.peer].handle(Received(who, msg), now))
            elif isinstance(e, Emit):
                self.events.append((who, e.event))
            elif isinstance(e, SetTimer):
                pass

    def join_all(self) -> None:
        ids = list(self.cores)
        self.feed(ids[0], Join(), 0.0)
        for _ in range(2):
            for p in ids[1:]:
                self.feed(p, Join((ids[0],)), 0.0)


def roundtrips(u: Any) -> bool:
    return decode_message(cbor_decode(cbor_encode(Gossip((u,)).to_wire()))) == Gossip((u,))


def test_accusation_at_the_edge_of_the_range_is_refused() -> None:
    w = Wire()
    w.join_all()
    a = w.cores[A]
    w.feed(A, Received(B, Gossip((Accuse.create(KEYS[1], A, EDGE, AccuseKind.SUSPECT),))), 1.0)
    assert a.incarnation == 0  # before: 2^63, a claim every peer refuses at decode
    assert a.stats["incarnation_out_of_range"] == 1
    w.feed(A, Received(B, Gossip((Accuse.create(KEYS[1], A, 3, AccuseKind.SUSPECT),))), 1.1)
    assert a.incarnation == 4 and roundtrips(a.local.alive)


def test_accusation_jump_is_limited_and_the_refutation_always_decodes() -> None:
    w = Wire()
    w.join_all()
    a = w.cores[A]
    far = Accuse.create(KEYS[1], A, MAX_COUNTER_JUMP + 1, AccuseKind.DEAD)
    w.feed(A, Received(B, Gossip((far,))), 1.0)
    assert a.incarnation == 0
    near = Accuse.create(KEYS[1], A, MAX_COUNTER_JUMP, AccuseKind.DEAD)
    w.feed(A, Received(B, Gossip((near,))), 1.0)
    assert a.incarnation == MAX_COUNTER_JUMP + 1 and roundtrips(a.local.alive)


def accuse(inc: int) -> Accuse:
    """B says we (A) are dead at `inc`."""
    return Accuse.create(KEYS[1], A, inc, AccuseKind.DEAD)


def test_refutation_never_leaves_the_range() -> None:
    w = Wire()
    w.join_all()
    a = w.cores[A]
    a.local.incarnation = COUNTER_LIMIT - 2  # as if pushed there by 2^30 accepted claims
    w.feed(A, Received(B, Gossip((accuse(COUNTER_LIMIT - 1),))), 1.0)
    assert a.incarnation == COUNTER_LIMIT and roundtrips(a.local.alive)
    w.feed(A, Received(B, Gossip((accuse(COUNTER_LIMIT),))), 1.1)
    assert a.incarnation == COUNTER_LIMIT  # refused: the refutation would leave the range


def test_observers_refuse_a_far_accusation_about_another_member() -> None:
    w = Wire()
    w.join_all()
    acc = Accuse.create(KEYS[1], C, 1 << 40, AccuseKind.DEAD)
    w.feed(A, Received(B, Gossip((acc,))), 1.0)
    assert w.cores[A].members[C].state is MemberState.ALIVE
    assert w.cores[A].members[C].incarnation == 0


def test_past_life_alive_far_ahead_is_ignored() -> None:
    w = Wire()
    w.join_all()
    w.feed(A, Received(B, Gossip((Alive.create(KEYS[0], EDGE),))), 1.0)
    assert w.cores[A].incarnation == 0


def test_alive_claim_at_the_edge_is_refused() -> None:
    w = Wire(n=2)
    w.join_all()
    w.feed(A, Received(B, Gossip((Alive.create(KEYS[3], EDGE),))), 1.0)
    assert D not in w.cores[A].members
    assert w.cores[A].stats["incarnation_out_of_range"] == 1


def test_user_event_lamport_at_the_edge_is_dropped() -> None:
    w = Wire()
    w.join_all()
    a = w.cores[A]
    ev = UserEvent.create(KEYS[1], "e", b"x", EDGE, 0)
    w.feed(A, Received(B, Gossip((ev,))), 1.0)
    assert a.stats["event_lamport_out_of_range"] == 1
    w.feed(A, SendUserEvent("mine", b"y"), 1.1)
    assert a.user_events.orderer.lamport < 16  # before: 2^63, refused by every peer
    for t in range(4):
        w.feed(A, TimerFired("gossip"), 1.2 + t * 0.2)  # through the codec to B and C
    got = [e for p, e in w.events if p == B and isinstance(e, UserEventReceived)]
    assert [(e.sender, e.name) for e in got] == [(A, "mine")]
    ok = UserEvent.create(KEYS[1], "e", b"x", 1000, 1)
    w.feed(A, Received(B, Gossip((ok,))), 2.0)
    assert a.user_events.orderer.lamport == 1001


def reaped_world() -> tuple[Wire, Alive]:
    w = Wire(LAN.with_(tombstone_s=50.0), n=3)
    w.join_all()
    old = w.cores[C].local.alive
    dead = Gossip((Accuse.create(KEYS[1], C, 0, AccuseKind.DEAD),))
    w.feed(A, Received(B, dead), 10.0)
    w.down.add(C)
    w.feed(A, TimerFired("pushpull"), 61.0)
    assert [e.peer for p, e in w.events if p == A and isinstance(e, MemberReaped)] == [C]
    return w, old


def test_replayed_alive_after_reaping_does_not_resurrect() -> None:
    w, old = reaped_world()
    w.feed(A, Received(B, Gossip((old,))), 70.0)
    assert C not in w.cores[A].members  # before: back as ALIVE
    assert w.cores[A].stats["stale_alive_reaped"] >= 1


def test_restarted_member_outbids_its_tombstone() -> None:
    w, _ = reaped_world()
    w.down.discard(C)
    w.cores[C] = Swim(KEYS[2], w.cfg, rng=random.Random(99))  # state lost: incarnation 0
    w.feed(C, Join((A,)), 80.0)
    assert w.cores[C].incarnation == 1
    w.feed(C, Join((A,)), 80.5)  # the next knock carries the refutation
    m = w.cores[A].members.get(C)
    assert m is not None and m.state is MemberState.ALIVE and m.incarnation == 1
    assert w.cores[A].table.tombstone(C) is None


def test_tombstones_are_bounded_and_drops_counted() -> None:
    t = MemberTable(max_tombstones=2)
    rng = random.Random(0)
    for k in KEYS[1:]:
        m = t.add(Alive.create(k, 0), 0.0, rng)
        t.set_state(m, MemberState.DEAD, 0.0)
        m.accuse = Accuse.create(KEYS[0], k.peer_id, 0, AccuseKind.DEAD)
    assert len(t.reap(1.0)) == 3
    assert t.tombstone_count() == 2 and t.tombstones_dropped == 1
    assert t.tombstone(B) is None and isinstance(t.tombstone(D), MemberRecord)
    t.check_invariants()


def test_restarted_member_refutes_its_past_life_even_if_the_accuser_is_unknown() -> None:
    fresh = Swim(KEYS[2], LAN, rng=random.Random(5))
    fresh.handle(Join((A,)), 0.0)
    old = Alive.create(KEYS[2], 3)
    tomb = MemberRecord(old, Accuse.create(KEYS[3], C, 3, AccuseKind.DEAD))  # D: unknown
    me_a = MemberRecord(Alive.create(KEYS[0], 0))
    fresh.handle(Received(A, PushPull((me_a, tomb), reply=True)), 1.0)
    assert fresh.incarnation == 4  # outbids the tombstone (3) through its old alive
