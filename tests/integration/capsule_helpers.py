"""Helpers for capsule tests and benches on real daemons (see colony_cluster.py)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from colony_cluster import Cluster, Node, wait_for

END_STATES = ("succeeded", "failed", "cancelled")


class EventLog:
    """Collects chosen node events from every daemon's /v1/events/watch stream."""

    def __init__(self, nodes: list[Node], kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        for n in nodes:
            self.watch(n)

    def watch(self, node: Node) -> None:
        ready = threading.Event()

        def run() -> None:
            try:
                # Open the connection here (the client's stream() is lazy), so no event
                # emitted after watch() returns is missed.
                _conn, resp = node.api(3600)._open("GET", "/v1/events/watch", None, None)
                ready.set()
                while line := resp.readline():
                    ev = json.loads(line)
                    if ev.get("event") in self.kinds:
                        with self._lock:
                            self.events.append((node.peer_id, ev))
            except Exception:
                pass  # the daemon was killed: its stream ends
            finally:
                ready.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        ready.wait(10)
        self._threads.append(t)

    def count(self, kind: str) -> Counter[str]:
        with self._lock:
            return Counter(ev["capsule_id"] for _, ev in self.events if ev["event"] == kind)

    def first_time(self, kind: str) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for _, ev in self.events:
                if ev["event"] == kind:
                    out.setdefault(ev["capsule_id"], ev["time"])
        return out


def submit(node: Node, spec: dict[str, Any], timeout_s: float = 60.0) -> str:
    r = node.api(timeout_s).call("POST", "/v1/capsules/submit", {"spec": spec})
    return str(r["id"])


def get(node: Node, cid: str) -> dict[str, Any]:
    row: dict[str, Any] = node.api(30).call("GET", "/v1/capsules/get", id=cid)
    return row


def wait_done(node: Node, cid: str, timeout_s: float) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for item in node.api(timeout_s + 30).stream("GET", "/v1/capsules/wait", id=cid,
                                                timeout=str(timeout_s)):  # fmt: skip
        final = item
    assert final.get("done"), f"capsule {cid} did not finish: {final}"
    return final


def wait_state(node: Node, cid: str, states: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    last: list[Any] = [None]

    def reached() -> Any:
        last[0] = r = get(node, cid)
        return r["state"] in states and r

    try:
        row: dict[str, Any] = wait_for(reached, timeout_s,
                                       f"capsule {cid} to be {'/'.join(states)}", every=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last[0]}") from None
    return row


def leader_of(cluster: Cluster, cid: str, skip: tuple[Node, ...] = ()) -> Node | None:
    """The node whose ps lists the capsule with the leader role."""
    for n in cluster.nodes:
        if n in skip:
            continue
        try:
            rows = n.api(10).call("GET", "/v1/capsules")
        except Exception:
            continue
        if any(r["id"] == cid and str(r.get("role", "")).startswith("leader") for r in rows):
            return n
    return None


def node_by_id(cluster: Cluster, peer_id: str) -> Node:
    for n in cluster.nodes:
        if n.peer_id == peer_id:
            return n
    raise AssertionError(f"no node {peer_id}")


def restart(cluster: Cluster, node: Node, timeout_s: float = 60.0) -> None:
    node.start([cluster.nodes[0].addr] if node is not cluster.nodes[0] else
               [cluster.nodes[1].addr], env=cluster.env)  # fmt: skip
    wait_for(node.up, timeout_s, f"daemon {node.home.name} back up")


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
