"""Static network of 2,000 DHT cores on the in-memory router.

Routing tables are seeded from the sorted id list by sim/dht_static.py (every bucket
gets up to k random members of its subtree, as a converged network would have); every
lookup then runs through the real message path: Send → router → Received → core.
Ground truth is the true 20 closest by XOR over all ids.
"""

from __future__ import annotations

import random
import statistics

from dht import (
    FindNode,
    GetProviders,
    KadConfig,
    LookupDone,
    Provide,
    ProvideDone,
    Providers,
)
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256
from sim.dht_static import build_static_network

SEED = 20240501
N = 2000


def test_static_network_find_node_and_providers() -> None:
    cfg = KadConfig()
    ids, cores, router = build_static_network(N, SEED, cfg)
    results: dict[int, LookupDone] = {}
    provided: list[ProvideDone] = []

    def on_emit(t: float, peer: PeerId, ev: object) -> None:
        if isinstance(ev, LookupDone):
            results[ev.request_id] = ev
        elif isinstance(ev, ProvideDone):
            provided.append(ev)

    router.on_emit = on_emit
    rng = random.Random(SEED + 1)

    # ---- 200 FIND_NODE lookups for random keys
    hops: list[int] = []
    hits: list[int] = []
    for i in range(200):
        key = rng.randbytes(34)
        target = key_of_bytes(key)
        src = rng.choice(ids)
        router.inject(src, FindNode(i, key))
        router.run_for(2.0)
        ld = results[i]
        assert ld.error is None, f"seed {SEED}: lookup {i} failed: {ld.error}"
        others = [p for p in ids if p != src]
        truth = set(sorted(others, key=lambda p: p.key ^ target)[:20])
        hits.append(len(truth & set(ld.result.peers)))  # type: ignore[union-attr]
        hops.append(ld.hops)
    mean_hops = statistics.mean(hops)
    print(f"\nN={N} seed={SEED}: mean hops {mean_hops:.2f}, max {max(hops)}, "
          f"min hits {min(hits)}/20, mean hits {statistics.mean(hits):.2f}")
    assert min(hits) >= 19, f"seed {SEED}: a lookup found only {min(hits)} of the true 20"
    # log2(2000)/log2(20) ≈ 2.5 routing hops, plus the round that asks the k closest.
    assert 1.0 <= mean_hops <= 4.0

    # ---- one provider, found from 50 random others
    provider = rng.choice(ids)
    mh = multihash_sha256(b"a dataset")
    router.inject(provider, Provide(1, (mh,)))
    router.run_for(5.0)
    assert provided and provided[-1].messages == cfg.k
    holders = [p for p in ids if len(cores[p].providers)]
    assert len(holders) >= 15
    askers = rng.sample([p for p in ids if p != provider], 50)
    for j, asker in enumerate(askers):
        rid = 10_000 + j
        router.inject(asker, GetProviders(rid, mh, count=1))
        router.run_for(2.0)
        res = results[rid].result
        assert isinstance(res, Providers)
        assert [i.peer for i in res.providers] == [provider], f"seed {SEED}: asker {j}"
