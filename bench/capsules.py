"""Capsule placement latency and throughput on a loopback colony.

Prints, for N daemons (default 20) on 127.0.0.1:
  * submit→running latency p50/p99: from the client's submit call to the leading
    custodian's `CapsuleStarted` event (the lease was offered, the executor accepted,
    and RUNNING was replicated to a majority) — sequential submissions from random
    nodes, so each capsule meets an idle colony (goal p50 ≤ 100 ms; ColonyOS reports
    25 ms to assign with a central server);
  * submit→accepted (the API call returns once custody acknowledged the capsule);
  * throughput: M capsules (`true`) submitted concurrently from random nodes, from the
    first submit to the last `CapsuleFinished`, in capsules/s;
  * a second limit: fsync'd custody commits per second on this disk, and how many
    each capsule costs (every custodian commits every version before acting on it);
  * the limit, measured in the same run: one capsule-info request/response between two
    daemons as the API sees it (`GET /v1/capsules/get` of a capsule this node does
    not hold: the local HTTP call plus one parallel round trip to its custodians).
    Placement needs at least four such round trips (submit, replicate, offer/accept,
    replicate RUNNING), so the ratio latency / limit says how close to the wire we are;
  * a workflow chain: `colony workflow submit --wait` of K steps (default 5), each
    reading its parent's output by CID and appending to it (as
    tests/integration/test_capsule_colony.py runs it, without a time limit there),
    next to a 1-step workflow of the same kind through the same command in the same
    run (the limit: one CLI start, one placement, one run, one output upload). The
    ratio chain / limit is at most K when a dependent step costs no more than a lone
    capsule (the CLI start is paid once in both).

Run: .venv/bin/python bench/capsules.py [--nodes 20] [--latency 40] [--burst 200] [--chain 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on sys.path and bench/store.py would shadow the
# store package: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from capsule_helpers import EventLog, submit  # noqa: E402
from colony_cluster import Cluster, colony_cmd, wait_for  # noqa: E402

from store.custody_store import CustodyStore  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--latency", type=int, default=40, help="sequential capsules")
    ap.add_argument("--burst", type=int, default=200, help="concurrent capsules")
    ap.add_argument("--chain", type=int, default=5, help="workflow steps (0: skip)")
    args = ap.parse_args()
    rng = random.Random(1)
    spec = {"command": ["true"], "maxexectime_s": 60}

    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", args.nodes) as c:
        t0 = time.perf_counter()
        c.wait_converged(180)
        print(f"{args.nodes} daemons converged in {time.perf_counter() - t0:.1f} s "
              "after start", flush=True)  # fmt: skip
        events = EventLog(c.nodes, ("CapsuleStarted", "CapsuleFinished"))
        time.sleep(2.0)  # let ads and RTT estimates settle

        # Limit: a capsule-info round trip, as the API sees it.
        probe = submit(c.nodes[0], spec)
        wait_for(lambda: events.count("CapsuleFinished")[probe] >= 1, 30, "probe capsule")
        rtts = []
        for _ in range(40):
            node = c.nodes[rng.randrange(args.nodes)]
            api = node.api(30)
            t = time.perf_counter()
            api.call("GET", "/v1/capsules/get", id=probe)
            rtts.append(time.perf_counter() - t)
        limit = statistics.median(rtts)

        # Latency: one capsule at a time.
        lat, acc = [], []
        for _ in range(args.latency):
            node = c.nodes[rng.randrange(args.nodes)]
            t_submit = time.time()
            cid = submit(node, spec)
            acc.append(time.time() - t_submit)

            def finished(cid: str = cid) -> bool:
                return events.count("CapsuleFinished")[cid] >= 1

            wait_for(finished, 30, "capsule to finish", every=0.01)
            lat.append(events.first_time("CapsuleStarted")[cid] - t_submit)

        # Throughput: a burst from random nodes at once.
        def one(i: int) -> str:
            return submit(c.nodes[rng.randrange(args.nodes)], spec, 120)

        t_burst = time.time()
        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(one, range(args.burst)))
        t_submitted = time.time()
        wait_for(lambda: all(events.count("CapsuleFinished")[i] >= 1 for i in ids), 600,
                 "burst to finish", every=0.1)  # fmt: skip
        fin = events.first_time("CapsuleFinished")
        t_end = max(fin[i] for i in ids)
        rate = len(ids) / (t_end - t_burst)
        writes = sum(n.api().call("GET", "/v1/capsules/stats")["custody_store_writes"]
                     for n in c.nodes)  # fmt: skip
        n_capsules = 1 + args.latency + args.burst
        fsync_rate = durable_write_rate(Path(tmp))
        chain = workflow_timing(c.nodes[rng.randrange(args.nodes)].home, Path(tmp),
                                args.chain) if args.chain else None  # fmt: skip

    ms = 1e3
    print(f"{'capsule-info round trip via the API (limit)':<48} p50 {limit * ms:7.1f} ms")
    print(f"{'submit→accepted (API call returns)':<48} p50 {statistics.median(acc) * ms:7.1f} ms"
          f"  p99 {pct(acc, 99) * ms:7.1f} ms")  # fmt: skip
    p50, p99 = statistics.median(lat), pct(lat, 99)
    print(f"{'submit→running':<48} p50 {p50 * ms:7.1f} ms  p99 {p99 * ms:7.1f} ms  "
          f"(goal p50 ≤ 100 ms: {'met' if p50 <= 0.1 else 'NOT met'}; "
          f"ratio to limit {p50 / limit:.1f})")  # fmt: skip
    print(f"{'burst of ' + str(args.burst) + ' capsules':<48} {rate:7.1f} capsules/s  "
          f"(submitting took {t_submitted - t_burst:.1f} s; all finished "
          f"{t_end - t_burst:.1f} s after the first submit)")  # fmt: skip
    per = writes / n_capsules
    print(f"{'durable custody commits (fsync) on this disk':<48} {fsync_rate:7.0f} /s  "
          f"({per:.1f} per capsule over its custodians → at most "
          f"{fsync_rate / per:.0f} capsules/s if commits do not overlap; "
          f"burst ratio {rate / (fsync_rate / per):.2f})")  # fmt: skip
    if chain is not None:
        chain_s, one_s = chain
        print(f"{'1-step workflow, submit --wait (limit)':<48} {one_s:7.2f} s")
        print(f"{f'{args.chain}-step workflow, data by CID, submit --wait':<48} {chain_s:7.2f} s"
              f"  ratio to limit {chain_s / one_s:.2f} (≤ {args.chain}: a dependent step "
              "costs no more than a lone capsule)")  # fmt: skip


def chain_workflow(steps: int) -> str:
    """A workflow of `steps` capsules; each appends to its parent's output, fetched by CID
    (materialised as inputs/<parent>/v.txt) and hands its own on as an output."""
    parts = ['name = "chain"\n[[capsules]]\nname = "s1"\n'
             'command = ["sh", "-c", "echo 1 > v.txt"]\noutputs = ["v.txt"]\n']  # fmt: skip
    for i in range(2, steps + 1):
        parts.append(
            f'[[capsules]]\nname = "s{i}"\ndependencies = ["s{i - 1}"]\n'
            f'command = ["sh", "-c", "cat inputs/s{i - 1}/v.txt > v.txt; echo {i} >> v.txt"]\n'
            'outputs = ["v.txt"]\n'
        )
    return "\n".join(parts)


def workflow_timing(home: Path, tmp: Path, steps: int) -> tuple[float, float]:
    """(seconds for a `steps`-step chain, median seconds for a 1-step workflow), each
    from the start of `colony workflow submit --wait` to its exit, every step checked."""

    def run(k: int, tag: str) -> float:
        wf = tmp / f"chain-{tag}.toml"
        wf.write_text(chain_workflow(k))
        t = time.perf_counter()
        r = colony_cmd(home, "workflow", "submit", str(wf), "--wait", "--json", timeout=600)
        dt = time.perf_counter() - t
        states = [x["state"] for x in json.loads(r.stdout)["capsules"]]
        if states != ["succeeded"] * k:
            raise RuntimeError(f"workflow of {k} did not succeed: {states}")
        return dt

    one = statistics.median(run(1, f"one{i}") for i in range(3))
    return run(steps, "chain"), one


def durable_write_rate(root: Path, n: int = 200) -> float:
    """fsync'd custody-store commits per second from one process (the disk's limit)."""
    store = CustodyStore.open(root / "fsync-probe")
    record = b"x" * 1500  # about one custody record
    t = time.perf_counter()
    for i in range(n):
        store.apply(f"bafkreiprobe{i}", record)
    rate = n / (time.perf_counter() - t)
    store.close()
    return rate


if __name__ == "__main__":
    main()
