"""Reachability core (sans-IO, virtual time), dial-back guard and plan, STUN codec."""

from __future__ import annotations

import random
import struct

import pytest

from overlay.core.errors import MalformedFrame
from overlay.p2p.reachability import (
    AskDialback,
    DialbackGuard,
    GuardConfig,
    ProbeStun,
    ReachabilityConfig,
    ReachabilityCore,
    Status,
    StatusChanged,
    ad_value,
    decide,
    plan_dialback,
)
from overlay.runtime.edge.dialback import decode_request, decode_response
from overlay.runtime.edge.stun_probe import (
    MAGIC_COOKIE,
    StunError,
    binding_request,
    classify,
    parse_binding_response,
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


def asked(effects: list[object]) -> list[object]:
    return [e.peer for e in effects if isinstance(e, AskDialback)]


def test_first_round_asks_three_peers_then_nat_after_two_failures() -> None:
    core = ReachabilityCore(CFG, random.Random(1), now=0.0)
    core.set_candidates(["a", "b", "c", "d"])
    assert core.next_deadline() == 2.0
    assert core.handle_timer(1.9) == []
    eff = core.handle_timer(2.0)
    assert len(asked(eff)) == 3 and ProbeStun() in eff
    p, q, _ = asked(eff)
    assert core.on_answer(p, False, 2.5, observed="/ip4/198.18.0.21/tcp/3000") == []
    out = core.on_answer(q, False, 2.6, observed="/ip4/198.18.0.21/tcp/3001")
    assert out == [StatusChanged(Status.NAT, "unknown")]
    assert core.status is Status.NAT
    # Backed by 2 answers: settled, so the next round is a re-check 600 s later.
    core.on_stun("none", 3.0)
    assert core.next_deadline() == pytest.approx(602.6)
    assert core.observed_addrs() == {"/ip4/198.18.0.21/tcp/3000": 1,
                                     "/ip4/198.18.0.21/tcp/3001": 1}


def test_next_round_prefers_peers_not_asked_yet() -> None:
    core = ReachabilityCore(CFG, random.Random(2), now=0.0)
    core.set_candidates(["a", "b", "c", "d"])
    first = set(asked(core.handle_timer(2.0)))
    second = asked(core.handle_timer(17.0))
    assert (set("abcd") - first) <= set(second)


def test_single_peer_colony_decides_on_one_answer_but_rechecks_soon() -> None:
    core = ReachabilityCore(CFG, random.Random(3), now=0.0)
    core.set_candidates(["seed"])
    assert asked(core.handle_timer(2.0)) == ["seed"]
    assert core.on_answer("seed", True, 2.2) == [StatusChanged(Status.PUBLIC, "unknown")]
    assert core.next_deadline() == pytest.approx(17.0)  # one answer: not settled


def test_nobody_to_ask_retries_after_first_check_interval() -> None:
    core = ReachabilityCore(CFG, random.Random(4), now=0.0)
    assert asked(core.handle_timer(2.0)) == []
    assert core.next_deadline() == pytest.approx(4.0)


def test_answers_expire_back_to_unknown() -> None:
    core = ReachabilityCore(CFG, random.Random(5), now=0.0)
    core.set_candidates(["a", "b"])
    core.handle_timer(2.0)
    core.on_answer("a", True, 2.1)
    core.on_answer("b", True, 2.2)
    assert core.status is Status.PUBLIC
    core.set_candidates([])
    out = core.handle_timer(2.2 + 1800 + 1)
    assert StatusChanged(Status.UNKNOWN, "unknown") in out
    assert core.status is Status.UNKNOWN


def test_refusals_are_no_evidence() -> None:
    core = ReachabilityCore(CFG, random.Random(6), now=0.0)
    core.set_candidates(["a", "b"])
    core.handle_timer(2.0)
    assert core.on_no_answer("a", 3.0) == []
    assert core.status is Status.UNKNOWN and core.answers == {}


def test_peers_that_cannot_answer_do_not_block_a_decision() -> None:
    """Two of three peers reach us only over WebRTC (no IP to dial back): the one
    that can answer decides, and the others are asked last in later rounds."""
    core = ReachabilityCore(CFG, random.Random(8), now=0.0)
    core.set_candidates(["relayed1", "relayed2", "direct"])
    core.handle_timer(2.0)
    core.on_no_answer("relayed1", 2.1)
    assert core.on_answer("direct", True, 2.2) == []  # need is still 2 of 2 askable
    out = core.on_no_answer("relayed2", 2.3)
    assert out == [StatusChanged(Status.PUBLIC, "unknown")]
    core.set_candidates(["relayed1", "relayed2", "direct", "new"])
    following = asked(core.handle_timer(core.next_deadline()))
    assert set(following[:2]) == {"direct", "new"} and len(following) == 3


def test_stun_result_reaches_the_ad_value() -> None:
    core = ReachabilityCore(CFG, random.Random(7), now=0.0)
    core.set_candidates(["a"])
    core.handle_timer(2.0)
    core.on_answer("a", False, 2.1)
    out = core.on_stun("symmetric", 2.5)
    assert out == [StatusChanged(Status.NAT, "symmetric")]
    assert out[0].ad_value == "nat/symmetric"
    assert core.next_deadline() <= 2.5 + CFG.interval_unknown_s
    # A failed later probe does not erase what we learnt.
    core.on_stun("unknown", 900.0, "no answer")
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


@pytest.mark.parametrize("bad", [
    None, [], {"addrs": "x"}, {"addrs": ["a"] * 9}, {"addrs": [1]},
    {"addrs": ["x" * 300]}, {"addrs": [], "t_ms": 1.5},
])
def test_decode_request_rejects_bad_input(bad: object) -> None:
    with pytest.raises(MalformedFrame):
        decode_request(bad)


def test_decode_response_keeps_only_wellformed_results() -> None:
    observed, results, t_ms = decode_response(
        {"observed": "/ip4/1.2.3.4/tcp/5", "t_ms": 7,
         "results": [{"ok": True}, {"ok": "yes"}, 3]})
    assert observed == "/ip4/1.2.3.4/tcp/5" and results == [{"ok": True}] and t_ms == 7
    with pytest.raises(MalformedFrame):
        decode_response({"results": 3})


def _binding_success(txid: bytes, ip: str, port: int) -> bytes:
    raw = int.from_bytes(bytes(int(x) for x in ip.split(".")), "big") ^ MAGIC_COOKIE
    value = struct.pack("!xBH", 1, port ^ (MAGIC_COOKIE >> 16)) + raw.to_bytes(4, "big")
    attrs = struct.pack("!HH", 0x8022, 3) + b"abc\x00"  # SOFTWARE, padded
    attrs += struct.pack("!HH", 0x0020, len(value)) + value
    return struct.pack("!HHI12s", 0x0101, len(attrs), MAGIC_COOKIE, txid) + attrs


def test_stun_codec_round_trip() -> None:
    txid = bytes(range(12))
    assert len(binding_request(txid)) == 20
    assert parse_binding_response(_binding_success(txid, "198.18.0.21", 40000), txid) == (
        "198.18.0.21", 40000)
    with pytest.raises(StunError):
        parse_binding_response(_binding_success(txid, "1.2.3.4", 1), bytes(12))
    with pytest.raises(StunError):
        parse_binding_response(_binding_success(txid, "1.2.3.4", 1)[:-3], txid)
    with pytest.raises(StunError):
        parse_binding_response(b"\x00" * 5, txid)


@pytest.mark.parametrize(("local", "mapped", "want"), [
    (("10.0.0.2", 5), [], "unknown"),
    (("198.18.0.2", 5), [("198.18.0.2", 5), ("198.18.0.2", 5)], "none"),
    (("10.0.0.2", 5), [("198.18.0.21", 5)], "unknown"),
    (("10.0.0.2", 5), [("198.18.0.21", 5), ("198.18.0.21", 5)], "endpoint-independent"),
    (("10.0.0.2", 5), [("198.18.0.22", 7), ("198.18.0.22", 9)], "symmetric"),
])
def test_classify(local: tuple[str, int], mapped: list[tuple[str, int]], want: str) -> None:
    assert classify(local, mapped) == want


# ---------------------------------------------------------------- the service's loop


class _Transport:
    """Just enough transport for the service loop: no peers connected."""

    listen_addrs = ("/ip4/127.0.0.1/tcp/4001",)

    def connected_peers(self) -> list[object]:
        return []


class _Daemon:
    def __init__(self) -> None:
        self.conf: dict[str, dict[str, object]] = {"edge": {"stun": []}}
        self.t = _Transport()
        self.me = object()


def test_service_loop_sleeps_between_rounds() -> None:
    """Idle (nobody to ask): the loop wakes once per round, not in a spin."""
    import trio
    import trio.testing

    from overlay.runtime.edge.dialback import ReachabilityService

    calls = [0]

    async def main() -> None:
        svc = ReachabilityService(_Daemon())  # type: ignore[arg-type]
        real = svc.core.handle_timer

        def counted(now: float) -> list[object]:
            calls[0] += 1
            if calls[0] > 1000:
                raise AssertionError("reachability loop spins")
            return real(now)  # type: ignore[return-value]

        svc.core.handle_timer = counted  # type: ignore[method-assign]
        with trio.move_on_after(100):
            await svc.run()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # A round every first_check_s (2 s) while nobody can be asked, + the STUN result.
    assert 40 <= calls[0] <= 60, calls[0]


def test_clock_keeps_the_shortest_round_trip_sample() -> None:
    core = ReachabilityCore(CFG, random.Random(9), now=0.0)
    core.on_answer("a", True, 1.0, clock_offset_s=0.30, rtt_s=0.50)
    core.on_answer("a", True, 20.0, clock_offset_s=0.02, rtt_s=0.04)
    core.on_answer("a", True, 40.0, clock_offset_s=0.20, rtt_s=0.30)
    assert core.clock_offsets() == {"a": (0.02, 0.02)}


@pytest.mark.parametrize(("offsets", "unc", "ok"), [
    ({"p": 0.1}, {"p": 0.05}, True),
    ({"p": -2.5}, {"p": 0.1}, False),
    ({"p": 2.1}, {"p": 0.2}, True),  # within the error bar of the limit
])
def test_clock_check(offsets: dict[str, float], unc: dict[str, float], ok: bool) -> None:
    from overlay.runtime.edge.doctor_checks import clock_check

    assert clock_check(offsets, unc).ok is ok


def test_observed_addrs_merge_dialback_and_identify_per_peer() -> None:
    core = ReachabilityCore(CFG, random.Random(10), now=0.0)
    core.on_answer("a", False, 1.0, observed="/ip4/198.18.0.21/tcp/1000")
    core.on_identify("a", "/ip4/198.18.0.21/tcp/1000")  # same peer, same address: once
    core.on_identify("b", "/ip4/198.18.0.21/tcp/1000")
    core.on_identify("c", "/ip4/198.18.0.21/tcp/2000")
    core.on_identify("d", None)
    assert core.observed_addrs() == {"/ip4/198.18.0.21/tcp/1000": 2,
                                     "/ip4/198.18.0.21/tcp/2000": 1}


@pytest.mark.parametrize(("status", "mode", "ok"), [
    ("nat", "server", False), ("nat", "client", True), ("public", "server", True),
    ("public", "client", True), ("unknown", "server", True),
])
def test_dht_mode_check(status: str, mode: str, ok: bool) -> None:
    from overlay.runtime.api.routes_doctor import dht_mode_check

    assert dht_mode_check(status, {"dht": {"mode": mode}}).ok is ok
