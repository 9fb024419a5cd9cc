"""Topics on a loopback colony: publish → delivered, and messages/s (tier 2 in the daemon).

Prints, for N daemons (default 10) on 127.0.0.1, node 0 publishing and every other node
subscribed through the SDK (one NDJSON stream each):
  * publish→delivered p50/p99 over every (message, subscriber): from the client's
    `POST /v1/topics/publish` to the subscriber's stream yielding the message, one
    message at a time (the HyParView + Plumtree path, signature checks, ordering and
    the control API's stream on both ends), after 3 warm-up messages (the publisher's
    join and the tree's first shaping, which cost one 0.5 s wait each: see below);
  * the limit, measured in the same run the same way: send→received of a serf-style
    user event (`POST /v1/events/send`, SWIM's piggybacked broadcast, tier 1) to the
    same subscribers' `/v1/events/watch` streams; the ratio says what tier 2 costs or
    saves against the broadcast the daemon already had;
  * a burst of M messages published by 8 client threads as fast as the API takes
    them: delivered messages/s per subscriber (first publish to the last message
    at the slowest subscriber), and the check that each subscriber got each message
    exactly once, in each publisher's order.

Run: .venv/bin/python bench/topics.py [--nodes 10] [--latency 50] [--burst 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, Node, wait_for  # noqa: E402

from overlay.client import Colony  # noqa: E402

TOPIC = "bench"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Stream(threading.Thread):
    """A subscriber (topic stream) or an event watcher; records (arrival, item)."""

    def __init__(self, node: Node, kind: str) -> None:
        super().__init__(daemon=True)
        self.node, self.kind = node, kind
        self.ready = threading.Event()
        self.got: list[tuple[float, dict[str, Any]]] = []

    def run(self) -> None:
        c = Colony.for_home(self.node.home)
        items = c.topic_subscribe(TOPIC) if self.kind == "topic" else c.events()
        if self.kind != "topic":
            self.ready.set()
        for item in items:
            if item.get("subscribed"):
                self.ready.set()
            elif self.kind == "topic" or item.get("event") == "UserEventReceived":
                self.got.append((time.time(), item))

    def arrival(self, key: str, value: str) -> float | None:
        return next((t for t, m in self.got if m.get(key) == value), None)


def one_at_a_time(streams: list[Stream], send: Any, key: str, n: int, tag: str) -> list[float]:
    lat: list[float] = []
    for i in range(n):
        text = f"{tag}{i}"
        t0 = time.time()
        send(text)

        def everywhere(text: str = text) -> bool:
            return all(s.arrival(key, text) for s in streams)

        wait_for(everywhere, 30, f"{tag} {i} everywhere", every=0.005)
        lat += [s.arrival(key, text) - t0 for s in streams]  # type: ignore[operator]
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--latency", type=int, default=50, help="messages one at a time")
    ap.add_argument("--burst", type=int, default=500, help="messages sent at once")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp) / "c", args.nodes) as c:
        c.wait_converged(180)
        subs = [Stream(n, "topic") for n in c.nodes[1:]]
        watchers = [Stream(n, "events") for n in c.nodes[1:]]
        for s in subs + watchers:
            s.start()
        for s in subs + watchers:
            assert s.ready.wait(30), f"{s.node.home.name} {s.kind} stream"
        time.sleep(2.0)  # rendezvous refreshes settle the swarm
        pub = Colony.for_home(c.nodes[0].home)
        # Warm-up, not measured: the publisher joins the swarm with its first publish
        # (rendezvous, a second lookup 0.5 s later, a first neighbour), and the first
        # messages shape the tree (duplicates prune links; a node left with lazy links
        # only waits for a GRAFT, 0.5 s).
        one_at_a_time(subs, lambda t: pub.topic_publish(TOPIC, t), "data", 3, "w")
        limit = one_at_a_time(watchers, lambda t: pub.send_event("bench", t), "payload",
                              args.latency, "e")
        lat = one_at_a_time(subs, lambda t: pub.topic_publish(TOPIC, t), "data",
                            args.latency, "l")
        texts = [f"b{i}" for i in range(args.burst)]
        t_burst = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: pub.topic_publish(TOPIC, t), texts))
        wait_for(lambda: all(s.arrival("data", texts[-1]) for s in subs)
                 and all(sum(m["data"].startswith("b") for _, m in s.got) >= args.burst
                         for s in subs), 300, "the burst everywhere", every=0.05)
        end = max(t for s in subs for t, m in s.got if m["data"].startswith("b"))
        rate = args.burst / (end - t_burst)
        bad = 0
        for s in subs:
            seqs = [m["seq"] for _, m in s.got]
            bad += len(seqs) != len(set(seqs)) or seqs != sorted(seqs)
            bad += len(seqs) != 3 + args.latency + args.burst
        drops = {k: v for n in c.nodes
                 for k, v in n.api(30).call("GET", "/v1/stats")["drops"].items()
                 if k.startswith("topics.") and v}

    ms = 1e3
    load = os.getloadavg()[0]
    p50, lim = statistics.median(lat), statistics.median(limit)
    print(f"load average {load:.1f} on {os.cpu_count()} cores; {args.nodes} daemons, "
          f"{args.nodes - 1} subscribers")
    print(f"{'user event send→received, tier 1 (limit)':<44} p50 {lim * ms:7.1f} ms  "
          f"p99 {pct(limit, 99) * ms:7.1f} ms")
    print(f"{'topic publish→delivered, tier 2':<44} p50 {p50 * ms:7.1f} ms  "
          f"p99 {pct(lat, 99) * ms:7.1f} ms  (ratio to limit {p50 / lim:.2f})")
    print(f"{'burst of ' + str(args.burst) + ' messages':<44} {rate:7.1f} messages/s "
          f"delivered to each subscriber  (order/once {'held' if bad == 0 else 'BROKEN'})")
    print(f"topic drops counted: {drops or 'none'}")


if __name__ == "__main__":
    main()
