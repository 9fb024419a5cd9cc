"""Reachability core (sans-IO, virtual time: every input through `handle(inp, now)`),
dial-back guard and plan."""

from __future__ import annotations

import random

import pytest

from overlay.core.effects import TimerFired
from overlay.p2p.reachability import (
    TIMER,
    AskDialback,
    CandidatesChanged,
    DialbackAnswered,
    DialbackFailed,
    DialbackGuard,
    GuardConfig,
    IdentifyObserved,
    ProbeStun,
    ReachabilityConfig,
    ReachabilityCore,
    Status,
    StatusChanged,
    StunProbed,
    ad_value,
    decide,
    plan_dialback,
)

CFG = ReachabilityConfig(first_check_s=2, interval_unknown_s=15, interval_settled_s=600,
                         peers_per_round=3, confirmations=2, result_ttl_s=1800)


@pytest.mark.parametrize(("results", "need", "want"), [
    ([], 1, Status.UNKNOWN),
    ([True], 1, Status.PUBLIC),
    ([False], 1, Status.NAT),
    ([True], 2, Status.UNKNOWN),
    ([True, True], 2, Status.PUBLIC),
    ([False, False, True], 2, Status.NAT),
    ([True, False], 1, Status.UNKNOWN),  # a tie is no decision
    ([True, True, False, False], 2, Status.UNKNOWN),
])
def test_decide_table(results: list[bool], need: int, want: Status) -> None:
    assert decide(results, need) is want


def tick(core: ReachabilityCore, now: float) -> list[object]:
    return list(core.handle(TimerFired(TIMER), now))


def candidates(core: ReachabilityCore, *peers: str) -> None:
    """The connected members the service may ask (it feeds them before each tick)."""
    assert core.handle(CandidatesChanged(peers), 0.0) == []


def asked(effects: list[object]) -> list[object]:
    return [e.peer for e in effects if isinstance(e, AskDialback)]


def test_first_round_asks_three_peers_then_nat_after_two_failures() -> None:
    core = ReachabilityCore(CFG, random.Random(1), now=0.0)
    candidates(core, "a", "b", "c", "d")
    assert core.next_deadline() == 2.0
    assert tick(core, 1.9) == []
    eff = tick(core, 2.0)
    assert len(asked(eff)) == 3 and ProbeStun() in eff
    p, q, _ = asked(eff)
    assert core.handle(DialbackAnswered(p, False, observed="/ip4/198.18.0.21/tcp/3000"), 2.5) == []
    out = core.handle(DialbackAnswered(q, False, observed="/ip4/198.18.0.21/tcp/3001"), 2.6)
    assert out == [StatusChanged(Status.NAT, "unknown")]
    assert core.status is Status.NAT
    # Backed by 2 answers: settled, so the next round is a re-check 600 s later.
    core.handle(StunProbed("none"), 3.0)
    assert core.next_deadline() == pytest.approx(602.6)
    assert core.observed_addrs() == {"/ip4/198.18.0.21/tcp/3000": 1,
                                     "/ip4/198.18.0.21/tcp/3001": 1}


def test_next_round_prefers_peers_not_asked_yet() -> None:
    core = ReachabilityCore(CFG, random.Random(2), now=0.0)
    candidates(core, "a", "b", "c", "d")
    first = set(asked(tick(core, 2.0)))
    second = asked(tick(core, 17.0))
    assert (set("abcd") - first) <= set(second)


def test_single_peer_colony_decides_on_one_answer_but_rechecks_soon() -> None:
    core = ReachabilityCore(CFG, random.Random(3), now=0.0)
    candidates(core, "seed")
    assert asked(tick(core, 2.0)) == ["seed"]
    out = core.handle(DialbackAnswered("seed", True), 2.2)
    assert out == [StatusChanged(Status.PUBLIC, "unknown")]
    assert core.next_deadline() == pytest.approx(17.0)  # one answer: not settled


def test_nobody_to_ask_retries_after_first_check_interval() -> None:
    core = ReachabilityCore(CFG, random.Random(4), now=0.0)
    assert asked(tick(core, 2.0)) == []
    assert core.next_deadline() == pytest.approx(4.0)


def test_answers_expire_back_to_unknown() -> None:
    core = ReachabilityCore(CFG, random.Random(5), now=0.0)
    candidates(core, "a", "b")
    tick(core, 2.0)
    core.handle(DialbackAnswered("a", True), 2.1)
    core.handle(DialbackAnswered("b", True), 2.2)
    assert core.snapshot()["status"] == "public"
    candidates(core)
    out = tick(core, 2.2 + 1800 + 1)
    assert StatusChanged(Status.UNKNOWN, "unknown") in out
    assert core.status is Status.UNKNOWN


def test_refusals_are_no_evidence() -> None:
    core = ReachabilityCore(CFG, random.Random(6), now=0.0)
    candidates(core, "a", "b")
    tick(core, 2.0)
    assert core.handle(DialbackFailed("a"), 3.0) == []
    assert core.status is Status.UNKNOWN and core.answers == {}


def test_peers_that_cannot_answer_do_not_block_a_decision() -> None:
    """Two of three peers reach us only over WebRTC (no IP to dial back): the one
    that can answer decides, and the others are asked last in later rounds."""
    core = ReachabilityCore(CFG, random.Random(8), now=0.0)
    candidates(core, "relayed1", "relayed2", "direct")
    tick(core, 2.0)
    core.handle(DialbackFailed("relayed1"), 2.1)
    assert core.handle(DialbackAnswered("direct", True), 2.2) == []  # need is still 2 of 2 askable
    out = core.handle(DialbackFailed("relayed2"), 2.3)
    assert out == [StatusChanged(Status.PUBLIC, "unknown")]
    candidates(core, "relayed1", "relayed2", "direct", "new")
    following = asked(tick(core, core.next_deadline()))
    assert set(following[:2]) == {"direct", "new"} and len(following) == 3


def test_stun_result_reaches_the_ad_value() -> None:
    core = ReachabilityCore(CFG, random.Random(7), now=0.0)
    candidates(core, "a")
    tick(core, 2.0)
    core.handle(DialbackAnswered("a", False), 2.1)
    out = core.handle(StunProbed("symmetric"), 2.5)
    assert out == [StatusChanged(Status.NAT, "symmetric")]
    assert isinstance(out[0], StatusChanged) and out[0].ad_value == "nat/symmetric"
    assert core.next_deadline() <= 2.5 + CFG.interval_unknown_s
    # A failed later probe does not erase what we learnt.
    core.handle(StunProbed("unknown", "no answer"), 900.0)
    assert core.nat_type == "symmetric"


@pytest.mark.parametrize(("status", "nat", "want"), [
    (Status.UNKNOWN, "symmetric", ""), (Status.PUBLIC, "none", "public"),
    (Status.NAT, "unknown", "nat"), (Status.NAT, "endpoint-independent",
                                     "nat/endpoint-independent"),
])
def test_ad_value(status: Status, nat: str, want: str) -> None:
    assert ad_value(status, nat) == want


def test_guard_limits_per_ip_and_refills() -> None:
    g = DialbackGuard(GuardConfig(per_ip_burst=2, per_ip_refill_s=10, global_burst=100,
                                  global_refill_s=1))
    assert g.allow("1.2.3.4", 0.0) and g.allow("1.2.3.4", 0.1)
    assert not g.allow("1.2.3.4", 0.2)
    assert g.allow("5.6.7.8", 0.2)  # another requester is not affected
    assert g.allow("1.2.3.4", 10.3)  # one token back after 10 s
    assert g.refused == 1


def test_guard_global_limit() -> None:
    g = DialbackGuard(GuardConfig(per_ip_burst=5, per_ip_refill_s=1, global_burst=3,
                                  global_refill_s=60))
    assert [g.allow(f"10.0.0.{i}", 0.0) for i in range(5)] == [True, True, True, False, False]


def test_plan_dials_only_the_observed_ip() -> None:
    req = ["/ip4/10.0.1.2/tcp/4001", "/ip4/8.8.8.8/tcp/53", "/ip4/10.0.1.2/tcp/4001",
           "/ip4/1.1.1.1/udp/9", "/dns4/x/tcp/80", "/ip4/1.2.3.4/tcp/99999", "garbage",
           "/ip4/1.2.3.4/tcp/5", "/ip4/1.2.3.4/tcp/6", "/ip4/1.2.3.4/tcp/7"]
    assert plan_dialback("198.18.0.21", req, 3) == [
        ("198.18.0.21", 4001), ("198.18.0.21", 53), ("198.18.0.21", 5)]
    assert plan_dialback("not-an-ip", req, 3) == []


def test_clock_keeps_the_shortest_round_trip_sample() -> None:
    core = ReachabilityCore(CFG, random.Random(9), now=0.0)
    core.handle(DialbackAnswered("a", True, clock_offset_s=0.30, rtt_s=0.50), 1.0)
    core.handle(DialbackAnswered("a", True, clock_offset_s=0.02, rtt_s=0.04), 20.0)
    core.handle(DialbackAnswered("a", True, clock_offset_s=0.20, rtt_s=0.30), 40.0)
    assert core.clock_offsets() == {"a": (0.02, 0.02)}


def test_observed_addrs_merge_dialback_and_identify_per_peer() -> None:
    core = ReachabilityCore(CFG, random.Random(10), now=0.0)
    core.handle(DialbackAnswered("a", False, observed="/ip4/198.18.0.21/tcp/1000"), 1.0)
    # The same peer at the same address counts once.
    core.handle(IdentifyObserved("a", "/ip4/198.18.0.21/tcp/1000"), 1.0)
    core.handle(IdentifyObserved("b", "/ip4/198.18.0.21/tcp/1000"), 1.0)
    core.handle(IdentifyObserved("c", "/ip4/198.18.0.21/tcp/2000"), 1.0)
    core.handle(IdentifyObserved("d", None), 1.0)
    assert core.observed_addrs() == {"/ip4/198.18.0.21/tcp/1000": 2,
                                     "/ip4/198.18.0.21/tcp/2000": 1}
