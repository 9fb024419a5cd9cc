"""The runtime side of reachability: the dial-back wire codec, the STUN codec and
mapping classification, the service's loop on the real clock, and the doctor checks
that read its results."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from overlay.core.errors import MalformedFrame
from overlay.runtime.edge.dialback import decode_request, decode_response
from overlay.runtime.edge.stun_probe import (
    MAGIC_COOKIE,
    StunError,
    binding_request,
    classify,
    parse_binding_response,
)


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


def test_service_loop_sleeps_between_rounds() -> None:
    """Idle (nobody to ask): the loop wakes once per round, not in a spin. The service
    runs on small real objects: an unopened transport (no peers connected), gossip's
    membership and a driver over a gossip core."""
    import trio
    import trio.testing

    from gossip.swim import Swim
    from overlay.core.crypto import KeyPair
    from overlay.core.effects import TimerFired
    from overlay.runtime.driver import Driver
    from overlay.runtime.edge.dialback import ReachabilityService
    from overlay.runtime.net.transport import Transport
    from overlay.runtime.services.membership import SwimMembership

    calls = [0]

    async def main() -> None:
        kp = KeyPair.generate()
        swim = Swim(kp, rng=random.Random(1))
        svc = ReachabilityService(Transport(kp), SwimMembership(swim),
                                  Driver(swim, send=lambda peer, msg: None),
                                  me=kp.peer_id, stun_servers=[])  # fmt: skip
        real = svc.core.handle

        def counted(inp: Any, now: float) -> list[Any]:
            if isinstance(inp, TimerFired):
                calls[0] += 1
                if calls[0] > 1000:
                    raise AssertionError("reachability loop spins")
            return real(inp, now)

        svc.core.handle = counted  # type: ignore[method-assign]
        with trio.move_on_after(100):
            await svc.run()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # A round every first_check_s (2 s) while nobody can be asked, + the STUN result.
    assert 40 <= calls[0] <= 60, calls[0]


@pytest.mark.parametrize(("offsets", "unc", "ok"), [
    ({"p": 0.1}, {"p": 0.05}, True),
    ({"p": -2.5}, {"p": 0.1}, False),
    ({"p": 2.1}, {"p": 0.2}, True),  # within the error bar of the limit
])
def test_clock_check(offsets: dict[str, float], unc: dict[str, float], ok: bool) -> None:
    from overlay.runtime.edge.doctor_checks import clock_check

    assert clock_check(offsets, unc).ok is ok


@pytest.mark.parametrize(("status", "mode", "ok"), [
    ("nat", "server", False), ("nat", "client", True), ("public", "server", True),
    ("public", "client", True), ("unknown", "server", True), ("nat", "auto", True),
    ("public", "auto", True),
])
def test_dht_mode_check(status: str, mode: str, ok: bool) -> None:
    from overlay.runtime.api.routes_doctor import dht_mode_check

    assert dht_mode_check(status, {"dht": {"mode": mode}}).ok is ok
