"""DHT benchmark: FIND_NODE lookups on a static in-memory network of N cores.

Prints, for N = 1,000 and 10,000: lookups per second (wall clock, one process, the
in-memory router included), mean and 95th-percentile hops, messages per lookup, the
fraction of the true 20 closest found, memory per routing table (tracemalloc, the
PeerId objects themselves excluded: the simulator shares them between tables), and the
ratio of mean hops to a theoretical expectation.

Theory used: with full k-buckets, each routing step lands in the target's subtree at a
depth about log2(k) bits deeper than the last (the best of k uniform contacts in a
subtree shares ≈ log2(k) more bits with the target; Maymounkov & Mazières 2002 §4,
Stutzbach & Rejaie 2006 "Improving lookup performance over a widely-deployed DHT",
§3). Reaching the k-neighbourhood of the target (depth log2(N/k)) takes
log2(N/k)/log2(k) routing rounds, plus the one round that asks the k closest
themselves (our termination rule). So hops_theory = log2(N/k)/log2(k) + 1.

Sweep (`--sweep-keys C`, 0 to skip): one node of the N = 2,000 network provides C CIDs;
prints the lookups of the first announcement and of one paced reprovide against the
bound 2·2^p ≤ 2N/k, and how evenly the reprovide's ADD_PROVIDERs spread over the
interval (the busiest 1/2^p slot against the mean slot; a burst would put all of them
in one).

Messages: each lookup's RPCs (FIND_NODE queries) against an idealised lookup that spends
α RPCs per routing round and then asks the k closest once (k + α·(hops_theory − 1)),
and every other message the lookups caused (role-check PINGs to unknown requesters,
table probes). `--sizes 1000,10000,100000` adds the 10^5 run (~2 GiB, a few minutes).

Usage: .venv/bin/python bench/dht.py [--sizes 1000,10000] [--lookups 300] [--sweep-keys 5000]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collections import Counter

from dht import FindNode, KadConfig, Kademlia, LookupDone, Provide, ProvideDone
from dht import providers as prov
from dht.wire import DhtRequest, MessageType
from overlay.core.effects import Effect, Send
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256
from sim.dht_static import build_static_network, random_peer_ids, seed_tables
from sim.router import Router


def run(n: int, lookups: int, seed: int) -> None:
    cfg = KadConfig()
    rng = random.Random(seed)
    ids = random_peer_ids(n, rng)
    router = Router(delay_s=0.05, rng=random.Random(seed))
    cores: dict[PeerId, Kademlia] = {}
    tracemalloc.start()
    for i, p in enumerate(ids):
        cores[p] = Kademlia(p, cfg, rng=random.Random(seed + i))
    per_core = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    for p in ids:
        router.add(p, cores[p])
    t0 = time.perf_counter()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    seed_tables(ids, cores, cfg.k, rng)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    build_s = time.perf_counter() - t0
    entries = statistics.mean(len(c.table) for c in cores.values())
    per_table = (after - before) / n

    results: dict[int, LookupDone] = {}
    router.on_emit = lambda t, p, ev: (
        results.__setitem__(ev.request_id, ev) if isinstance(ev, LookupDone) else None)
    queries = [(rng.choice(ids), rng.randbytes(34)) for _ in range(lookups)]
    sent0 = router.sent
    t0 = time.perf_counter()
    for i, (src, key) in enumerate(queries):
        router.inject(src, FindNode(i, key))
        router.run_for(2.0)
    wall = time.perf_counter() - t0
    msgs = (router.sent - sent0) / lookups
    hops = sorted(results[i].hops for i in range(lookups))
    hits = []
    for i, (src, key) in enumerate(queries[:100]):
        t = key_of_bytes(key)
        truth = set(sorted((p for p in ids if p != src), key=lambda p: p.key ^ t)[:20])
        hits.append(len(truth & set(results[i].result.peers)))  # type: ignore[union-attr]
    mean_h = statistics.mean(hops)
    p95 = hops[min(len(hops) - 1, math.ceil(0.95 * len(hops)) - 1)]
    theory = math.log2(n / cfg.k) / math.log2(cfg.k) + 1
    print(f"N={n:>6}: {lookups / wall:8.1f} lookups/s | hops mean {mean_h:.2f} p95 {p95} | "
          f"{msgs:.1f} msgs/lookup | true-20 recall {statistics.mean(hits) / 20:.3f} | "
          f"table {entries:.0f} entries, {per_table / 1024:.1f} KiB/table "
          f"({per_table / entries:.0f} B/entry) + {per_core / 1024:.1f} KiB/empty core | "
          f"build {build_s:.1f} s")
    print(f"          hops theory log2(N/k)/log2(k)+1 = {theory:.2f}; "
          f"ratio measured/theory = {mean_h / theory:.2f}")
    # The limit: an idealised lookup spends α RPCs per routing round before the last and
    # then asks the k closest once each (the termination rule): k + α·(hops − 1).
    rpcs = statistics.mean(r.queried for r in results.values())
    ideal = cfg.k + cfg.alpha * (theory - 1)
    other = msgs - 2 * rpcs
    checks = sum(c.stats.role_checks_sent for c in cores.values()) / lookups
    skipped = sum(c.stats.role_checks_skipped_full for c in cores.values()) / lookups
    print(f"          RPCs/lookup {rpcs:.1f} (lookup queries; {other:.1f} other msgs/lookup, "
          f"role-check PINGs {checks:.1f}, skipped for full buckets {skipped:.1f}) | "
          f"ideal k+α(h−1) = {ideal:.1f} | ratio {rpcs / ideal:.2f} (goal ≤ 1.5); "
          f"all msgs/2 vs ideal {msgs / 2 / ideal:.2f}")


def sweep(n: int, keys: int, seed: int) -> None:
    interval = 22 * 3600.0
    cfg = KadConfig(refresh_check_s=1e9, expire_interval_s=1e9)
    ids, cores, router = build_static_network(n, seed, cfg, delay_s=0.02)
    me = ids[0]
    sends: list[float] = []

    class Counting:
        def handle(self, inp: object, now: float) -> list[Effect]:
            out = cores[me].handle(inp, now)
            sends.extend(now for e in out if isinstance(e, Send) and isinstance(
                e.msg, DhtRequest) and e.msg.msg.type == MessageType.ADD_PROVIDER)
            return out

    router.add(me, Counting())
    done: list[ProvideDone] = []
    router.on_emit = lambda t, p, ev: done.append(ev) if isinstance(ev, ProvideDone) else None
    mhs = tuple(multihash_sha256(i.to_bytes(8, "big")) for i in range(keys))
    t0 = time.perf_counter()
    router.inject(me, Provide(1, mhs))
    router.run_until(interval - 1.0)
    first = done[0]
    start = len(sends)
    router.run_until(2 * interval + 1.0)
    wall = time.perf_counter() - t0
    again = done[1]
    p = prov.region_bits(cores[me].table.estimate_network_size(), cfg.k)
    slot = interval / (1 << p)
    per_slot = Counter(int((t - interval) // slot) for t in sends[start:])
    mean = (len(sends) - start) / (1 << p)
    bound = 2 * (1 << p)
    print(f"sweep N={n} C={keys}: p={p} ({1 << p} regions); first announcement "
          f"{first.lookups} lookups, reprovide {again.lookups} lookups "
          f"(bound 2·2^p = {bound}, ratio {again.lookups / bound:.2f}; one lookup per CID "
          f"would be {keys}); {again.messages} ADD_PROVIDERs over {interval / 3600:.0f} h, "
          f"busiest slot {max(per_slot.values())} vs mean {mean:.0f} "
          f"(ratio {max(per_slot.values()) / mean:.2f}; a burst: {1 << p:.0f}); "
          f"simulated 44 h in {wall:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sweep-keys", type=int, default=5000)
    args = ap.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.lookups, args.seed)
    if args.sweep_keys:
        sweep(2000, args.sweep_keys, args.seed)


if __name__ == "__main__":
    main()
