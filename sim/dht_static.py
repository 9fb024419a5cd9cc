"""A converged static Kademlia network on the in-memory router, built without joins.

Used by the DHT simulation tests and bench/dht.py: building a 10,000-node network by
bootstrapping every node takes minutes, while filling tables from the sorted id list
takes seconds and gives each node what a converged network would have — every
bucket c holds up to k random members of the subtree that shares exactly c bits
with the node. Lookups then run through the real message path
(Send → router → Received → core).
"""

from __future__ import annotations

import bisect
import random

from dht import KadConfig, Kademlia
from overlay.core.ids import KEY_BITS, PeerId
from sim.router import Router


def random_peer_ids(n: int, rng: random.Random) -> list[PeerId]:
    return [PeerId.from_ed25519(rng.randbytes(32)) for _ in range(n)]


def seed_tables(ids: list[PeerId], cores: dict[PeerId, Kademlia], k: int,
                rng: random.Random) -> None:
    """Fill every core's table as in a converged network (see the module docstring)."""
    srt = sorted(ids, key=lambda p: p.key)
    keys = [p.key for p in srt]
    for p in ids:
        x = p.key
        table = cores[p].table
        for c in range(KEY_BITS):
            shift = KEY_BITS - c - 1
            lo = ((x >> shift) ^ 1) << shift  # the other half at depth c
            a, b = bisect.bisect_left(keys, lo), bisect.bisect_left(keys, lo + (1 << shift))
            # Draw indices, not a slice: the first depths' halves hold N/2, N/4, … ids,
            # and copying them touched O(N) reference counts per node. `sample` draws by
            # position only, so the same members come out.
            members = [srt[i] for i in rng.sample(range(a, b), k)] if b - a > k else srt[a:b]
            for m in members:
                table.seen(m, 0.0)
            own = (x >> shift) << shift  # our own half at this depth
            if bisect.bisect_left(keys, own + (1 << shift)) - bisect.bisect_left(keys, own) <= 1:
                break  # nobody else shares c + 1 bits with us: deeper buckets are empty


def build_static_network(n: int, seed: int, cfg: KadConfig, *, delay_s: float = 0.05,
                         core_seed: int = 7919,
                         ) -> tuple[list[PeerId], dict[PeerId, Kademlia], Router]:
    """n cores with seeded tables on a router with a fixed delay; core i gets
    `random.Random(seed * core_seed + i)`."""
    rng = random.Random(seed)
    ids = random_peer_ids(n, rng)
    router = Router(delay_s=delay_s, rng=random.Random(seed))
    cores: dict[PeerId, Kademlia] = {}
    for i, p in enumerate(ids):
        cores[p] = Kademlia(p, cfg, rng=random.Random(seed * core_seed + i))
        router.add(p, cores[p])
    seed_tables(ids, cores, cfg.k, rng)
    return ids, cores, router
