"""Signed name records, the value and provider stores, and sweep planning."""

from __future__ import annotations

import random

import pytest

from dht import providers as prov
from dht.providers import ProviderLimits, ProviderStore
from dht.records import (
    NAME_PREFIX,
    NameValidator,
    UnknownNamespace,
    Validators,
    ValueStore,
    ValueStoreLimits,
    make_name_record,
    name_key,
)
from overlay.core.crypto import KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame, WireError
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256

A = KeyPair.from_rng_seed(bytes([1]) * 32)
B = KeyPair.from_rng_seed(bytes([2]) * 32)
V = Validators()


def test_valid_name_record() -> None:
    key, value = make_name_record(A, b"bafy-cid", seq=3, expires=1000.0)
    assert key == NAME_PREFIX + A.peer_id.to_base58().encode()
    rec = V.validate(key, value, now=10.0)
    assert (rec.seq, rec.expires, rec.payload) == (3, 1000.0, b"bafy-cid")


def test_record_signed_by_someone_else_is_refused() -> None:
    _, value = make_name_record(B, b"x", 1, 1000.0)
    with pytest.raises(BadSignature):
        V.validate(name_key(A.peer_id), value, 0.0)


def test_expired_record_is_refused() -> None:
    key, value = make_name_record(A, b"x", 1, 100.0)
    with pytest.raises(ExpiredError):
        V.validate(key, value, 100.0)


def test_tampered_signature_is_refused() -> None:
    key, value = make_name_record(A, b"x", 1, 1000.0)
    bad = bytearray(value)
    bad[-1] ^= 1
    with pytest.raises(WireError):
        V.validate(key, bytes(bad), 0.0)


def test_unknown_namespace_and_garbage() -> None:
    with pytest.raises(UnknownNamespace):
        V.validate(b"/pk/abc", b"x", 0.0)
    with pytest.raises(WireError):
        V.validate(name_key(A.peer_id), b"\x00garbage", 0.0)
    with pytest.raises(MalformedFrame):
        V.validate(NAME_PREFIX + b"0OIl", b"x", 0.0)


def test_body_must_name_this_key() -> None:
    env = A.seal("dht-record", {"name": "/colony/name/other", "value": b"x", "seq": 1,
                                "expires": 1e9})
    with pytest.raises(BadSignature):
        V.validate(name_key(A.peer_id), env.to_bytes(), 0.0)


def test_selector_prefers_highest_seq_then_later_expiry() -> None:
    key, v1 = make_name_record(A, b"one", 1, 1000.0)
    _, v5 = make_name_record(A, b"five", 5, 500.0)
    _, v5b = make_name_record(A, b"five-b", 5, 900.0)
    recs = [V.validate(key, v, 0.0) for v in (v1, v5, v5b)]
    assert NameValidator().select(key, recs) == 2
    assert V.better(recs[0], recs[1]) and not V.better(recs[1], recs[0])


def test_value_store_keeps_best_and_respects_limits() -> None:
    store = ValueStore(ValueStoreLimits(max_records=2, max_per_peer=1, max_ttl_s=50.0))
    p, q = A.peer_id, B.peer_id
    key, v2 = make_name_record(A, b"2", 2, 1000.0)
    _, v1 = make_name_record(A, b"1", 1, 1000.0)
    r2, r1 = V.validate(key, v2, 0.0), V.validate(key, v1, 0.0)
    assert store.put(r2, p, V, 0.0) == "stored"
    assert store.put(r1, q, V, 0.0) == "kept-old"
    kb, vb = make_name_record(B, b"b", 1, 1000.0)
    assert store.put(V.validate(kb, vb, 0.0), p, V, 0.0) == "peer-limit"
    assert store.put(V.validate(kb, vb, 0.0), q, V, 0.0) == "stored"
    store.check_invariants()
    assert store.get(key, 49.0) == r2
    assert store.get(key, 50.0) is None  # capped by max_ttl_s
    store.check_invariants()
    assert store.expire(1e6) == 1 and len(store) == 0


def mh(i: int) -> bytes:
    return multihash_sha256(i.to_bytes(4, "big"))


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


def test_provider_store_limits_and_expiry() -> None:
    s = ProviderStore(ProviderLimits(max_records=5, max_per_key=2, max_per_peer=3, ttl_s=10.0))
    assert s.add(mh(1), pid(1), (b"\x04addr",), 0.0) == "stored"
    assert s.add(mh(1), pid(1), (), 1.0) == "refreshed"
    assert s.add(mh(1), pid(2), (), 0.0) == "stored"
    assert s.add(mh(2), pid(1), (), 0.0) == "stored"
    assert s.add(mh(3), pid(1), (), 0.0) == "stored"
    assert s.add(mh(4), pid(1), (), 0.0) == "peer-limit"
    assert s.add(mh(4), pid(4), (), 0.0) == "stored"
    assert s.add(mh(5), pid(5), (), 0.0) == "full"
    s.check_invariants()
    got = s.get(mh(1), 5.0, 10)
    # Freshest announcement first (pid(2) was announced after pid(1)'s refresh).
    assert [i.peer for i in got] == [pid(2), pid(1)] and got[1].addrs == (b"\x04addr",)
    assert s.add(mh(1), pid(1), (), 1.0) == "refreshed"  # moves it to the front
    assert [i.peer for i in s.get(mh(1), 5.0, 10)] == [pid(1), pid(2)]
    assert [i.peer for i in s.get(mh(1), 5.0, 1)] == [pid(1)]
    assert s.get(mh(1), 10.5, 10)[0].peer == pid(1)  # refreshed at t=1
    assert s.expire(10.5) == 4
    s.check_invariants()
    assert s.expire(11.0) == 1 and len(s) == 0
    s.check_invariants()


def test_a_new_provider_of_a_full_key_replaces_an_expired_else_the_stalest_record() -> None:
    s = ProviderStore(ProviderLimits(max_records=100, max_per_key=3, max_per_peer=3, ttl_s=10.0))
    for i in (1, 2, 3):
        assert s.add(mh(1), pid(i), (), float(i)) == "stored"
    assert s.add(mh(1), pid(1), (), 4.0) == "refreshed"  # announcement order: 2, 3, 1
    assert s.add(mh(1), pid(4), (), 5.0) == "evicted"  # pid(2), the stalest, goes
    assert [i.peer for i in s.get(mh(1), 5.0, 10)] == [pid(4), pid(1), pid(3)]
    # At t=13.5 pid(3)'s record (until 13) has expired: it makes room, nothing is evicted.
    assert s.add(mh(1), pid(5), (), 13.5) == "stored"
    assert [i.peer for i in s.get(mh(1), 13.5, 10)] == [pid(5), pid(4), pid(1)]
    assert len(s) == 3 and pid(2) not in {i.peer for i in s.get(mh(1), 0.0, 10)}
    s.check_invariants()


def test_region_bits_targets_one_to_two_k_peers() -> None:
    assert prov.region_bits(30, 20) == 0
    for n in (1_000, 10_000, 100_000):
        b = prov.region_bits(n, 20)
        assert 20 <= n / 2**b < 2 * 20
        b2 = prov.region_bits(n, 20, per_region=2.0)
        assert 40 <= n / 2**b2 < 80


def test_grouping_and_assignment() -> None:
    keys = {mh(i): key_of_bytes(mh(i)) for i in range(200)}
    groups = prov.group_by_region(keys, 3)
    assert [g for g, _ in groups] == sorted(g for g, _ in groups)
    assert sum(len(m) for _, m in groups) == 200
    for prefix, mhs in groups:
        assert all(keys[m] >> 253 == prefix for m in mhs)
    peers = [pid(i) for i in range(60)]
    for m, targets in prov.assign(keys, list(keys)[:10], peers, 20):
        assert targets == sorted(peers, key=lambda p: p.key ^ keys[m])[:20]

