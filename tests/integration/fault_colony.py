"""A colony of real daemons in network namespaces on one bridge, for fault runs.

```
        ns hub: br0 10.77.0.1/24
     ┌──────┬──────┬── … ──┐   (one veth per node, plugged into br0)
   ns n00  ns n01  ns n02 …     node i at 10.77.0.(10+i), its own `colony daemon`
```

Every node is an `NsDaemon` (netns_topology.py): its own home, the API on its
namespace's loopback, libp2p on its bridge address. Node 0 is the seed.

Faults:
* `partition(a, b)`: iptables DROP in every node of each group for the addresses of
  the other group (INPUT and OUTPUT), so no packet crosses, in either direction;
  `heal()` flushes those rules. Connections are not reset: they stall, as behind a
  cut cable, and the daemons find out by their own timeouts.

The receipt checker (`ReceiptCheck`) reuses the simulator campaign's invariant
definitions (sim/campaign_check.Checker): it is fed snapshots of every reachable
node's custody records (`GET /v1/capsules`), polled during the run, so
`token_increase` sees every (token, executor) lease a snapshot caught, and
`one_receipt` sees every receipt a majority of its configuration holds (committed:
`committed_receipts`). A snapshot cannot see a lease that came and went between two
polls: the check is as fine as the polling. At the end, `violations` also lists every
finished outcome a node *reports* (its committed copy) that no majority holds
(`uncommitted_outcomes`): a deposed leader's own run must never be shown as the
capsule's (docs/capsules.md, "Deposed copies"). That judgement needs one consistent
state of all nodes, not rows read while custody still moves: `settle` polls until two
reads in a row agree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_topology import NsDaemon, Topology, remove_stale_namespaces, wait_until

from overlay.core.ids import PeerId
from sim.campaign_check import Checker

NET = "10.77.0"
END_STATES = ("succeeded", "failed", "cancelled")


@dataclass
class BridgeColony:
    """`with BridgeColony(tmp, n) as c:` — n daemons up in n namespaces on one bridge."""

    tmp: Path
    n: int
    topo: Topology = field(init=False)
    nodes: list[NsDaemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Topology gives names, run/popen/close; build() is not called (no NAT sites).
        self.topo = Topology(self.tmp)

    def __enter__(self) -> BridgeColony:
        try:
            self.build()
            self.start()
        except BaseException:
            self.topo.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.topo.close()

    def build(self) -> None:
        remove_stale_namespaces()
        from netns_topology import _LIVE

        _LIVE.append(self.topo)
        t = self.topo
        self.tmp.mkdir(parents=True, exist_ok=True)
        hub = t._add_ns("hub")
        t.ip(hub, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        t.ip(hub, "addr", "add", f"{NET}.1/24", "dev", "br0")
        t.ip(hub, "link", "set", "br0", "up")
        for i in range(self.n):
            ns = t._add_ns(f"n{i:02d}")
            port = f"v{i:02d}"
            t.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", hub)
            t.ip(hub, "link", "set", port, "master", "br0")
            t.ip(hub, "link", "set", port, "up")
            ip = f"{NET}.{10 + i}"
            t.ip(ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            t.ip(ns, "link", "set", "eth0", "up")
            self.nodes.append(NsDaemon(t, ns, ip, self.tmp / f"n{i:02d}", f"n{i:02d}"))

    def start(self) -> None:
        for nd in self.nodes:
            nd.home.parent.mkdir(parents=True, exist_ok=True)
            nd.init()
        seed = self.nodes[0]
        seed.start()
        for nd in self.nodes[1:]:  # at once: a node retries its bootstrap dial after 1 s
            nd.start([seed.addr])
        for nd in self.nodes:
            wait_until(lambda nd=nd: nd.api("GET", "/v1/id"), 90, f"{nd.name}'s API")

    def wait_converged(self, timeout: float, nodes: Sequence[NsDaemon] | None = None) -> float:
        """Every given node sees every given node alive; seconds it took."""
        group = list(nodes or self.nodes)
        want = {nd.peer_id for nd in group}
        t0 = time.monotonic()
        wait_until(
            lambda: all(want <= nd.alive_ids() for nd in group),
            timeout,
            f"{len(group)} nodes to see each other alive",
        )
        return time.monotonic() - t0

    # ------------------------------------------------------------ faults

    def partition(self, a: Sequence[NsDaemon], b: Sequence[NsDaemon]) -> None:
        for side, other in ((a, b), (b, a)):
            for nd in side:
                for peer in other:
                    for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                        self.topo.run(nd.ns, "iptables", "-A", chain, flag, peer.ip, "-j", "DROP")

    def heal(self) -> None:
        for nd in self.nodes:
            self.topo.run(nd.ns, "iptables", "-F", "INPUT")
            self.topo.run(nd.ns, "iptables", "-F", "OUTPUT")


@dataclass
class ReceiptCheck:
    """The campaign's invariants over snapshots of real custody records."""

    members: frozenset[PeerId]
    checker: Checker = field(init=False)
    t0: float = field(default_factory=time.monotonic)
    snapshots: int = 0
    unreachable: int = 0
    #: (node, capsule id) → the newest custody row that node served.
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: node → the last snapshot it answered; the reads that failed (for diagnosis).
    answered: dict[str, int] = field(default_factory=dict)
    failed_reads: list[str] = field(default_factory=list)
    #: Whether `settle` found a consistent state (None: not called).
    settled: bool | None = None

    def __post_init__(self) -> None:
        self.checker = Checker(self.members)

    def acked(self, cid: str) -> None:
        now = time.monotonic() - self.t0
        self.checker.submitted[cid] = now
        self.checker.acked[cid] = now

    def snapshot(self, nodes: Sequence[Any]) -> dict[str, list[dict[str, Any]]] | None:
        """Feed every reachable node's custody records to the checker (`nodes`:
        NsDaemon, or colony_cluster.Node on 127.0.0.1); returns each node's rows, or
        None if a node did not answer."""
        now = time.monotonic() - self.t0
        self.snapshots += 1
        rows: list[tuple[str, dict[str, Any]]] = []
        answered = 0
        for nd in nodes:
            try:
                got = (nd.api("GET", "/v1/capsules", timeout=30) if isinstance(nd, NsDaemon)
                       else nd.api(30).call("GET", "/v1/capsules"))
            except Exception as e:
                self.unreachable += 1
                self.failed_reads.append(
                    f"snap={self.snapshots} node={nd.peer_id[-6:]}: {e!r}"[:160])
                continue
            self.answered[nd.peer_id] = self.snapshots
            answered += 1
            rows += [
                (nd.peer_id, r) for r in got if "leader" in r["role"] or "custodian" in r["role"]
            ]
        # Leases in token order within a snapshot: a later snapshot's new lease with a
        # token at or below an earlier one is what `token_increase` catches.
        for _node, r in sorted(rows, key=lambda x: x[1].get("token") or 0):
            if r.get("token") and r.get("executor"):
                self.checker.on_leased(
                    now, r["id"], int(r["token"]), PeerId.from_base58(r["executor"])
                )
        for node, r in rows:
            self.latest[(node, r["id"])] = {**r, "_snap": self.snapshots}
            if r["state"] in END_STATES:
                self.checker.on_finished(now, r["id"], r["state"])
        for cid, node, token, executor in committed_receipts(self.latest):
            self.checker.on_receipt(now, PeerId.from_base58(node), cid, token,
                                    PeerId.from_base58(executor))
        if answered < len(nodes):
            return None
        by_node: dict[str, list[dict[str, Any]]] = {nd.peer_id: [] for nd in nodes}
        for node, r in rows:
            by_node[node].append(r)
        return by_node

    def settle(self, nodes: Sequence[Any], timeout: float = 30.0) -> bool:
        """Snapshot until two in a row read the same rows from every node, so the
        end-of-run judgement (`violations`) sees one consistent state of the colony;
        True if that happened within `timeout`.

        One snapshot reads the nodes one after another, so while custody still moves
        (a takeover after heal), it can read a new configuration's members before they
        received the record and its other holders after it committed: a receipt held
        by a majority, seen held by none. Found 2026-12-07 (docs/reliability.md): the
        nodes of the healed minority, polled first, took over right after their read.
        Rows only move forward (versions, epochs), so two identical reads of each node
        mean none changed in between: every node held what was read at one instant."""
        end = time.monotonic() + timeout
        last = self.snapshot(nodes)
        while time.monotonic() < end:
            time.sleep(1.0)
            rows = self.snapshot(nodes)
            if rows is not None and rows == last:
                self.settled = True
                return True
            last = rows
        self.settled = False
        return False

    def unfinished(self) -> list[str]:
        return [c for c in self.checker.acked if c not in self.checker.finished]

    def violations(self) -> list[str]:
        """The checker's, and every outcome reported without a majority holding it
        (judged on each node's latest rows: call it once the capsules ended)."""
        out = [v.line() for v in self.checker.violations]
        bad = uncommitted_outcomes(self.latest)
        out += [f"reported_outcome: node {node} reports capsule {cid[:16]} finished by "
                f"{ex} (token {token}), held by no majority"
                for node, cid, token, ex in bad]
        # Every node's latest row of each such capsule, so one failure explains itself.
        out += [f"  row {cid[:16]} {line}" for cid in sorted({b[1] for b in bad})
                for line in self.rows_of(cid)]
        if bad:
            out.append(f"  settled: {self.settled}")
            out += [f"  answered {n[-6:]}: snap {k}" for n, k in sorted(self.answered.items())]
            out += [f"  failed read {x}" for x in self.failed_reads[-10:]]
        return out

    def rows_of(self, cid: str) -> list[str]:
        """Each node's latest custody row of `cid`, in short (for failure messages)."""
        def short(r: dict[str, Any]) -> str:
            return (f"state={r.get('state')} epoch={r.get('epoch')} v={r.get('version')} "
                    f"token={r.get('token')} rx={str(r.get('receipt_executor'))[-6:]} "
                    f"cust={[str(p)[-6:] for p in r.get('custodians') or []]}")
        return [f"node={node[-6:]} snap={r['_snap']} {short(r)} committed={r.get('committed')} "
                f"pending={short(r['pending']) if r.get('pending') else None}"
                for (node, c), r in sorted(self.latest.items()) if c == cid]


def committed_receipts(
    latest: dict[tuple[str, str], dict[str, Any]],
) -> list[tuple[str, str, int, str]]:
    """(capsule, a custodian holding it, token, executor) of every receipt that a
    majority of the configuration that wrote it holds, in that configuration's epoch:
    the receipts custody accepted. A leader applies a receipt to its own copy first and
    acts on it (acknowledges, reports) only once a majority holds it
    (overlay/capsule/replication.py); a copy that never got further, like a minority
    leader's during a partition, is not an accepted receipt, and a later epoch may run
    the capsule again (docs/capsules.md, "Custody epochs"). `latest` keeps each node's
    newest row, so a commit seen across several polls still counts."""
    holders: dict[tuple[str, int, str, int, str], set[str]] = {}
    configs: dict[tuple[str, int, str, int, str], list[str]] = {}
    for (node, cid), row in latest.items():
        # The copy shown (committed) and a newer one held but not known committed.
        for r in (row, row.get("pending") or {}):
            if not r.get("receipt_executor") or not r.get("custodians"):
                continue
            key = (cid, int(r.get("epoch") or 0), r["custodians"][0], int(r["token"] or 0),
                   r["receipt_executor"])
            configs[key] = r["custodians"]
            if node in r["custodians"]:
                holders.setdefault(key, set()).add(node)
    return [(key[0], sorted(nodes)[0], key[3], key[4]) for key, nodes in holders.items()
            if len(nodes) > len(configs[key]) // 2]


def uncommitted_outcomes(
    latest: dict[tuple[str, str], dict[str, Any]],
) -> list[tuple[str, str, int, str]]:
    """(node, capsule, token, executor) of every finished outcome a node reports that
    no majority of its configuration holds (`committed_receipts`)."""
    ok = {(cid, token, ex) for cid, _, token, ex in committed_receipts(latest)}
    return sorted((node, cid, int(r["token"] or 0), r["receipt_executor"])
                  for (node, cid), r in latest.items()
                  if r.get("state") in END_STATES and r.get("receipt_executor")
                  and (cid, int(r["token"] or 0), r["receipt_executor"]) not in ok)


@dataclass
class PartitionResult:
    acked: int
    refused: int
    violations: list[str]
    unfinished: list[str]
    heal_to_done_s: float
    snapshots: int

    def summary(self) -> str:
        return (
            f"acked={self.acked} refused={self.refused} snapshots={self.snapshots} "
            f"heal_to_done_s={self.heal_to_done_s:.1f} unfinished={self.unfinished[:5]} "
            f"violations={self.violations}"
        )


def _submit(nd: NsDaemon, i: int) -> str | None:
    spec = {"name": f"p{i}", "command": ["sh", "-c", f"echo r{i} > r.txt"], "outputs": ["r.txt"]}
    try:
        return str(nd.api("POST", "/v1/capsules/submit", {"spec": spec}, timeout=40)["id"])
    except Exception:
        return None  # refused or timed out: not acknowledged, not owed completion


def run_partition(
    c: BridgeColony, capsules: int, hold_s: float, small: int, complete_bound_s: float
) -> PartitionResult:
    """Submit capsules round-robin (a third before, the rest during the partition of
    the first `small` nodes from the others), heal, then wait for completion.
    Every submission the API acknowledged with an id must end by heal + bound."""
    c.wait_converged(90)
    check = ReceiptCheck(frozenset(PeerId.from_base58(nd.peer_id) for nd in c.nodes))
    refused = 0
    before = capsules // 3
    for i in range(capsules):
        if i == before:
            c.partition(c.nodes[:small], c.nodes[small:])
            cut_at = time.monotonic()
        cid = _submit(c.nodes[i % len(c.nodes)], i)
        if cid is None:
            refused += 1
        else:
            check.acked(cid)
        if i % 5 == 4:
            check.snapshot(c.nodes)
    while time.monotonic() < cut_at + hold_s:
        check.snapshot(c.nodes)
        time.sleep(1.0)
    c.heal()
    healed = time.monotonic()
    while check.unfinished() and time.monotonic() < healed + complete_bound_s:
        check.snapshot(c.nodes)
        time.sleep(1.0)
    check.settle(c.nodes)
    # Completion is judged from custody records; also ask each origin, which finds
    # the record by the DHT when its own copy is not a custodian's.
    left = [cid for cid in check.unfinished() if not _ended_somewhere(c, cid)]
    return PartitionResult(
        len(check.checker.acked),
        refused,
        check.violations(),
        left,
        time.monotonic() - healed,
        check.snapshots,
    )


def _ended_somewhere(c: BridgeColony, cid: str) -> bool:
    for nd in c.nodes:
        try:
            if nd.api("GET", f"/v1/capsules/get?id={cid}")["state"] in END_STATES:
                return True
        except Exception:
            continue
    return False
