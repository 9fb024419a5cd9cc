"""Routing table: CPL buckets, LRS order, probe-before-evict, replacement cache, refresh."""

from __future__ import annotations

import random

from dht.routing_table import RoutingTable
from overlay.core.ids import KEY_BITS, PeerId, common_prefix_len


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


ME = pid(0)


def peers_with_cpl(cpl: int, n: int, start: int = 1) -> list[PeerId]:
    out: list[PeerId] = []
    i = start
    while len(out) < n:
        p = pid(i)
        i += 1
        if common_prefix_len(p.key, ME.key) == cpl:
            out.append(p)
    return out


def test_bucket_index_is_common_prefix_length() -> None:
    t = RoutingTable(ME, k=20)
    for i in range(1, 200):
        p = pid(i)
        t.seen(p, 0.0)
        assert t.cpl(p.key) == common_prefix_len(p.key, ME.key)
    t.check_invariants()
    for c in t.bucket_cpls():
        b = t.bucket(c)
        assert b is not None
        assert all(common_prefix_len(p.key, ME.key) == c for p in b.peers)


def test_self_is_never_added() -> None:
    t = RoutingTable(ME)
    assert t.seen(ME, 0.0) is None
    assert len(t) == 0


def test_seen_moves_peer_to_tail() -> None:
    t = RoutingTable(ME, k=3)
    a, b, c = peers_with_cpl(0, 3)
    for p in (a, b, c):
        t.seen(p, 0.0)
    t.seen(a, 1.0)
    bucket = t.bucket(0)
    assert bucket is not None
    assert bucket.peers == [b, c, a]


def test_full_bucket_probes_lrs_and_keeps_it_when_alive() -> None:
    t = RoutingTable(ME, k=3, probe_after_s=10.0)
    a, b, c, d, e = peers_with_cpl(0, 5)
    for p in (a, b, c):
        t.seen(p, 0.0)
    # LRS `a` was heard 5 s ago: not worth a probe; newcomer waits in the cache.
    assert t.seen(d, 5.0) is None
    # 20 s later: probe the LRS entry.
    assert t.seen(e, 20.0) == a
    assert t.lrs_probing() == [a]
    bucket = t.bucket(0)
    assert bucket is not None and bucket.replacements == [d, e]
    # a answers: it stays, moves to the tail; newcomers stay in the replacement cache.
    assert t.seen(a, 21.0) is None
    assert bucket.peers == [b, c, a]
    assert t.stats.probes_survived == 1
    assert d not in t and e not in t
    t.check_invariants()


def test_failed_probe_evicts_and_promotes_latest_replacement() -> None:
    t = RoutingTable(ME, k=3, probe_after_s=0.0)
    a, b, c, d, e = peers_with_cpl(1, 5)
    for p in (a, b, c):
        t.seen(p, 0.0)
    assert t.seen(d, 1.0) == a
    t.seen(e, 1.0)
    assert t.failed(a) is True
    bucket = t.bucket(1)
    assert bucket is not None
    assert bucket.peers == [b, c, e]  # e was seen most recently
    assert bucket.replacements == [d]
    assert bucket.probing is None
    t.check_invariants()


def test_replacement_cache_is_bounded_with_counted_drops() -> None:
    t = RoutingTable(ME, k=2, replacement_size=3, probe_after_s=1e9)
    ps = peers_with_cpl(0, 8)
    for p in ps:
        t.seen(p, 0.0)
    bucket = t.bucket(0)
    assert bucket is not None
    assert bucket.replacements == ps[5:]
    assert t.stats.replacements_dropped == 3
    t.check_invariants()


def test_rpc_failures_evict_after_max_fails_without_replacements() -> None:
    t = RoutingTable(ME, k=20, max_fails=2)
    (a,) = peers_with_cpl(2, 1)
    t.seen(a, 0.0)
    assert t.failed(a) is False
    assert a in t
    assert t.failed(a) is True
    assert a not in t
    t.check_invariants()


def test_answer_resets_failure_count() -> None:
    t = RoutingTable(ME, k=20, max_fails=2)
    (a,) = peers_with_cpl(2, 1)
    t.seen(a, 0.0)
    t.failed(a)
    t.seen(a, 1.0)
    assert t.failed(a) is False
    assert a in t


def test_closest_matches_brute_force() -> None:
    t = RoutingTable(ME, k=20)
    for i in range(1, 400):
        t.seen(pid(i), 0.0)
    rng = random.Random(5)
    for _ in range(20):
        key = rng.getrandbits(KEY_BITS)
        want = sorted(t.peers(), key=lambda p: p.key ^ key)[:7]
        assert t.closest(key, 7) == want
    some = t.peers()[3]
    assert some not in t.closest(some.key, 20, exclude=some)


def test_stale_buckets_and_refresh_marking() -> None:
    t = RoutingTable(ME, k=20)
    for i in range(1, 100):
        t.seen(pid(i), 0.0)
    deepest = max(t.bucket_cpls())
    assert t.stale_cpls(10.0, 100.0, 64) == []
    stale = t.stale_cpls(200.0, 100.0, 64)
    assert stale == list(range(deepest + 1))
    (p,) = peers_with_cpl(0, 1, start=5000)
    t.mark_refreshed(p.key, 200.0)
    assert 0 not in t.stale_cpls(200.0, 100.0, 64)
    assert t.stale_cpls(200.0, 100.0, 2) == [1, 2]


def test_network_size_estimate_is_in_the_right_ballpark() -> None:
    n = 3000
    ids = [pid(i) for i in range(1, n)]
    t = RoutingTable(ME, k=20)
    for p in sorted(ids, key=lambda p: p.key ^ ME.key)[:20]:
        t.seen(p, 0.0)
    est = t.estimate_network_size()
    assert n / 3 < est < n * 3
