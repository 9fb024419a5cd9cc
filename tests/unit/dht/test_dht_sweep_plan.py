"""The sweep plan (dht/sweep.py): region start times, joining and retiring; pure."""

from __future__ import annotations

import pytest

from dht.sweep import Sweep, start_times
from overlay.core.ids import KEY_BITS


@pytest.mark.parametrize(
    ("regions", "bits", "start", "spread", "want"),
    [
        ([0], 0, 5.0, 100.0, [5.0]),  # one region: now
        ([0, 1], 1, 0.0, 100.0, [0.0, 50.0]),
        ([0, 3, 7], 3, 10.0, 80.0, [10.0, 40.0, 80.0]),
        ([1, 2], 2, 0.0, 0.0, [0.0, 0.0]),  # not paced: all at once
    ],
)
def test_start_times(regions: list[int], bits: int, start: float, spread: float,
                     want: list[float]) -> None:
    assert start_times(regions, bits, start, spread) == want


def key(prefix: int, bits: int, low: int = 1) -> int:
    return (prefix << (KEY_BITS - bits)) | low


def test_paced_sweep_takes_regions_when_due_and_admits_late_keys() -> None:
    bits = 2
    keys = {b"a": key(0, bits), b"b": key(2, bits), b"c": key(3, bits)}
    sw = Sweep(0, dict(keys), bits, now=100.0, spread_s=400.0)
    assert sw.paced and [q[0] for q in sw.queue] == [100.0, 300.0, 400.0]
    assert sw.next_due(99.0) is None
    assert sw.next_due(100.0) == [b"a"]
    assert sw.next_due(250.0) is None and sw.next_start() == 300.0
    # A key for region 0 (started) waits for the next cycle; region 3's joins this one.
    assert sw.add_keys({b"late0": key(0, bits, 2), b"late3": key(3, bits, 2)}) == 1
    assert sw.next_due(300.0) == [b"b"]
    assert sw.next_due(400.0) == [b"c", b"late3"]
    assert sw.done() and len(sw.keys) == 4


def test_first_announcement_is_not_paced_and_retire_drops_the_rest() -> None:
    keys = {b"a": key(0, 1), b"b": key(1, 1)}
    now_sweep = Sweep(7, dict(keys), 1, now=0.0)
    assert not now_sweep.paced and now_sweep.add_keys({b"x": key(1, 1, 3)}) == 0
    assert now_sweep.next_due(0.0) == [b"a"] and now_sweep.next_due(0.0) == [b"b"]
    paced = Sweep(0, dict(keys), 1, now=0.0, spread_s=10.0)
    paced.running = 1
    paced.retire()
    assert paced.next_start() is None and not paced.done()  # its lookup still runs
    paced.running = 0
    assert paced.done()
