"""Triggers on a loopback colony: event published → triggered capsule running.

Prints, for N daemons (default 20) on 127.0.0.1:
  * event→running p50/p99: from the client's `POST /v1/events/send` on a random node to
    the leading custodian's `CapsuleStarted` of the capsule the trigger launched
    (gossip carries the event to the trigger's lease holder, which derives the capsule
    and submits it; custody places it) — one event at a time;
  * the limit, measured in the same run the same way: submit→running of a plain
    capsule (the issue's bar: event→running p50 ≤ 100 ms, as submit→running);
    the ratio event→running / submit→running is what the trigger adds;
  * sustained rate: M events sent as fast as the API takes them from random nodes,
    from the first send to the last triggered capsule finished, in capsules/s; and
    the check that each event launched exactly one capsule.

With `--on topic` the events are topic messages (`POST /v1/topics/publish` to topic
`bench`, HyParView + Plumtree to the lease holder, which follows the topic) instead of
user events; each node first publishes warm-up messages until one launches a capsule
(the publisher's and the holder's joins of the swarm), not measured.

Run: .venv/bin/python bench/triggers.py [--nodes 20] [--latency 30] [--burst 100]
     [--kill holder|leader] [--on user|topic]
     (the issue's run: --nodes 10 --burst 500 --kill leader)
     .venv/bin/python bench/triggers.py --nodes 10 --cron 60   (a cron across a kill)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from capsule_helpers import EventLog, submit  # noqa: E402
from colony_cluster import Cluster, Node, wait_for  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def derived(nodes: list[Node], trigger_id: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for n in nodes:
        for r in n.api(30).call("GET", "/v1/capsules"):
            if r.get("trigger") == trigger_id:
                out.setdefault(r["name"], set()).add(r["id"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--latency", type=int, default=30, help="events one at a time")
    ap.add_argument("--burst", type=int, default=100, help="events sent at once")
    ap.add_argument("--kill", choices=["holder", "leader"], default=None,
                    help="kill -9, half-way through the burst, the node holding the "
                         "trigger's lease or its leading custodian (events then sent "
                         "one at a time)")
    ap.add_argument("--on", choices=["user", "topic"], default="user",
                    help="events are user events (SWIM) or topic messages (Plumtree)")
    ap.add_argument("--cron", type=float, default=0.0, metavar="SECONDS",
                    help="instead: a cron `@every 2s` for SECONDS, its leading custodian "
                         "killed (-9) half-way; count the ticks fired, each once "
                         "(the issue's run: --nodes 10 --cron 60)")
    args = ap.parse_args()
    if args.cron:
        cron_run(args.nodes, args.cron)
        return

    def emit(node: Node, payload: str) -> None:
        if args.on == "topic":
            node.api(30).call("POST", "/v1/topics/publish", {"topic": "bench", "data": payload})
        else:
            node.api(30).call("POST", "/v1/events/send", {"name": "bench", "payload": payload})

    rng = random.Random(1)
    spec: dict[str, Any] = {"command": ["true"], "maxexectime_s": 60}
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", args.nodes) as c:
        c.wait_converged(180)
        events = EventLog(c.nodes, ("CapsuleStarted", "CapsuleFinished"))
        time.sleep(2.0)
        tmpl = {**spec, "name": "ev-${event.payload}"}
        tid = c.nodes[0].api(60).call("POST", "/v1/triggers/add",
                                      {"on": f"{args.on}:bench", "template": tmpl})["id"]
        wait_for(lambda: c.nodes[0].api(10).call("GET", "/v1/triggers/get", id=tid)
                 ["record"]["state"] in ("leased", "running"), 60, "the trigger's lease")
        if args.on == "topic":  # warm-up: every node's messages reach the holder
            for k, node in enumerate(c.nodes):
                tries = iter(range(10**6))

                def warm(node: Node = node, k: int = k, tries: Any = tries) -> bool:
                    emit(node, f"w{k}-{next(tries)}")
                    return any(n.startswith(f"ev-w{k}-") for n in derived(c.nodes, tid))

                wait_for(warm, 120, f"node {k}'s first message to launch a capsule", every=1.0)

        plain: list[float] = []  # the limit: submit → running of a plain capsule
        for _ in range(args.latency):
            t = time.time()
            cid = submit(c.nodes[rng.randrange(args.nodes)], spec)

            def finished(cid: str = cid) -> bool:
                return events.count("CapsuleFinished")[cid] >= 1

            wait_for(finished, 30, "capsule", every=0.01)
            plain.append(events.first_time("CapsuleStarted")[cid] - t)

        sent: dict[str, float] = {}
        for i in range(args.latency):
            name = f"ev-l{i}"
            sent[name] = time.time()
            emit(c.nodes[rng.randrange(args.nodes)], f"l{i}")

            def started(name: str = name) -> bool:
                # Polling costs time between events only: the start time is the
                # custodian's event, taken from its watch stream.
                first = events.first_time("CapsuleStarted")
                return any(i in first for i in derived(c.nodes, tid).get(name, set()))

            wait_for(started, 60, f"triggered capsule {name}", every=0.2)
        found = derived(c.nodes, tid)
        first = events.first_time("CapsuleStarted")
        lat = [min(first[i] for i in found[n] if i in first) - t for n, t in sent.items()]

        killed: list[Node] = []
        live = list(c.nodes)

        def send(i: int) -> None:
            if args.kill and i == args.burst // 2:  # kill -9 mid-stream
                rec = live[0].api(10).call("GET", "/v1/triggers/get", id=tid)["record"]
                who = rec["executor"] if args.kill == "holder" else rec["custodians"][0]
                victim = next(n for n in c.nodes if n.peer_id == who)
                if victim is not c.nodes[0]:
                    victim.kill()
                    killed.append(victim)
                    live.remove(victim)
            node = live[rng.randrange(len(live))]
            try:
                emit(node, f"b{i}")
            except Exception:  # it was just killed: send through another
                emit(live[0], f"b{i}")

        t_burst = time.time()
        with ThreadPoolExecutor(1 if args.kill else 16) as pool:
            list(pool.map(send, range(args.burst)))
        names = {f"ev-b{i}" for i in range(args.burst)}
        wait_for(lambda: names <= set(derived(live, tid)), 600, "burst launched", every=0.5)
        found = derived(live, tid)
        ids = [i for n in names for i in found[n]]
        wait_for(lambda: all(events.count("CapsuleFinished")[i] >= 1 for i in ids), 600,
                 "burst finished", every=0.2)  # fmt: skip
        fin = events.first_time("CapsuleFinished")
        rate = len(names) / (max(fin[i] for i in ids) - t_burst)
        dupes = sum(len(v) - 1 for v in found.values())

    ms = 1e3
    load = os.getloadavg()[0]
    p50, lim = statistics.median(lat), statistics.median(plain)
    print(f"load average {load:.1f} on {os.cpu_count()} cores; {args.nodes} daemons; "
          f"events: {'topic messages' if args.on == 'topic' else 'user events'}")
    print(f"{'submit→running, plain capsule (limit)':<44} p50 {lim * ms:7.1f} ms  "
          f"p99 {pct(plain, 99) * ms:7.1f} ms")  # fmt: skip
    print(f"{'event→running, triggered capsule':<44} p50 {p50 * ms:7.1f} ms  "
          f"p99 {pct(lat, 99) * ms:7.1f} ms  (goal p50 ≤ 100 ms: "
          f"{'met' if p50 <= 0.1 else 'NOT met'}; ratio to limit {p50 / lim:.2f})")
    if args.kill:
        print(f"killed the trigger's {args.kill} half-way: "
              f"{[n.home.name for n in killed] or 'no (it was the API node)'}")
    print(f"{'burst of ' + str(args.burst) + ' events':<44} {rate:7.1f} triggered capsules/s"
          f"  ({dupes} duplicate capsules: exactly once {'held' if dupes == 0 else 'BROKEN'})")


def cron_run(nodes: int, seconds: float) -> None:
    """`@every 2s` for `seconds` across a kill -9 of the trigger's leading custodian:
    every tick between the first and the removal fires exactly once."""
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", nodes) as c:
        c.wait_converged(180)
        api = c.nodes[0].api(60)
        tmpl = {"name": "tick-${tick}", "command": ["true"]}
        row = api.call("POST", "/v1/triggers/add",
                       {"on": "cron", "schedule": "@every 2s", "template": tmpl})
        tid, created = row["id"], float(row["created"])
        time.sleep(seconds / 2)
        rec = api.call("GET", "/v1/triggers/get", id=tid)["record"]
        leader = rec["custodians"][0]
        victim = next((n for n in c.nodes[1:] if n.peer_id == leader), None)
        if victim is None:  # the API node leads: kill the lease holder instead
            victim = next((n for n in c.nodes[1:] if n.peer_id == rec["executor"]), None)
        if victim is not None:
            victim.kill()
        live = [n for n in c.nodes if n is not victim]
        time.sleep(seconds / 2)
        api.call("POST", "/v1/triggers/rm", {"id": tid})
        removed = time.time()
        time.sleep(5.0)  # ticks already fired finish their submission
        found = derived(live, tid)
    ticks = sorted(int(name.split("-")[1]) for name in found)
    first = ticks[0] if ticks else int(created) + 2
    expected = int((removed - first) // 2) + 1
    missing = sorted(set(range(first, int(removed) + 1, 2)) - set(ticks))
    dupes = sum(len(v) - 1 for v in found.values())
    print(f"{nodes} daemons; cron @every 2s for {seconds:g} s; killed "
          f"{victim.home.name if victim else 'nobody (node 0 led and held it)'} half-way")
    print(f"ticks fired {len(ticks)} of {expected} expected (first {first - int(created)} s "
          f"after creation); missing {len(missing)} {missing[:10]}; "
          f"{dupes} duplicate capsules: exactly once {'held' if dupes == 0 else 'BROKEN'}")


if __name__ == "__main__":
    main()
