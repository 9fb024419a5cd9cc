"""/colony/signal/1.0.0 codec and guard (overlay.runtime.edge.signalling): pure, virtual time."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.signalling import (
    ANSWER,
    OFFER,
    Signal,
    SignalConfig,
    SignalGuard,
    SignalRefused,
    make_answer,
    make_offer,
    open_envelope,
    seal,
)

A, R, B = (KeyPair.from_rng_seed(bytes([i]) * 32) for i in (1, 2, 3))
MEMBERS = {A.peer_id, R.peer_id, B.peer_id}
NOW = 1_000_000.0


def member(p: PeerId) -> bool:
    return p in MEMBERS


def connected(p: PeerId) -> bool:
    return True


def offer(
    kp: KeyPair = A, dst: PeerId = B.peer_id, ttl: float = 20.0, sdp: str = "v=0", at: float = NOW
) -> Any:
    return make_offer(kp, dst, sdp, at, os.urandom(16), ttl)


sdps = st.text(max_size=2000)
nonces = st.binary(min_size=16, max_size=16)
ttls = st.floats(min_value=0.5, max_value=59.0)


@given(sdp=sdps, nonce=nonces, ttl=ttls)
@settings(max_examples=50, deadline=None)
def test_round_trip_and_any_tampering_fails(sdp: str, nonce: bytes, ttl: float) -> None:
    sig = Signal(OFFER, A.peer_id, B.peer_id, nonce, NOW + ttl, sdp)
    wire = seal(A, sig).to_wire()
    _, back = open_envelope(wire, 16 * 1024)
    assert back == sig
    # Flipping any byte of the body or signature breaks verification (or decoding).
    for idx in (1, 3):
        blob = bytearray(wire[idx])
        blob[len(blob) // 2] ^= 0x01
        bad = list(wire)
        bad[idx] = bytes(blob)
        with pytest.raises(SignalRefused) as e:
            open_envelope(bad, 16 * 1024)
        assert e.value.reason in ("bad_signature", "malformed")


@given(
    junk=st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=80) | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=20,
    )
)
@settings(max_examples=200, deadline=None)
def test_garbage_is_refused_as_malformed_or_bad_signature_never_crashes(junk: Any) -> None:
    g = SignalGuard(R.peer_id)
    with pytest.raises(SignalRefused) as e:
        g.check_forward(A.peer_id, junk, NOW, member, connected)
    assert e.value.reason in ("malformed", "bad_signature", "oversized")


def test_forward_rules_each_with_its_reason() -> None:
    g = SignalGuard(R.peer_id, SignalConfig(max_signal_bytes=4096))
    outsider = KeyPair.generate()
    stranger = KeyPair.generate().peer_id
    cases: list[tuple[PeerId, Any, str]] = [
        (outsider.peer_id, offer(outsider)[1].to_wire(), "not_a_member"),
        (A.peer_id, offer(dst=stranger)[1].to_wire(), "unknown_peer"),
        (A.peer_id, offer(dst=R.peer_id)[1].to_wire(), "unknown_peer"),  # to the forwarder
        (A.peer_id, offer(sdp="x" * 5000)[1].to_wire(), "oversized"),
        (A.peer_id, offer(ttl=-0.1)[1].to_wire(), "expired"),
        (A.peer_id, offer(ttl=61.0)[1].to_wire(), "expiry_too_far"),
        (A.peer_id, offer(kp=B, dst=A.peer_id)[1].to_wire(), "wrong_sender"),
    ]
    for sender, wire, reason in cases:
        with pytest.raises(SignalRefused) as e:
            g.check_forward(sender, wire, NOW, member, connected)
        assert e.value.reason == reason
    with pytest.raises(SignalRefused, match="target_not_connected"):
        g.check_forward(A.peer_id, offer()[1].to_wire(), NOW, member, lambda p: False)
    assert g.refusals["unknown_peer"] == 2 and g.refusals["target_not_connected"] == 1


def test_replay_refused_until_expiry_then_forgotten_and_cache_bounded() -> None:
    g = SignalGuard(R.peer_id, SignalConfig(replay_capacity=3))
    wire = offer(ttl=10.0)[1].to_wire()
    g.check_forward(A.peer_id, wire, NOW, member, connected)
    with pytest.raises(SignalRefused, match="replayed"):
        g.check_forward(A.peer_id, wire, NOW + 5, member, connected)
    # After its expiry the nonce is dropped; the signal itself is then "expired".
    with pytest.raises(SignalRefused, match="expired"):
        g.check_forward(A.peer_id, wire, NOW + 10, member, connected)
    assert g.nonces_held == 0
    for _ in range(3):
        g.check_forward(A.peer_id, offer()[1].to_wire(), NOW + 10, member, connected)
    with pytest.raises(SignalRefused, match="replay_cache_full"):
        g.check_forward(A.peer_id, offer()[1].to_wire(), NOW + 10, member, connected)
    assert g.nonces_held == 3


def test_rate_limit_per_sender_per_minute() -> None:
    g = SignalGuard(R.peer_id, SignalConfig(max_forwards_per_min=2))
    for _ in range(2):
        g.check_forward(A.peer_id, offer()[1].to_wire(), NOW, member, connected)
    with pytest.raises(SignalRefused, match="rate_limited"):
        g.check_forward(A.peer_id, offer()[1].to_wire(), NOW + 1, member, connected)
    g.check_forward(B.peer_id, offer(kp=B, dst=A.peer_id)[1].to_wire(), NOW + 1, member, connected)
    g.check_forward(A.peer_id, offer(at=NOW + 60)[1].to_wire(), NOW + 60, member, connected)


def test_deliver_and_answer_binding() -> None:
    target = SignalGuard(B.peer_id)
    sig, env = offer()
    with pytest.raises(SignalRefused, match="not_for_me"):
        SignalGuard(R.peer_id).check_deliver(env.to_wire(), NOW, member)
    with pytest.raises(SignalRefused, match="not_a_member"):
        target.check_deliver(env.to_wire(), NOW, lambda p: p != A.peer_id)
    got = target.check_deliver(env.to_wire(), NOW, member)
    assert got == sig
    dialer = SignalGuard(A.peer_id)
    ans = make_answer(B, sig, "v=0 answer", NOW, 20.0)
    assert dialer.check_answer(sig, ans.to_wire(), NOW).type == ANSWER
    # An answer from someone else, or for another offer's nonce, is refused.
    forged = make_answer(R, sig, "v=0", NOW, 20.0)
    with pytest.raises(SignalRefused, match="wrong_sender"):
        dialer.check_answer(sig, forged.to_wire(), NOW)
    other_sig, _ = offer()
    with pytest.raises(SignalRefused, match="replayed"):
        dialer.check_answer(other_sig, ans.to_wire(), NOW)
