"""The SWIM core driven by hand: explicit `now`, messages delivered by a tiny FIFO wire."""

import dataclasses
import random
import sys
import tracemalloc
from typing import Any

import pytest
from helpers.core_net import CoreNet

from gossip.events import (
    Join,
    Leave,
    LeftColony,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberSuspected,
    MemberUpdated,
    SendUserEvent,
    UpdateAd,
    UserEventReceived,
)
from gossip.member_table import MemberTable
from gossip.members import MemberState, slot_int
from gossip.messages import (
    KIND_ALIVE,
    Accuse,
    AccuseKind,
    Ack,
    Alive,
    Gossip,
    Nack,
    Ping,
    PingReq,
    PushPull,
    UserEvent,
)
from gossip.profiles import LAN, SwimConfig
from gossip.resources import ResourceAd, parse_query
from gossip.swim import Swim
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import Received, Send, SetTimer, TimerFired
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_encode

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(8)]
IDS = [k.peer_id for k in KEYS]
A, B, C, D = IDS[:4]


class Wire(CoreNet):
    """Delivers Sends immediately in FIFO order; timers are recorded, fired by hand."""

    def __init__(self, cfg: SwimConfig = LAN, n: int = 3) -> None:
        super().__init__(manual_timers=True)
        for i in range(n):
            self.add(IDS[i], Swim(KEYS[i], cfg, rng=random.Random(i)))

    def join_all(self, now: float = 0.0) -> None:
        ids = list(self.cores)
        self.feed(ids[0], Join(), now)
        for p in ids[1:]:
            self.feed(p, Join((ids[0],)), now)
        # one push-pull round so that everyone learns everyone
        for p in ids[1:]:
            self.feed(p, Join((ids[0],)), now)


def state(w: Wire, at: PeerId, of: PeerId) -> MemberState:
    core: Swim = w.cores[at]
    return core.members[of].state


def test_join_by_push_pull_learns_everyone() -> None:
    w = Wire(n=4)
    w.join_all()
    for p, core in w.cores.items():
        assert sorted(core.members, key=lambda x: x.raw) == sorted(
            (q for q in w.cores if q != p), key=lambda x: x.raw
        )
        assert core.num_members() == 4
    assert len(w.of(MemberJoined, A)) == 3


def probe_until(w: Wire, prober: PeerId, target: PeerId, now: float) -> Ping:
    for i in range(50):
        w.fire(prober, "probe", now + i * 0.001)
        pings = [m for s, d, m in w.sends if s == prober and isinstance(m, Ping) and d == target]
        if pings:
            return pings[-1]
    raise AssertionError("target never probed")


def test_probe_ack_measures_rtt_and_lowers_health_score() -> None:
    w = Wire(n=2)
    w.join_all()
    w.cores[A].awareness.apply_delta(2)
    probe_until(w, A, B, 1.0)
    assert w.cores[A].awareness.score == 1
    assert w.cores[A].rtt_estimate(B) == 0.0  # delivered instantly by this wire


def test_failed_probe_goes_indirect_then_suspects() -> None:
    w = Wire(n=3)
    w.join_all()
    w.kill(C)
    probe_until(w, A, C, 1.0)
    w.fire(A, "probe-timeout", 1.5)
    reqs = [m for s, d, m in w.sends if s == A and isinstance(m, PingReq)]
    assert reqs and reqs[-1].target == C
    relay = next(t for t in w.timers[B] if isinstance(t, tuple) and t[0] == "relay")
    w.fire(B, relay, 2.0)  # B got no ack from C: nack to A (Lifeguard)
    assert any(isinstance(m, Nack) for s, d, m in w.sends if s == B and d == A)
    score = w.cores[A].awareness.score
    w.fire(A, "probe", 2.1)  # end of the probe interval
    assert w.cores[A].awareness.score == score  # the nack arrived: we are healthy
    assert state(w, A, C) is MemberState.SUSPECT
    assert state(w, B, C) is MemberState.SUSPECT  # gossiped to B by piggyback
    sus = w.of(MemberSuspected, A)
    assert sus and sus[0].peer == C and sus[0].accuser == A


def test_missing_nacks_raise_own_health_score() -> None:
    w = Wire(n=3)
    w.join_all()
    w.kill(B)
    w.kill(C)
    probe_until(w, A, C, 1.0)
    w.fire(A, "probe-timeout", 1.5)
    w.fire(A, "probe", 2.0)
    assert w.cores[A].awareness.score == 1  # one helper, no nack


def test_suspect_refutes_and_suspicion_is_cancelled() -> None:
    w = Wire(n=3)
    w.join_all()
    acc = Accuse.create(KEYS[0], C, 0, AccuseKind.SUSPECT)
    w.feed(B, Received(A, Gossip((acc,))), 1.0)
    assert state(w, B, C) is MemberState.SUSPECT
    w.feed(C, Received(A, Gossip((acc,))), 1.1)
    assert w.cores[C].incarnation == 1
    assert w.cores[C].awareness.score == 1
    # C's refutation rides its next gossip round
    w.fire(C, "gossip", 1.2)
    w.fire(C, "gossip", 1.4)
    assert state(w, B, C) is MemberState.ALIVE
    assert w.cores[B].members[C].incarnation == 1
    assert any(e.peer == C for e in w.of(MemberUpdated, B))


def test_suspicion_expires_into_failure_and_confirmations_shorten_it() -> None:
    w = Wire(n=4)
    w.join_all()
    w.feed(A, Received(B, Gossip((Accuse.create(KEYS[1], D, 0, AccuseKind.SUSPECT),))), 10.0)
    t0 = w.timers[A][("suspect", D)]
    w.feed(A, Received(C, Gossip((Accuse.create(KEYS[2], D, 0, AccuseKind.SUSPECT),))), 10.5)
    t1 = w.timers[A][("suspect", D)]
    assert 10.0 < t1 < t0
    w.fire(A, ("suspect", D), t1)
    assert state(w, A, D) is MemberState.DEAD
    failed = w.of(MemberFailed, A)
    assert failed and failed[0].peer == D and failed[0].accuser == A


def test_buddy_system_tells_the_suspect_first() -> None:
    w = Wire(n=3)
    w.join_all()
    acc = Accuse.create(KEYS[1], C, 0, AccuseKind.SUSPECT)
    w.kill(C)
    w.feed(A, Received(B, Gossip((acc,))), 1.0)
    ping = probe_until(w, A, C, 1.1)
    assert ping.updates[0] == acc


# ------------------------------------------------------------------ bad input


def snapshot(core: Swim) -> Any:
    return (
        core.incarnation,
        {p: (m.state, m.incarnation, m.ad_version) for p, m in core.members.items()},
    )


def test_forged_alive_is_dropped_and_counted() -> None:
    w = Wire(n=3)
    w.join_all()
    real = Alive.create(KEYS[2], 0)
    forged = Alive.from_envelope(
        Envelope(KIND_ALIVE, cbor_encode({"i": 9}), KEYS[2].public.raw, real.env.signature)
    )
    before = snapshot(w.cores[A])
    w.feed(A, Received(B, Gossip((forged,))), 1.0)
    assert snapshot(w.cores[A]) == before
    assert w.cores[A].stats["bad_signature"] == 1


def test_nobody_refutes_on_behalf_of_another() -> None:
    w = Wire(n=3)
    w.join_all()
    w.feed(A, Received(B, Gossip((Accuse.create(KEYS[1], C, 0, AccuseKind.SUSPECT),))), 1.0)
    # B signs an alive "for C": the signer is B, so it is an alive about B.
    a = Alive.create(KEYS[1], 5)
    w.feed(A, Received(B, Gossip((a,))), 1.1)
    assert state(w, A, C) is MemberState.SUSPECT
    assert w.cores[A].members[B].incarnation == 5


def test_replayed_old_incarnation_is_stale() -> None:
    w = Wire(n=2)
    w.join_all()
    w.feed(B, Received(A, Gossip((Accuse.create(KEYS[0], B, 0, AccuseKind.SUSPECT),))), 1.0)
    w.fire(B, "gossip", 1.1)
    assert w.cores[A].members[B].incarnation == 1
    before = snapshot(w.cores[A])
    w.feed(A, Received(B, Gossip((Alive.create(KEYS[1], 0),))), 2.0)
    old = Accuse.create(KEYS[0], B, 0, AccuseKind.DEAD)
    w.feed(A, Received(B, Gossip((old,))), 2.0)
    assert snapshot(w.cores[A]) == before
    assert w.cores[A].stats["stale_alive"] >= 1
    assert w.cores[A].stats["stale_accusation"] >= 1


def test_accusation_from_non_member_is_dropped() -> None:
    w = Wire(n=3)
    w.join_all()
    stranger = KEYS[7]
    before = snapshot(w.cores[A])
    w.feed(A, Received(B, Gossip((Accuse.create(stranger, C, 0, AccuseKind.DEAD),))), 1.0)
    assert snapshot(w.cores[A]) == before
    assert w.cores[A].stats["accusation_from_non_member"] == 1


def test_accusations_are_rate_limited_per_accuser() -> None:
    w = Wire(LAN.with_(accuse_burst=2, accuse_refill_per_probe=0.5), n=6)
    w.join_all()
    accs = tuple(Accuse.create(KEYS[1], IDS[i], 0, AccuseKind.SUSPECT) for i in (2, 3, 4, 5))
    w.feed(A, Received(B, Gossip(accs)), 1.0)
    suspects = [p for p, m in w.cores[A].members.items() if m.state is MemberState.SUSPECT]
    assert len(suspects) == 2
    assert w.cores[A].stats["accusation_rate_limited"] == 2


def test_unknown_message_and_oversized_event_dropped() -> None:
    w = Wire(n=2)
    w.join_all()
    before = snapshot(w.cores[A])
    assert w.feed(A, Received(B, "not a gossip message"), 1.0) == []
    big = UserEvent.create(KEYS[1], "e", b"", 1, 0)
    big = UserEvent(big.env, big.sender, "e", b"x" * (64 * 1024 + 1), 1, 0)
    w.feed(A, Received(B, Gossip((big,))), 1.0)
    assert snapshot(w.cores[A]) == before
    assert w.cores[A].stats["unknown_message"] == 1
    assert w.cores[A].stats["event_oversized"] == 1
    with pytest.raises(LocalProtocolError):
        w.cores[A].handle(SendUserEvent("e", b"x" * (64 * 1024 + 1)), 1.0)
    with pytest.raises(LocalProtocolError):
        w.cores[A].handle(object(), 1.0)


def test_stale_timers_are_noops() -> None:
    w = Wire(n=2)
    w.join_all()
    core = w.cores[A]
    assert core.handle(TimerFired("probe-timeout"), 1.0) == []
    assert core.handle(TimerFired(("suspect", B)), 1.0) == []
    assert core.handle(TimerFired(("relay", 12345)), 1.0) == []
    core.handle(TimerFired(("nonsense", 1, 2)), 1.0)
    assert core.stats["unknown_timer"] == 1


# ------------------------------------------------------------------ lifecycle


def test_graceful_leave() -> None:
    w = Wire(n=3)
    w.join_all()
    w.feed(C, Leave(), 1.0)
    assert state(w, A, C) is MemberState.LEFT  # told directly
    w.fire(C, "leave", 2.0)
    assert w.of(LeftColony, C)
    assert w.cores[C].handle(TimerFired("probe"), 3.0) == []
    assert any(e.peer == C for e in w.of(MemberLeft, A))


def test_rejoin_after_restart_outbids_the_old_incarnation() -> None:
    w = Wire(n=3)
    w.join_all()
    w.feed(C, Leave(), 1.0)
    w.fire(C, "leave", 2.0)
    w.cores[C] = Swim(KEYS[2], LAN, rng=random.Random(99))  # restarted, incarnation 0
    w.feed(C, Join((A,)), 10.0)
    assert w.cores[C].incarnation >= 1
    w.fire(C, "gossip", 10.2)
    w.fire(C, "gossip", 10.4)
    assert state(w, A, C) is MemberState.ALIVE
    assert len([e for e in w.of(MemberJoined, A) if e.peer == C]) == 2


def test_dead_members_are_reaped_after_tombstone() -> None:
    cfg = LAN.with_(tombstone_s=50.0)
    w = Wire(cfg, n=3)
    w.join_all()
    dead = Gossip((Accuse.create(KEYS[1], C, 0, AccuseKind.DEAD),))
    w.feed(A, Received(B, dead), 10.0)
    w.feed(B, Received(A, dead), 10.0)
    w.kill(C)  # really gone: the reconnect attempt goes unanswered
    w.fire(A, "pushpull", 40.0)
    assert C in w.cores[A].members
    w.fire(A, "pushpull", 61.0)
    assert C not in w.cores[A].members and C not in w.cores[A].table.probe_order
    assert [e.peer for e in w.of(MemberReaped, A)] == [C]


def test_ads_full_then_deltas_and_queries() -> None:
    w = Wire(n=3)
    w.join_all()
    ad = ResourceAd.make(cpu_cores=8, gpus=1, labels={"site": "x"})
    w.feed(B, UpdateAd(ad), 1.0)
    w.fire(B, "gossip", 1.1)
    assert w.cores[A].members[B].ad == ad
    busy = ResourceAd.make(cpu_cores=8, cpu_load=7.5, gpus=1, labels={"site": "x"})
    w.feed(B, UpdateAd(busy), 2.0)
    w.fire(B, "gossip", 2.1)
    m = w.cores[A].members[B]
    assert m.ad == busy and m.ad_full is not None and len(m.ad_deltas) == 1
    assert w.cores[A].find(parse_query("cpu>=4 gpu>=1 site=x")) == [B]
    assert w.cores[A].find(parse_query("free_cpu>=2")) == []
    # a later joiner gets the full chain by push-pull
    w2 = w.cores[C]
    w.feed(C, Join((B,)), 3.0)
    assert w2.members[B].ad == busy


def test_two_ad_deltas_in_one_gossip_message_both_apply() -> None:
    """Two updates of one ad queued within a gossip interval ride in one message,
    newest first; the receiver applies them oldest first (else the newer is a gap)."""
    w = Wire(n=3)
    w.join_all()
    w.feed(B, UpdateAd(ResourceAd.make(cpu_cores=8)), 1.0)
    w.fire(B, "gossip", 1.1)
    w.feed(B, UpdateAd(ResourceAd.make(cpu_cores=8, cpu_load=3.0)), 2.0)
    last = ResourceAd.make(cpu_cores=8, cpu_load=3.0, reachability="public")
    w.feed(B, UpdateAd(last), 2.01)
    w.fire(B, "gossip", 2.1)
    for p in (A, C):
        assert w.cores[p].members[B].ad == last, p
        assert "ad_gap" not in w.cores[p].stats, w.cores[p].stats


def test_forged_ad_is_rejected() -> None:
    w = Wire(n=2)
    w.join_all()
    good = UpdateAd(ResourceAd(cpu_cores=2))
    w.feed(B, good, 1.0)
    env = w.cores[B].local.ad_full.env
    forged = Envelope(env.kind, cbor_encode({"v": 7, "r": {"c": 999}}), env.signer, env.signature)
    from gossip.messages import AdUpdate

    w.feed(A, Received(B, Gossip((AdUpdate.from_envelope(forged),))), 1.5)
    assert w.cores[A].members[B].ad is None
    assert w.cores[A].stats["bad_signature"] == 1


def test_user_events_delivered_once_in_order() -> None:
    w = Wire(n=3)
    w.join_all()
    for i in range(3):
        w.feed(B, SendUserEvent("deploy", bytes([i]) * 100), 1.0)
    for t in range(6):
        for p in w.cores:
            w.fire(p, "gossip", 1.1 + t * 0.2)
    for p in (A, C):
        got = [(e.sender, e.payload[0]) for e in w.of(UserEventReceived, p)]
        assert got == [(B, 0), (B, 1), (B, 2)]
    assert not w.of(UserEventReceived, B)


def test_ping_to_someone_else_is_ignored_and_ack_unexpected_counted() -> None:
    w = Wire(n=2)
    w.join_all()
    assert w.cores[A].handle(Received(B, Ping(7, C)), 1.0) == []
    w.cores[A].handle(Received(B, Ack(4242)), 1.0)
    assert w.cores[A].stats["ping_misdirected"] == 1
    assert w.cores[A].stats["ack_unexpected"] == 1


def test_push_pull_pages_large_states() -> None:
    w = Wire(LAN.with_(push_pull_page=2), n=5)
    w.join_all()
    pages = [m for s, d, m in w.sends if isinstance(m, PushPull) and s == A]
    assert max(m.pages for m in pages) == 3
    assert all(len(m.states) <= 2 for m in pages)
    assert len(w.cores[B].members) == 4


def test_signatures_verified_once_per_node() -> None:
    w = Wire(n=4)
    w.join_all()
    core = w.cores[D]
    verified = core.verifier.verified
    w.feed(D, Join((A,)), 5.0)  # the same states again: all stale, nothing verified
    assert core.verifier.verified == verified


def test_member_entry_memory() -> None:
    """Per-member cost of the table with shared signed objects (as in the simulator):
    the columns, the dict slot, the probe order and the prober's RTT and coordinate
    columns (7 floats). A cell of 10^4 nodes in 20 GiB needs ≤ ~200 B per entry."""
    alive = Alive.create(KEYS[0], 1)
    n = 2000
    alives = [dataclasses.replace(alive, peer=PeerId(b"\x00\x24" + i.to_bytes(36, "big")))
              for i in range(n)]
    rng = random.Random(1)
    slot_int(n)  # the slot numbers are shared by every table of the process
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    table = MemberTable()
    rtt, coords = table.column(1), table.column(6)
    for i, a in enumerate(alives):
        table.add(a, 12.5 + i, rng)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per = sum(s.size_diff for s in snap1.compare_to(snap0, "filename")) / n
    print(f"bytes per member entry: {per:.0f}", file=sys.stderr)
    assert len(table) == n and len(rtt) == len(coords) == 0
    assert per <= 175  # 161 measured: dict slot ~37, 5 reference columns 45, coords + RTT 60
    m = table[alives[7].peer]
    assert m.alive is alives[7] and m.since == 19.5 and m.state is MemberState.ALIVE


def test_quick_tick_answers_exactly_when_the_gossip_tick_is_idle() -> None:
    """`quick_tick` (the simulator's fast path) gives a deadline only when firing the
    gossip timer would do nothing but re-arm it at that deadline, and None otherwise."""
    w = Wire(n=3)
    w.join_all()
    core = w.cores[A]
    assert len(core.spread.bq) > 0  # fresh claims queued by the joins: not idle
    assert core.quick_tick("gossip", 1.0) is None
    now = 1.0
    effects = core.handle(TimerFired("gossip"), now)
    assert any(isinstance(e, Send) for e in effects)  # a busy tick sends
    for _ in range(100):  # gossip until the queue has drained
        if not len(core.spread.bq):
            break
        now += LAN.gossip_interval_s
        core.handle(TimerFired("gossip"), now)
    assert not len(core.spread.bq)
    now += LAN.gossip_interval_s
    at = core.quick_tick("gossip", now)
    assert at == now + LAN.gossip_interval_s
    before = (dict(core.stats), core.rng.getstate())
    assert core.handle(TimerFired("gossip"), now) == [SetTimer("gossip", at)]
    assert (dict(core.stats), core.rng.getstate()) == before  # nothing else changed
    assert core.quick_tick("probe", now) is None  # only the gossip tick has a fast path
    core.handle(SendUserEvent("deploy", b"v1"), now)  # a queued user event: busy again
    assert core.quick_tick("gossip", now) is None


def test_a_rejoin_whose_push_pulls_were_lost_keeps_knocking_on_its_seeds() -> None:
    # Campaign seed 1202: C and D left gracefully and came back; C's join push-pull to
    # its seed was lost, then D joined through C. Knowing D, C stopped knocking on its
    # seeds, and since the others hold C and D as left (nobody probes them), the two
    # stayed an island for good.
    w = Wire(n=4)
    w.join_all()
    for p, t in ((C, 1.0), (D, 3.0)):
        w.feed(p, Leave(), t)
        w.fire(p, "leave", t + 1.0)
    w.cores[C] = Swim(KEYS[2], LAN, rng=random.Random(98))
    w.cores[D] = Swim(KEYS[3], LAN, rng=random.Random(99))
    w.hold = lambda src, dst, msg: src == C and dst == A
    w.feed(C, Join((A,)), 10.0)
    assert w.drop_held() == 1  # the join's push-pull, lost
    w.hold = None
    w.feed(D, Join((C,)), 11.0)
    assert set(w.cores[C].members) == {D}
    w.fire(C, "pushpull", 40.0)
    assert {A, B} <= set(w.cores[C].members)
    for t in (40.2, 40.4, 40.6):
        w.fire(C, "gossip", t)
    assert state(w, A, C) is MemberState.ALIVE
