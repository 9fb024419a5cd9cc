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

Run: .venv/bin/python bench/gossip.py [--n 1000]
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
from gossip.messages import Alive, Gossip, MemberRecord, Ping, PushPull  # noqa: E402
from gossip.profiles import LAN  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
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


if __name__ == "__main__":
    main()
