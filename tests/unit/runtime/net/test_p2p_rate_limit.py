"""The token bucket behind `[network] max_send_rate` (virtual time)."""

from __future__ import annotations

import pytest

from overlay.runtime.net.rate_limit import TokenBucket


def test_burst_then_rate() -> None:
    b = TokenBucket(1_000_000, burst_bytes=100_000)
    assert b.take(100_000, now=0.0) == 0.0  # the burst is free
    assert b.take(500_000, now=0.0) == pytest.approx(0.5)
    # A writer that waited as told finds the bucket exactly empty.
    assert b.take(1_000_000, now=0.5) == pytest.approx(1.0)


def test_long_run_average_is_the_rate() -> None:
    b = TokenBucket(20e6)
    now = 0.0
    total = 0
    for _ in range(1000):
        now += b.take(256 * 1024, now)
        total += 256 * 1024
    assert total / now == pytest.approx(20e6, rel=0.01)


def test_idle_time_refills_only_to_the_burst() -> None:
    b = TokenBucket(1000, burst_bytes=500)
    b.take(500, now=0.0)
    assert b.take(500, now=100.0) == 0.0
    assert b.take(1, now=100.0) > 0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
