"""Pure maths: suspicion timeouts (table from memberlist suspicion_test.go / util_test.go),
retransmit limits, push-pull scaling, the local health multiplier."""

import itertools
import math

import pytest

from gossip.awareness import Awareness
from gossip.broadcast_queue import retransmit_limit
from gossip.push_pull import push_pull_scale
from gossip.suspicion import Suspicion, remaining_suspicion_time_s, suspicion_timeout_s
from overlay.core.crypto import KeyPair

A, B, C, D, E = (KeyPair(bytes([i]) * 32).peer_id for i in range(1, 6))


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "lo", "hi", "expected"),
    [
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 4.810),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        (0, 0, 1.0, 2.0, 30.0, 1.0),  # nobody can confirm: SWIM's fixed timeout
    ],
)
def test_remaining_suspicion_time_table(
    n: int, k: int, elapsed: float, lo: float, hi: float, expected: float
) -> None:
    assert remaining_suspicion_time_s(n, k, elapsed, lo, hi) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1.0), (5, 1.0), (10, 1.0), (50, 1.699), (100, 2.0), (500, 2.699), (1000, 3.0)],
)
def test_suspicion_timeout_scales_with_log10_n(n: int, expected: float) -> None:
    assert suspicion_timeout_s(3, n, 1.0) / 3 == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    ("mult", "n", "expected"), [(3, 1, 3), (3, 99, 6), (4, 100, 12), (4, 1000, 16), (4, 0, 4)]
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "factor"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6), (10_000, 10)]
)
def test_push_pull_scale(n: int, factor: int) -> None:
    assert push_pull_scale(30.0, n) == 30.0 * factor


def test_suspicion_shrinks_with_distinct_confirmations_only() -> None:
    s = Suspicion(A, k=3, min_s=2.0, max_s=30.0, start=100.0)
    assert s.deadline() == pytest.approx(130.0)
    assert not s.confirm(A)  # the first accuser does not confirm itself
    assert s.confirm(B)
    assert s.deadline() == pytest.approx(116.0)
    assert not s.confirm(B)  # counted once
    assert s.confirm(C)
    assert s.confirm(D)
    assert s.deadline() == pytest.approx(102.0)
    assert not s.confirm(E)  # beyond k
    assert s.confirmations == 3


def test_suspicion_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Suspicion(A, k=-1, min_s=1.0, max_s=2.0, start=0.0)
    with pytest.raises(ValueError):
        Suspicion(A, k=1, min_s=3.0, max_s=2.0, start=0.0)


def test_awareness_bounds_and_scaling() -> None:
    a = Awareness(8)
    assert a.scale(0.5) == 0.5
    a.apply_delta(3)
    assert a.multiplier == 4 and a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7  # capped at max - 1
    a.apply_delta(-100)
    assert a.score == 0
    off = Awareness(8, enabled=False)
    off.apply_delta(5)
    assert off.multiplier == 1


def test_timeouts_monotone_in_confirmations() -> None:
    values = [remaining_suspicion_time_s(n, 5, 0.0, 4.0, 24.0) for n in range(7)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] == 24.0 and values[5] == 4.0 and values[6] == 4.0
    assert not any(math.isnan(v) for v in values)
