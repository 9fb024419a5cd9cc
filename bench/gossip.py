"""Gossip benchmarks: message handling rate with Ed25519 verification, and join spread.

1. Messages handled per second by one core when every message carries one new signed
   alive claim (so every message costs one Ed25519 verification), next to the bare
   pynacl verify rate measured in the same run, and their ratio (goal ≥ 40 %).
   Also the rate for steady-state traffic (pings whose piggybacked claims are already
   known: no verification).
2. A new member joins a converged colony of N = 1,000 simulated cores (in-memory
   router, 5 ms links): gossip periods until every member has it alive, next to the
   epidemic estimates (log2 N + ln N rounds for fanout 1; log_{k+1} N + ln N / k for
   fanout k).
3. Join merge: the CPU one core spends merging a cell's push-pull of N members (each
   with its signed claim and resource ad) into an empty table, next to N × 2 bare
   Ed25519 verifies measured in the same run (every claim and ad is verified once:
   the floor); and the same merge with every claim already verified (the simulator
   shares one verifier between its cores), where the member table and the broadcast
   queue are the whole cost; and a settled cell's push-pull of the same N (every
   record stale: the steady state's cost). At N = 5,000 the queue (4,096 entries)
   drops ≈ 6,000 updates on the way (gossip/broadcast_queue.py).

Run: .venv/bin/python bench/gossip.py [--n 1000] [--merge-sizes 1000,5000]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import random
import sys
import time

# Run as a script, this file's directory comes first on sys.path and its name
# (gossip.py) would shadow the gossip package: put the repository root there instead.
_HERE = pathlib.Path(__file__).resolve().parent
if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

import nacl.signing  # noqa: E402

from gossip.claim_verifier import Verifier  # noqa: E402
from gossip.events import Join, MemberJoined  # noqa: E402
from gossip.messages import AdUpdate, Alive, Gossip, MemberRecord, Ping, PushPull  # noqa: E402
from gossip.profiles import LAN  # noqa: E402
from gossip.resources import ResourceAd  # noqa: E402
from gossip.swim import Swim  # noqa: E402
from overlay.core.crypto import KeyPair, signing_input  # noqa: E402
from overlay.core.effects import Received  # noqa: E402
from sim.router import Router  # noqa: E402


def bench_verify(n: int = 3000) -> float:
    sk = nacl.signing.SigningKey(b"\x01" * 32)
    vk = sk.verify_key
    msgs = [sk.sign(signing_input("gossip-alive", i.to_bytes(8, "big"))) for i in range(n)]
    t = time.perf_counter()
    for m in msgs:
        vk.verify(m)
    return n / (time.perf_counter() - t)


def bench_handle(n_members: int = 100, n_msgs: int = 3000) -> tuple[float, float]:
    keys = [KeyPair(bytes([1 + i % 250, i // 250]) + b"\x00" * 30) for i in range(n_members + 1)]
    core = Swim(keys[0], LAN, rng=random.Random(1))
    core.handle(Join(), 0.0)
    recs = tuple(MemberRecord(Alive.create(k, 0)) for k in keys[1:])
    core.handle(Received(keys[1].peer_id, PushPull(recs)), 0.0)
    # fresh claims: incarnations 1.. round-robin over members, each verified once
    claims = [Alive.create(keys[1 + i % n_members], 1 + i // n_members) for i in range(n_msgs)]
    msgs = [Gossip((c,)) for c in claims]
    src = keys[1].peer_id
    t = time.perf_counter()
    for i, m in enumerate(msgs):
        core.handle(Received(src, m), 1.0 + i * 1e-4)
    signed_rate = n_msgs / (time.perf_counter() - t)
    # steady state: pings carrying already-known claims (no verification needed)
    pings = [Ping(i, keys[0].peer_id, tuple(claims[-3:])) for i in range(n_msgs)]
    t = time.perf_counter()
    for i, p in enumerate(pings):
        core.handle(Received(src, p), 2.0 + i * 1e-4)
    steady_rate = n_msgs / (time.perf_counter() - t)
    return signed_rate, steady_rate


def bench_join(n: int, seed: int = 7) -> tuple[float, int]:
    rng = random.Random(seed)
    router = Router(delay_s=0.005, rng=random.Random(seed + 1))
    verifier = Verifier(4 * n)
    keys = [KeyPair(rng.randbytes(32)) for _ in range(n + 1)]
    cores = [
        Swim(k, LAN, rng=random.Random(rng.getrandbits(64)), verifier=verifier) for k in keys
    ]
    recs = tuple(MemberRecord(c.local.alive) for c in cores[:n])
    for k, c in zip(keys[:n], cores[:n], strict=True):
        router.add(k.peer_id, c)
        router.inject(k.peer_id, Join())
        c.handle(Received(keys[0].peer_id, PushPull(recs)), 0.0)  # converged colony
        for key in c.spread.bq.keys():  # noqa: SIM118 (a queue: nothing left to spread)
            c.spread.bq.invalidate(key)
    router.run_until(5.0)
    newcomer = keys[n].peer_id
    router.add(newcomer, cores[n])
    t0 = router.now
    knows: set[object] = set()

    def on_emit(t: float, peer: object, event: object) -> None:
        if isinstance(event, MemberJoined) and event.peer == newcomer:
            knows.add(peer)

    router.on_emit = on_emit
    router.inject(newcomer, Join((keys[0].peer_id,)))
    done_at = None
    for step in range(1, 400):
        router.run_until(t0 + step * LAN.gossip_interval_s / 4)
        if len(knows) >= n:
            done_at = router.now - t0
            break
    return (done_at if done_at is not None else float("inf")), len(knows)


def bench_join_merge(n: int, seed: int = 11) -> tuple[float, float, float, int, float]:
    """CPU s to merge a push-pull of `n` members (claim + full ad each) into a fresh
    core; the same into a second fresh core sharing the first one's verifier (the
    simulator's case: every claim already verified, so the table and the broadcast
    queue are what is left); the same message merged again into that core (a settled
    cell's steady push-pull: nothing new; the sender's `records()` included); the
    queue's drops; CPU s of 2n bare verifies."""
    rng = random.Random(seed)
    keys = [KeyPair(rng.randbytes(32)) for _ in range(n + 2)]
    body = ResourceAd.make(cpu_cores=8, mem_bytes=16 << 30).to_body()
    # Each the claim's shared one-ad record, as a simulated member table sends it.
    recs = tuple(Alive.create(k, 1).ad_record(AdUpdate.create(k, 1, body)) for k in keys[2:])
    verifier = Verifier(4 * n)
    times: list[float] = []
    dropped = 0
    msg = PushPull(recs)
    for me in keys[:2]:
        core = Swim(me, LAN, rng=random.Random(seed), verifier=verifier)
        core.handle(Join(), 0.0)
        t = time.process_time()
        core.handle(Received(keys[2].peer_id, msg), 1.0)
        times.append(time.process_time() - t)
        assert len(core.table) == n, len(core.table)
        dropped = core.spread.bq.dropped
    # A settled cell's push-pull: every record the very claim and ad held (the second
    # and later merges of the same message; the first of them makes `stale_ad` a key).
    reps = 5
    t = time.process_time()
    for i in range(reps + 1):
        core.handle(Received(keys[2].peer_id, msg), 2.0 + i)
        if i == 0:
            t = time.process_time()
    times.append((time.process_time() - t) / reps)
    t = time.process_time()
    for _ in range(reps):
        core.anti_entropy.records()  # the sender's side of that push-pull
    times[2] += (time.process_time() - t) / reps
    envs = [e for r in recs for e in (r.alive.env, r.ads[0].env)]
    vks = [nacl.signing.VerifyKey(e.signer) for e in envs]
    t = time.process_time()
    for vk, env in zip(vks, envs, strict=True):
        vk.verify(signing_input(env.kind, env.body), env.signature)
    verify_s = time.process_time() - t
    return times[0], times[1], times[2], dropped, verify_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--merge-sizes", default="1000,5000",
                    help="cell sizes for the join-merge figure (comma-separated)")
    args = ap.parse_args()
    verify_rate = bench_verify()
    signed_rate, steady_rate = bench_handle()
    print(f"pynacl Ed25519 verify: {verify_rate:,.0f} /s")
    print(
        f"core, every message with a new signed claim: {signed_rate:,.0f} msg/s "
        f"= {100 * signed_rate / verify_rate:.0f} % of bare verify (goal >= 40 %)"
    )
    print(f"core, steady-state pings (claims already known): {steady_rate:,.0f} msg/s")
    t = time.perf_counter()
    spread_s, reached = bench_join(args.n)
    wall = time.perf_counter() - t
    n, k = args.n, LAN.gossip_nodes
    periods = spread_s / LAN.gossip_interval_s
    est1 = math.log2(n) + math.log(n)
    estk = math.log(n, k + 1) + math.log(n) / k
    print(
        f"join spread at N={n}: {spread_s:.2f} s = {periods:.1f} gossip periods "
        f"({reached}/{n} members; fanout {k}, interval {LAN.gossip_interval_s} s)"
    )
    print(
        f"epidemic estimate: log2 N + ln N = {est1:.1f} rounds (fanout 1); "
        f"log_(k+1) N + ln N / k = {estk:.1f} rounds (fanout {k}); "
        f"measured / fanout-{k} estimate = {periods / estk:.2f}"
    )
    print(f"(join bench wall time {wall:.1f} s)")
    for size in (int(x) for x in args.merge_sizes.split(",") if x):
        merge_s, shared_s, steady_s, dropped, verify_s = bench_join_merge(size)
        print(
            f"join merge of a {size:,}-member push-pull (claim + ad each): "
            f"{1e3 * merge_s:,.0f} ms CPU, {dropped:,} queued updates dropped; "
            f"{2 * size:,} bare verifies {1e3 * verify_s:,.0f} ms: ratio "
            f"{merge_s / verify_s:.2f}; claims already verified (the simulator's "
            f"shared verifier): {1e3 * shared_s:,.0f} ms; settled (all stale, its records "
            f"built and merged): "
            f"{1e3 * steady_s:,.1f} ms = {1e6 * steady_s / size:.2f} µs per record"
        )


if __name__ == "__main__":
    main()
