"""Lookup state machine and the core's request handling under hand-advanced time."""

from __future__ import annotations

import random

from dht import (
    ClosestPeers,
    FindNode,
    KadConfig,
    Kademlia,
    LookupDone,
)
from dht.lookup import ANSWERED, FAILED, NEW, WAITING, DisjointLookup, Lookup
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.ids import PeerId, key_of_bytes


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


ME = pid(0)
POOL = [pid(i) for i in range(1, 300)]


def by_distance(target: int, peers: list[PeerId]) -> list[PeerId]:
    return sorted(peers, key=lambda p: p.key ^ target)


# ------------------------------------------------------------------ pure lookup


def test_alpha_in_flight_and_termination_rule() -> None:
    target = 12345
    lk = Lookup(target, ME, k=3, alpha=2)
    near = by_distance(target, POOL)
    lk.add(near[3:8], hop=1)
    first = lk.next_queries()
    assert first == near[3:5] and lk.inflight == 2
    assert lk.next_queries() == []  # α reached
    # near[3] answers with the three truly closest peers
    assert lk.on_answer(near[3], near[0:3])
    q = lk.next_queries()
    assert q == [near[0]]
    assert not lk.finished()
    for p in (near[0], near[4]):
        lk.on_answer(p, [])
    q = lk.next_queries()
    assert q == [near[1], near[2]]
    for p in q:
        lk.on_answer(p, [])
    assert lk.finished()
    assert lk.closest() == near[0:3]
    assert lk.hops() == 2


def test_failure_widens_the_window() -> None:
    target = 999
    near = by_distance(target, POOL)
    lk = Lookup(target, ME, k=2, alpha=1)
    lk.add(near[:3], hop=1)
    assert lk.next_queries() == [near[0]]
    assert lk.on_failure(near[0])
    assert lk.state(near[0]) == FAILED
    assert lk.next_queries() == [near[1]]
    lk.on_answer(near[1], [])
    assert lk.next_queries() == [near[2]]
    assert not lk.finished()
    lk.on_answer(near[2], [])
    assert lk.finished()
    assert lk.closest() == [near[1], near[2]]


def test_unsolicited_and_duplicate_answers_change_nothing() -> None:
    lk = Lookup(7, ME, k=3, alpha=3)
    lk.add(POOL[:3], 1)
    qs = lk.next_queries()
    assert not lk.on_answer(POOL[50], POOL[60:70])  # never asked
    assert lk.on_answer(qs[0], [])
    assert not lk.on_answer(qs[0], POOL[60:70])  # duplicate
    assert not lk.on_failure(qs[0])
    assert lk.state(POOL[60]) is None
    assert lk.state(qs[0]) == ANSWERED and lk.state(qs[1]) == WAITING


def test_candidates_bounded_and_self_ignored() -> None:
    lk = Lookup(1, ME, k=4, alpha=3, max_candidates=10)
    lk.add([ME, *POOL[:50]], 1)
    assert len(lk) == 10
    assert lk.dropped == 40
    assert lk.state(ME) is None
    near = by_distance(1, POOL[:50])
    assert all(lk.state(p) == NEW for p in near[:10])


def test_no_candidates_is_finished() -> None:
    assert Lookup(1, ME).finished()


def test_disjoint_paths_never_share_a_peer() -> None:
    target = 4242
    dl = DisjointLookup(target, ME, k=3, alpha=1, d=2)
    dl.add(POOL[:6], 1)
    qs = dl.next_queries()
    assert len(qs) == 2 and dl.claims[qs[0]] != dl.claims[qs[1]]
    # path 0's peer tells us about peers path 1 already owns: they stay on path 1.
    owned_by_1 = [p for p, i in dl.claims.items() if i == 1]
    dl.on_answer(qs[0], owned_by_1 + POOL[100:103])
    for p in POOL[100:103]:
        assert dl.claims[p] == 0
    for p in owned_by_1:
        assert dl.claims[p] == 1


# ------------------------------------------------------------------ core, fake time


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def done(effects: list[Effect]) -> list[LookupDone]:
    return [e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, LookupDone)]


def make_core(n_peers: int = 10, **cfg: object) -> Kademlia:
    core = Kademlia(ME, KadConfig(**cfg), rng=random.Random(1))  # type: ignore[arg-type]
    for p in POOL[:n_peers]:
        core.table.seen(p, 0.0)
    return core


def answer(core: Kademlia, s: Send, closer: list[PeerId], now: float,
           frm: PeerId | None = None) -> list[Effect]:
    req = s.msg
    assert isinstance(req, DhtRequest)
    reply = KadMessage(req.msg.type, req.msg.key,
                       closer_peers=tuple(PeerInfo(p) for p in closer))
    return core.handle(Received(frm or s.peer, DhtResponse(req.rid, reply)), now)


def test_find_node_sends_alpha_requests_with_timers() -> None:
    core = make_core(alpha=3, rpc_timeout_s=5.0)
    eff = core.handle(FindNode(1, b"target"), 100.0)
    ss = sends(eff)
    assert len(ss) == 3
    target = key_of_bytes(b"target")
    assert [s.peer for s in ss] == by_distance(target, POOL[:10])[:3]
    for s in ss:
        assert isinstance(s.msg, DhtRequest)
        assert s.msg.msg == KadMessage(MessageType.FIND_NODE, b"target")
        # First the soft timeout: no RTT measured yet, so the initial RTO (2 s).
        assert SetTimer(("rpc", s.msg.rid), 102.0) in eff


def test_timeout_late_duplicate_and_foreign_responses() -> None:
    core = make_core(n_peers=4, alpha=1, k=3, rpc_timeout_s=5.0)
    eff = core.handle(FindNode(7, b"t"), 0.0)
    (s1,) = sends(eff)
    assert isinstance(s1.msg, DhtRequest)
    rid1 = s1.msg.rid
    # The peer we asked passes its soft timeout: it stalls, the next candidate is asked,
    # and its timer is re-armed for the hard timeout.
    eff = core.handle(TimerFired(("rpc", rid1)), 2.0)
    (s2,) = sends(eff)
    assert s2.peer != s1.peer
    assert SetTimer(("rpc", rid1), 5.0) in eff
    assert core.stats.rpc_stalls == 1 and core.stats.rpc_timeouts == 0
    # The hard timeout fails it.
    assert sends(core.handle(TimerFired(("rpc", rid1)), 5.0)) == []
    assert core.stats.rpc_timeouts == 1
    # A second, stale firing of the same timer is a no-op.
    assert core.handle(TimerFired(("rpc", rid1)), 5.5) == []
    # The late answer of the first peer is counted and ignored.
    assert sends(answer(core, s1, POOL[100:103], 6.0)) == []
    assert core.stats.late_or_duplicate_responses == 1
    # An answer carrying s2's rid but sent by another peer is ignored.
    assert answer(core, s2, POOL[100:103], 6.0, frm=POOL[200]) == []
    assert core.stats.unsolicited_responses == 1
    # The real answer cancels its timer and moves on.
    eff = answer(core, s2, [], 6.5)
    assert isinstance(s2.msg, DhtRequest)
    assert CancelTimer(("rpc", s2.msg.rid)) in eff
    # Duplicate of the same answer.
    answer(core, s2, [], 6.6)
    assert core.stats.late_or_duplicate_responses == 2
    # Drive to completion: answer everything else promptly.
    t = 7.0
    for _ in range(20):
        ss = sends(eff)
        if not ss:
            break
        eff = []
        for s in ss:
            eff += answer(core, s, [], t)
        t += 0.1
    (ld,) = done(eff)
    assert ld.request_id == 7 and ld.error is None
    assert isinstance(ld.result, ClosestPeers)
    assert s1.peer not in ld.result.peers  # it failed
    assert len(ld.result.peers) == 3
    assert core.running_lookups() == 0


def test_mismatched_response_type_fails_the_request() -> None:
    core = make_core(n_peers=3, alpha=1, k=3)
    (s,) = sends(core.handle(FindNode(1, b"x"), 0.0))
    assert isinstance(s.msg, DhtRequest)
    bad = DhtResponse(s.msg.rid, KadMessage(MessageType.PING))
    eff = core.handle(Received(s.peer, bad), 1.0)
    assert core.stats.mismatched_responses == 1
    assert len(sends(eff)) == 1  # moved on to the next peer


def test_peer_unreachable_fails_its_requests() -> None:
    core = make_core(n_peers=5, alpha=2, k=2)
    ss = sends(core.handle(FindNode(1, b"y"), 0.0))
    eff = core.handle(PeerUnreachable(ss[0].peer), 0.1)
    assert core.pending_rpcs() == 2  # one failed, a replacement was asked
    assert any(isinstance(e, CancelTimer) for e in eff)


def test_empty_table_finishes_with_an_error() -> None:
    core = Kademlia(ME, rng=random.Random(0))
    (ld,) = done(core.handle(FindNode(3, b"z"), 0.0))
    assert ld.error is not None and ld.result == ClosestPeers(())


def test_busy_limit_is_a_counted_refusal() -> None:
    core = make_core(max_lookups=1)
    core.handle(FindNode(1, b"a"), 0.0)
    (ld,) = done(core.handle(FindNode(2, b"b"), 0.0))
    assert ld.error == "busy" and core.stats.lookups_refused_busy == 1


def test_housekeeping_timers_are_armed_and_stale_firings_ignored() -> None:
    core = make_core(refresh_check_s=50.0)
    eff = core.handle(FindNode(1, b"a"), 0.0)
    assert SetTimer(("refresh",), 50.0) in eff
    assert core.handle(TimerFired(("refresh",)), 10.0) == []  # early: stale
    eff = core.handle(TimerFired(("refresh",)), 50.0)
    assert SetTimer(("refresh",), 100.0) in eff


def test_stalled_query_frees_its_slot_and_a_late_answer_still_counts() -> None:
    core = make_core(n_peers=6, alpha=1, k=3, rpc_timeout_s=10.0)
    (s1,) = sends(core.handle(FindNode(9, b"t"), 0.0))
    assert isinstance(s1.msg, DhtRequest)
    (s2,) = sends(core.handle(TimerFired(("rpc", s1.msg.rid)), 2.0))
    # s1 answers late, before its hard timeout: its answer is used, not dropped.
    answer(core, s1, [], 3.0)
    assert core.stats.late_answers_after_stall == 1
    assert core.stats.late_or_duplicate_responses == 0
    eff = answer(core, s2, [], 3.1)
    t = 3.2
    for _ in range(20):
        ss = sends(eff)
        if not ss:
            break
        eff = []
        for s in ss:
            eff += answer(core, s, [], t)
        t += 0.1
    (ld,) = done(eff)
    assert isinstance(ld.result, ClosestPeers)
    assert s1.peer in ld.result.peers


def test_soft_timeout_follows_measured_rtts() -> None:
    core = make_core(n_peers=40, alpha=3, k=20, rpc_timeout_s=10.0)
    eff = core.handle(FindNode(1, b"x"), 0.0)
    t = 0.0
    # Every query answers after 0.1 s: the RTO converges to max(0.25, srtt + 4·rttvar).
    for _ in range(30):
        ss = sends(eff)
        if not ss:
            break
        t += 0.1
        eff = []
        for s in ss:
            eff += answer(core, s, [], t)
    rto = core.rpcs.rtt.rto()
    assert 0.25 <= rto < 0.5
    timers = [e.at for e in core.handle(FindNode(2, b"y"), 50.0)
              if isinstance(e, SetTimer) and isinstance(e.timer, tuple) and e.timer[0] == "rpc"]
    assert timers and all(at == 50.0 + rto for at in timers)


def test_lookup_on_stall_frees_a_slot_and_leaves_the_window() -> None:
    target = 0
    lk = Lookup(target, ME, k=3, alpha=1)
    near = by_distance(target, POOL[:6])
    lk.add(near, 1)
    (q1,) = lk.next_queries()
    assert lk.next_queries() == []  # α = 1 in flight
    assert lk.on_stall(q1) and not lk.on_stall(q1)
    (q2,) = lk.next_queries()
    assert q2 != q1 and lk.inflight == 1
    # A late answer from the stalled peer is taken; its slot was already freed.
    assert lk.on_answer(q1, []) and lk.inflight == 1
    assert lk.on_answer(q2, [])
    while qs := lk.next_queries():
        for q in qs:
            lk.on_answer(q, [])
    assert lk.finished() and lk.closest() == near[:3]


def test_request_failed_fails_that_rpc_only() -> None:
    from dht import RequestFailed

    core = make_core(n_peers=6, alpha=2, k=3, rpc_timeout_s=10.0)
    s1, s2 = sends(core.handle(FindNode(4, b"t"), 0.0))
    assert isinstance(s1.msg, DhtRequest) and isinstance(s2.msg, DhtRequest)
    assert sends(core.handle(RequestFailed(s2.peer, s1.msg.rid), 0.5)) == []  # not its rpc
    eff = core.handle(RequestFailed(s1.peer, s1.msg.rid), 0.5)
    assert CancelTimer(("rpc", s1.msg.rid)) in eff
    (s3,) = sends(eff)  # the walk goes on without it
    assert s3.peer not in (s1.peer, s2.peer)
    assert core.pending_rpcs() == 2
