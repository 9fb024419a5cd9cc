"""The sweep plan (dht/sweep.py): region start times, joining and retiring (pure), and
the core retrying a sweep that found every lookup slot taken."""

from __future__ import annotations

import random

import pytest

from dht import FindNode, KadConfig, Kademlia, Provide
from dht.sweep import Sweep, start_times
from dht.wire import DhtRequest, MessageType
from overlay.core.effects import PeerUnreachable, Send, SetTimer, TimerFired
from overlay.core.ids import KEY_BITS
from overlay.core.multiformats import multihash_sha256
from sim.dht_static import random_peer_ids


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


def test_a_sweep_refused_for_busy_lookups_retries_on_its_timer() -> None:
    """Before pacing, a sweep that found the lookup slots full with none of its own
    running was never pumped again (no ProvideDone); now its timer retries."""
    ids = random_peer_ids(30, random.Random(3))
    cfg = KadConfig(max_lookups=2)
    c = Kademlia(ids[0], cfg, rng=random.Random(1))
    for p in ids[1:]:
        c.table.seen(p, 0.0)
    c.handle(FindNode(1, b"busy"), 1.0)  # holds one of the two lookup slots
    out = c.handle(Provide(2, (multihash_sha256(b"x"),)), 1.0)
    (retry,) = [e for e in out
              if isinstance(e, SetTimer) and isinstance(e.timer, tuple) and e.timer[0] == "sweep"]
    assert retry.at == 1.0 + cfg.rpc_timeout_s
    assert not [e for e in out if isinstance(e, Send)]  # nothing started yet
    for _ in range(len(ids)):  # the FindNode fails at every peer it asks, and ends
        for p in ids[1:]:
            c.handle(PeerUnreachable(p), 2.0)
        if c.running_lookups() == 0:
            break
    assert c.running_lookups() == 0
    out = c.handle(TimerFired(retry.timer), retry.at)
    assert any(isinstance(e, Send) and isinstance(e.msg, DhtRequest)
               and e.msg.msg.type == MessageType.FIND_NODE for e in out)
