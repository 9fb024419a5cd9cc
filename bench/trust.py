"""Colony-mode costs in the gossip core (docs/trust.md).

1. Size of an alive claim: open mode vs with a 1-link and a 3-link certificate chain
   (the chain rides inside every alive), and what fraction of the 1,400-byte piggyback
   budget one claim takes.
2. Admission of a new member: one colony-mode core handling gossip messages that each
   carry one new member's alive claim (alive signature + chain verification), next to
   the same in open mode (alive signature only), measured in the same run; ratio.
   Also the cached case (a known chain at a new incarnation: no chain verification).
3. Revocation spread: a colony of N simulated colony-mode cores (in-memory FIFO
   router, timers in virtual time); the owner's revocation is published on one node;
   virtual seconds until every other node has expelled the revoked member, next to the
   time gossip needs to spread any update (a fresh alive) in the same colony.
4. Simultaneous join: N nodes join through one seed at the same instant, colony mode
   vs open mode in the same harness: virtual seconds to full membership and the false
   suspicions raised on the way (colony mode refuses strangers, so this is where a
   member pinging a peer that has not heard of it yet would hurt).
5. Revocation on real daemons (127.0.0.1, `--daemons` of them, default 5, 0 skips):
   wall-clock seconds from `colony cert revoke` on the owner until no other member
   lists the revoked one as live (as tests/integration/test_trust_colony.py checks it,
   without a time limit there), next to the same-run limit: a graceful leave (SIGTERM:
   the daemon gossips its signed leave notice) until no member lists the leaver,
   observed by the same polling of `GET /v1/members`. Ratio revocation / leave.

Run: .venv/bin/python bench/trust.py [--n 100] [--daemons 5]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import pathlib
import random
import signal
import sys
import tempfile
import time
from typing import Any

_HERE = pathlib.Path(__file__).resolve().parent
if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

from gossip.admission import Admission  # noqa: E402
from gossip.events import (  # noqa: E402
    Join,
    MemberExpelled,
    MemberJoined,
    MemberSuspected,
    PublishRevocation,
)
from gossip.messages import Alive, Gossip, MemberRecord, PushPull, update_size  # noqa: E402
from gossip.profiles import LAN  # noqa: E402
from gossip.swim import Swim  # noqa: E402
from overlay.core.certs import ALL_ROLES, Certificate, Revocation  # noqa: E402
from overlay.core.crypto import Envelope, KeyPair  # noqa: E402
from overlay.core.effects import Emit, Received, Send, SetTimer, TimerFired  # noqa: E402

T0 = 2_000_000_000.0
OWNER = KeyPair(b"\x07" * 32)


def cert(subject: KeyPair, issuer: KeyPair = OWNER, roles: Any = ALL_ROLES) -> Certificate:
    return Certificate.issue(issuer, OWNER.public, subject.peer_id, roles, T0 - 10, T0 + 10**6)


def sizes() -> None:
    k = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]
    chain3 = (cert(k[1]), cert(k[2], k[1]), cert(k[3], k[2]))
    open_ = Alive.create(k[3], 1, ("/ip4/10.0.0.1/tcp/4001",))
    one = Alive.create(k[3], 1, ("/ip4/10.0.0.1/tcp/4001",), (cert(k[3]).envelope,))
    three = Alive.create(k[3], 1, ("/ip4/10.0.0.1/tcp/4001",),
                         tuple(c.envelope for c in chain3))  # fmt: skip
    print("1. alive claim size (bytes, upper bound on the wire)")
    for name, a in (("open mode", open_), ("1-link chain", one), ("3-link chain", three)):
        n = update_size(a.env)
        print(f"   {name:13} {n:5d} B   {n / LAN.piggyback_bytes:5.1%} of the piggyback budget")


def admission_rate(n: int) -> None:
    keys = [KeyPair(i.to_bytes(4, "big") * 8) for i in range(1, n + 1)]
    certs = [cert(k, roles=("member",)) for k in keys]
    me = KeyPair(b"\xee" * 32)
    sender = keys[0]

    def run(colony: bool, inc: int, msgs: list[Gossip]) -> float:
        core = Swim(me, LAN, rng=random.Random(1),
                    admission=Admission(OWNER.public.raw, max_cache=2 * n) if colony else None,
                    chain=(cert(me).envelope,) if colony else ())  # fmt: skip
        core.handle(Join(), T0)
        first = Alive.create(sender, 0, (), (certs[0].envelope,) if colony else ())
        # The sender joins by push-pull (colony mode takes nothing else from a stranger).
        core.handle(Received(sender.peer_id, PushPull((MemberRecord(first),))), T0)
        t = time.perf_counter()
        for m in msgs:
            core.handle(Received(sender.peer_id, m), T0)
        dt = time.perf_counter() - t
        assert core.num_members() == n + 1, core.stats
        return len(msgs) / dt

    def claims(colony: bool, inc: int) -> list[Gossip]:
        return [Gossip((Alive.create(k, inc, (), (c.envelope,) if colony else ()),))
                for k, c in zip(keys[1:], certs[1:], strict=True)]  # fmt: skip

    open_rate = run(False, 1, claims(False, 1))
    colony_rate = run(True, 1, claims(True, 1))
    print(f"2. new members admitted per second by one core ({n - 1} claims)")
    print(f"   open mode (alive signature)          {open_rate:8.0f}/s")
    print(f"   colony mode (alive + 1-link chain)   {colony_rate:8.0f}/s   "
          f"ratio to open mode {colony_rate / open_rate:.2f} (2 Ed25519 verifications vs 1: "
          "the alive and the certificate; verify_chain trusts a link "
          "Certificate.from_envelope already verified)")


class Sim:
    """N cores, every Send delivered after 5 ms, timers on a heap (virtual time)."""

    def __init__(self, n: int, seed: int) -> None:
        self.keys = [KeyPair((i + 100).to_bytes(4, "big") * 8) for i in range(n)]
        self.certs = [cert(k, roles=("member",)) for k in self.keys]
        self.cores = {
            k.peer_id: Swim(k, LAN, rng=random.Random(seed + i),
                            admission=Admission(OWNER.public.raw),
                            chain=(c.envelope,))
            for i, (k, c) in enumerate(zip(self.keys, self.certs, strict=True))
        }
        self.q: list[tuple[float, int, Any, Any]] = []
        self.seq = 0
        self.timers: dict[tuple[Any, Any], float] = {}
        self.events: list[tuple[float, Any, Any]] = []

    def push(self, at: float, peer: Any, inp: Any) -> None:
        self.seq += 1
        heapq.heappush(self.q, (at, self.seq, peer, inp))

    def feed(self, peer: Any, inp: Any, now: float) -> None:
        for e in self.cores[peer].handle(inp, now):
            if isinstance(e, Send):
                self.push(now + 0.005, e.peer, Received(peer, e.msg))
            elif isinstance(e, SetTimer):
                self.timers[(peer, e.timer)] = e.at
                self.push(e.at, peer, ("timer", e.timer, e.at))
            elif isinstance(e, Emit):
                self.events.append((now, peer, e.event))

    def run_until(self, t: float, stop: Any = None) -> float:
        while self.q and self.q[0][0] <= t:
            at, _, peer, inp = heapq.heappop(self.q)
            if isinstance(inp, tuple) and inp[0] == "timer":
                if self.timers.get((peer, inp[1])) != inp[2]:
                    continue
                inp = TimerFired(inp[1])
            self.feed(peer, inp, at)
            if stop is not None and stop():
                return at
        return t


def revocation_spread(n: int) -> None:
    sim = Sim(n, seed=3)
    ids = list(sim.cores)
    sim.feed(ids[0], Join(), T0)
    for p in ids[1:]:
        sim.feed(p, Join((ids[0],)), T0)
    end = sim.run_until(T0 + 60, stop=lambda: all(c.num_members() == n
                                                   for c in sim.cores.values()))  # fmt: skip
    assert all(c.num_members() == n for c in sim.cores.values()), "did not converge"
    # Baseline: how long a fresh update (a refuting alive) takes to reach everyone.
    victim = ids[-1]
    t0 = end
    core = sim.cores[victim]
    core.transitions.refute(core.incarnation)  # a fresh alive at a higher incarnation, queued
    want = core.incarnation
    t_alive = sim.run_until(t0 + 60, stop=lambda: all(
        c.members[victim].incarnation >= want for p, c in sim.cores.items() if p != victim))
    alive_s = t_alive - t0
    # Revocation of the victim's certificate, published on node 0.
    t1 = t_alive
    rev = Revocation.issue(OWNER, sim.certs[-1], t1)
    sim.feed(ids[0], PublishRevocation(rev.envelope), t1)
    t_rev = sim.run_until(t1 + 60, stop=lambda: all(
        victim not in c.members for p, c in sim.cores.items() if p != victim))
    rev_s = t_rev - t1
    expelled = sum(1 for _, _, e in sim.events if isinstance(e, MemberExpelled))
    joined = sum(1 for _, _, e in sim.events if isinstance(e, MemberJoined))
    print(f"3. revocation spread, {n} colony-mode cores, 5 ms links (virtual time)")
    print(f"   fresh alive reaches all        {alive_s:6.2f} s")
    print(f"   revocation expels everywhere   {rev_s:6.2f} s   ratio {rev_s / alive_s:.2f}")
    print(f"   ({joined} joins, {expelled} expulsions recorded)")


def simultaneous_join(n: int) -> None:
    print(f"4. {n} nodes join through one seed at once, 5 ms links (virtual time)")
    for colony in (False, True):
        sim = Sim(n, seed=5)
        if not colony:  # the same cores in open mode
            for core in sim.cores.values():
                core.gate.admission, core.local.chain = None, ()
                core.local.alive = Alive.create(core.keys, 0, core.addrs)
        ids = list(sim.cores)
        sim.feed(ids[0], Join(), T0)
        for p in ids[1:]:
            sim.feed(p, Join((ids[0],)), T0)
        cores = list(sim.cores.values())
        end = sim.run_until(T0 + 120, stop=lambda cores=cores: all(
            c.num_members() == n for c in cores))
        sim.run_until(end + 5)
        suspected = sum(1 for _, _, e in sim.events if isinstance(e, MemberSuspected))
        label = "colony mode" if colony else "open mode  "
        print(f"   {label}  converged in {end - T0:6.2f} s, {suspected} false suspicions")


def revocation_on_daemons(n: int) -> None:
    sys.path.insert(0, str(_HERE.parent / "tests" / "integration"))
    from colony_cluster import Cluster, Node, wait_for

    from overlay.cli.main import main as colony_main

    def cli(home: pathlib.Path, *args: str) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = colony_main(["--home", str(home), *args])
        if rc != 0:
            raise RuntimeError(f"colony {' '.join(args)} failed: {out.getvalue()}")

    def live(node: Node) -> set[str]:
        return {r["id"] for r in node.members() if r["state"] in ("alive", "suspect")}

    def gone_everywhere(peer: str, nodes: list[Node]) -> None:
        wait_for(lambda: all(peer not in live(x) for x in nodes), 120,
                 f"{peer[-6:]} to leave every view", every=0.02)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(pathlib.Path(tmp) / "c", n)
        try:
            c.prepare()
            owner, *members = c.nodes
            cli(owner.home, "colony", "create", "bench")
            for node in members:
                tok = node.home.parent / f"{node.home.name}.token"
                cli(owner.home, "cert", "issue", node.peer_id, "--roles", "member,submit",
                    "--expires", "30d", "--bootstrap", owner.addr, "--out", str(tok))
                cli(node.home, "join", str(tok))
            c.launch()
            c.wait_converged(timeout=120)
            time.sleep(2.0)  # let the first gossip rounds settle
            leaver, revoked = members[-1], members[0]
            t = time.perf_counter()
            leaver.kill(signal.SIGTERM)
            rest = [x for x in c.nodes if x is not leaver]
            gone_everywhere(leaver.peer_id, rest)
            leave_s = time.perf_counter() - t
            t = time.perf_counter()
            cli(owner.home, "cert", "revoke", revoked.peer_id)
            gone_everywhere(revoked.peer_id, [x for x in rest if x is not revoked])
            revoke_s = time.perf_counter() - t
        finally:
            c.close()
    print(f"5. revocation on {n} real daemons, 127.0.0.1 (wall clock)")
    print(f"   graceful leave gone everywhere (limit)   {leave_s:6.2f} s")
    print(f"   revocation expels everywhere             {revoke_s:6.2f} s   "
          f"ratio {revoke_s / leave_s:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="cores in the spread test")
    ap.add_argument("--claims", type=int, default=2000, help="claims in the rate test")
    ap.add_argument("--daemons", type=int, default=5, help="real daemons in 5 (0: skip)")
    args = ap.parse_args()
    sizes()
    admission_rate(args.claims)
    revocation_spread(args.n)
    simultaneous_join(args.n)
    if args.daemons:
        revocation_on_daemons(args.daemons)
    _ = Envelope  # keep the import for readers following the types


if __name__ == "__main__":
    main()
