"""`kill -9` of random daemons in a loop while they fetch and run capsules.

The real-daemon counterpart of the simulator's crash faults (sim/faults.py): a colony
of daemons on 127.0.0.1; one publishes a file (`colony publish`, acknowledged = its
blocks are durable); capsules are submitted from live nodes; every node fetches the
file (`colony fetch`, resumable); meanwhile a killer SIGKILLs a random daemon, waits,
and restarts it from its home, for `duration_s`. Then every daemon is brought up and
the invariants are checked:

- **store intact**: every daemon starts again on its home after the kills (LMDB and
  the custody store open; a corrupt store would refuse to start);
- **nothing acknowledged lost**: every node fetches the published file afterwards,
  byte-identical (sha256), the publisher included;
- **liveness**: every capsule whose submission was acknowledged reaches `succeeded`
  within `settle_s` after the kills stop;
- **one receipt**: the nodes that hold a terminal custody record of a capsule agree
  on its final lease (token and executor): two accepted receipts would show as two.

Used by tests/integration/test_faults_kill_loop.py (short) and bench/faults_kill.py
(`make faults-real`, long). Every loop is bounded by its deadline.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from capsule_helpers import get
from colony_cluster import Cluster, DaemonExited, Node, colony_cmd, wait_for


@dataclass
class KillLoopResult:
    kills: int = 0
    fetch_attempts: int = 0
    fetch_failures: int = 0  # attempts cut by a kill (retried)
    submitted: list[str] = field(default_factory=list)
    submit_failures: int = 0
    #: capsule id → final state at the end (None: unknown to the asked node).
    final: dict[str, str | None] = field(default_factory=dict)
    #: capsule id → the distinct (token, executor) pairs of terminal records.
    receipts: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    fetched_ok: dict[str, bool] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        states = Counter(self.final.values())
        return (f"kills {self.kills}; fetch attempts {self.fetch_attempts} "
                f"({self.fetch_failures} cut by a kill); capsules acknowledged "
                f"{len(self.submitted)} (submit failures {self.submit_failures}), final "
                f"{dict(states)}; nodes with the file intact "
                f"{sum(self.fetched_ok.values())}/{len(self.fetched_ok)}; "
                f"violations {len(self.violations)}")


def _up(n: Node) -> bool:
    try:
        return n.up()
    except Exception:
        return False


def _restart(c: Cluster, n: Node, res: KillLoopResult, timeout_s: float = 60.0) -> None:
    """Start `n` again on its home; a daemon that exits or does not come up is a
    violation ("store intact"), with its log's tail, and is tried once more."""
    for attempt in (1, 2):
        seed = next((m for m in c.nodes if m is not n and _up(m)), None)
        n.start([seed.addr] if seed is not None else [], env=c.env)
        try:
            wait_for(n.up, timeout_s, f"{n.home.name} back up after kill -9")
            return
        except (DaemonExited, AssertionError) as e:
            res.violations.append(f"store intact: {n.home.name} did not start again "
                                  f"(attempt {attempt}): {str(e)[-1500:]}")
            n.kill(signal.SIGKILL)


class KillLoop:
    def __init__(self, c: Cluster, tmp: Path, *, seed: int, duration_s: float,
                 capsules: int, file_mib: int, down_s: tuple[float, float] = (0.5, 2.0),
                 settle_s: float = 180.0) -> None:
        self.c = c
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.capsules = capsules
        self.file_mib = file_mib
        self.down_s = down_s
        self.settle_s = settle_s
        self.res = KillLoopResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the killer and the workers pick live nodes

    # ------------------------------------------------------------ workload

    def publish(self) -> tuple[str, str]:
        data = self.rng.randbytes(self.file_mib << 20)
        path = self.tmp / "payload.bin"
        path.write_bytes(data)
        r = colony_cmd(self.c.nodes[0].home, "publish", str(path), timeout=300)
        return r.stdout.split()[0], hashlib.sha256(data).hexdigest()

    def _live(self) -> list[Node]:
        return [n for n in self.c.nodes if _up(n)]

    def _submitter(self) -> None:
        rng = random.Random(self.rng.random())
        for i in range(self.capsules):
            if self._stop.is_set():
                return
            live = self._live()
            if not live:
                time.sleep(0.2)
                continue
            node = rng.choice(live)
            spec = {"name": f"kl{i}", "maxretries": 10, "maxexectime_s": 60,
                    "command": ["sh", "-c", f"sleep 0.{rng.randrange(1, 9)}; echo {i}"]}
            try:
                r = node.api(30).call("POST", "/v1/capsules/submit", {"spec": spec})
                self.res.submitted.append(str(r["id"]))
            except Exception:
                self.res.submit_failures += 1  # killed mid-request: not acknowledged
            time.sleep(self.duration_s / max(1, self.capsules))

    def _fetcher(self, cid: str) -> None:
        rng = random.Random(self.rng.random())
        while not self._stop.is_set():
            live = [n for n in self._live() if n is not self.c.nodes[0]]
            if not live:
                time.sleep(0.2)
                continue
            node = rng.choice(live)
            self.res.fetch_attempts += 1
            r = colony_cmd(node.home, "fetch", cid, timeout=120, check=False)
            if r.returncode != 0:
                self.res.fetch_failures += 1

    def _killer(self) -> None:
        deadline = time.monotonic() + self.duration_s
        while time.monotonic() < deadline:
            victim = self.rng.choice(self.c.nodes)
            if _up(victim):
                victim.kill(signal.SIGKILL)
                self.res.kills += 1
                time.sleep(self.rng.uniform(*self.down_s))
                _restart(self.c, victim, self.res)
            time.sleep(self.rng.uniform(0.5, 2.0))

    # ------------------------------------------------------------ run and check

    def run(self) -> KillLoopResult:
        cid, digest = self.publish()
        workers = [threading.Thread(target=self._submitter, daemon=True),
                   threading.Thread(target=self._fetcher, args=(cid,), daemon=True)]
        for w in workers:
            w.start()
        try:
            self._killer()
        finally:
            self._stop.set()
            for w in workers:
                w.join(180)
        for n in self.c.nodes:  # store intact: each starts again on its home
            if not _up(n):
                _restart(self.c, n, self.res)
        self.c.wait_converged(120)
        self._check_capsules()
        self._check_file(cid, digest)
        return self.res

    def _check_file(self, cid: str, digest: str) -> None:
        for n in self.c.nodes:
            out = self.tmp / f"got-{n.home.name}"
            r = colony_cmd(n.home, "fetch", cid, "-o", str(out), timeout=300, check=False)
            ok = r.returncode == 0 and out.exists() and \
                hashlib.sha256(out.read_bytes()).hexdigest() == digest
            self.res.fetched_ok[n.home.name] = ok
            if not ok:
                self.res.violations.append(
                    f"acknowledged file {cid} not intact on {n.home.name}: {r.stderr[-300:]}")
            if out.exists():
                os.unlink(out)

    def _check_capsules(self) -> None:
        seed = self.c.nodes[0]
        deadline = time.monotonic() + self.settle_s
        pending = list(self.res.submitted)
        while pending and time.monotonic() < deadline:
            for cid in list(pending):
                try:
                    st = get(seed, cid).get("state")
                except Exception:
                    st = None
                self.res.final[cid] = st
                if st in ("succeeded", "failed", "cancelled"):
                    pending.remove(cid)
            time.sleep(1.0)
        for cid in pending:
            self.res.violations.append(f"liveness: capsule {cid} is "
                                       f"{self.res.final.get(cid)} {self.settle_s:.0f} s after")
        for cid, st in self.res.final.items():
            if st == "failed":
                self.res.violations.append(f"capsule {cid} failed (it always succeeds)")
        for n in self.c.nodes:
            for row in n.api(30).call("GET", "/v1/capsules"):
                if row.get("role") == "origin" or row.get("state") != "succeeded":
                    continue  # only custody records (leader or custodian) hold receipts
                self.res.receipts.setdefault(row["id"], set()).add(
                    (int(row["token"]), str(row.get("receipt_executor"))))
        for cid, finals in self.res.receipts.items():
            if len(finals) > 1:
                self.res.violations.append(f"one_receipt: capsule {cid} ended as {finals}")
