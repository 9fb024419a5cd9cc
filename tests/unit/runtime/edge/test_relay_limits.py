"""Relay admission and circuit limits (overlay.runtime.edge.relay.RelayBook): pure, virtual
time (`now` passed in), no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.relay import CircuitTerminated, RelayBook, RelayLimits, RelayRefused

P = [KeyPair.from_rng_seed(bytes([i + 1]) * 32).peer_id for i in range(6)]
MEMBERS = set(P[:5])


def member(p: PeerId) -> bool:
    return p in MEMBERS


def book(**kw: object) -> RelayBook:
    return RelayBook(RelayLimits(enabled=True, **kw))  # type: ignore[arg-type]


def refused(reason: str) -> Any:
    return pytest.raises(RelayRefused, match=f"^{reason}")


def test_disabled_relay_refuses_everything() -> None:
    b = RelayBook(RelayLimits(enabled=False))
    with refused("relay_disabled"):
        b.reserve(P[0], 0.0, member)
    with refused("relay_disabled"):
        b.open_circuit(P[0], P[1], 0.0, member)


def test_reservations_members_only_bounded_and_expiring() -> None:
    b = book(max_reservations=2, reservation_ttl_s=100.0)
    with refused("not_a_member"):
        b.reserve(P[5], 0.0, member)
    assert b.reserve(P[0], 0.0, member) == 100.0
    b.reserve(P[1], 10.0, member)
    with refused("too_many_reservations"):
        b.reserve(P[2], 20.0, member)
    assert b.reserve(P[0], 50.0, member) == 150.0  # renewal is always allowed
    b.reserve(P[2], 111.0, member)  # P[1]'s expired at 110
    assert set(b.reservations) == {P[0], P[2]}


def test_circuit_admission_rules() -> None:
    b = book(max_circuits=2, max_circuits_per_peer=1)
    b.reserve(P[1], 0.0, member)
    b.reserve(P[3], 0.0, member)
    with refused("not_a_member"):
        b.open_circuit(P[5], P[1], 1.0, member)
    with refused("no_reservation"):
        b.open_circuit(P[0], P[2], 1.0, member)
    with refused("bad_request"):
        b.open_circuit(P[1], P[1], 1.0, member)
    c = b.open_circuit(P[0], P[1], 1.0, member)
    with refused("too_many_circuits_for_peer"):
        b.open_circuit(P[2], P[1], 1.0, member)
    b.open_circuit(P[2], P[3], 1.0, member)
    with refused("too_many_circuits"):
        b.open_circuit(P[4], P[3], 1.0, member)
    b.close_circuit(c, "eof")
    b.close_circuit(c, "eof")  # idempotent
    assert b.stats.circuits_closed == {"eof": 1}
    assert b.stats.refusals == {
        "not_a_member": 1,
        "no_reservation": 1,
        "bad_request": 1,
        "too_many_circuits_for_peer": 1,
        "too_many_circuits": 1,
    }


def test_byte_and_duration_limits_terminate_with_reason() -> None:
    b = book(max_bytes=1000, max_duration_s=60.0, max_rate=0)
    b.reserve(P[1], 0.0, member)
    c = b.open_circuit(P[0], P[1], 0.0, member)
    assert c.account(600, 1.0) == 0.0
    with pytest.raises(CircuitTerminated, match="max_bytes"):
        c.account(401, 2.0)
    c2 = book(max_duration_s=60.0)
    c2.reserve(P[1], 0.0, member)
    circ = c2.open_circuit(P[0], P[1], 0.0, member)
    circ.account(10, 59.9)
    with pytest.raises(CircuitTerminated, match="max_duration"):
        circ.account(10, 60.0)


@given(sizes=st.lists(st.integers(min_value=1, max_value=64 * 1024), min_size=1, max_size=200))
@settings(max_examples=100, deadline=None)
def test_rate_limit_holds_the_average_to_max_rate(sizes: list[int]) -> None:
    """Passing every chunk after the delay `account` asks for never exceeds
    max_rate × elapsed + one second's burst."""
    rate = 100_000
    b = book(max_rate=rate, max_bytes=10**12, max_duration_s=10**9)
    b.reserve(P[1], 0.0, member)
    c = b.open_circuit(P[0], P[1], 0.0, member)
    now = 0.0
    sent = 0
    for n in sizes:
        now += c.account(n, now)  # the splice sleeps this long, then forwards
        sent += n
        assert sent <= rate * now + rate + 1e-6
