"""Closer peers in DHT answers carry addresses, with real daemons on 127.0.0.1
(services/dht_addrs.py; docs/dht.md "Addresses in answers").

n0 founds a colony and certifies n1, so each knows the other's addresses from gossip.
Outsider n2 (no certificate: not gossiped to) knows only n0. Its DHT lookups meet n1
only as a closer peer in n0's answers; before the fix those named n1 without
addresses, so every dial of n1 failed with "no known address" after a 1 s grace,
backed off, and n1 stayed unreachable until a provider record happened to name it
(docs/reliability.md, test_trust_private_blocks). Now n0's answer carries n1's
addresses and n2 reaches n1 in the same lookup: a FIND_NODE for n1 finds it (n1 is
among the lookup's closest peers only if it answered), and n2 never logs a dial of
n1 without an address. And n0, which knew n2 only from n2's own connection, asked it
for its addresses (identify), so its answers name n2 with them as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from colony_cluster import Cluster, Node, cli, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def saved_table(node: Node) -> set[str]:
    """Peer ids of the routing table the daemon saves (within a second of a change)."""
    try:
        rows = json.loads((node.home / "peers.json").read_text())["dht"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return set()
    return {str(r["id"]) for r in rows}


def addr_counts(node: Node) -> dict[str, float]:
    """The `colony_dht_addrs` counters (services/dht_addrs.AddrStats) from /metrics."""
    text = node.api(10).call("GET", "/metrics").decode()
    prefix = 'colony_dht_addrs_total{kind="'
    return {ln[len(prefix):].split('"')[0]: float(ln.split()[-1])
            for ln in text.splitlines() if ln.startswith(prefix)}


def test_an_outsider_reaches_a_member_named_only_in_a_dht_answer(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        n0, n1, n2 = c.nodes
        cli(n0.home, "colony", "create", "lab")
        tok = tmp_path / "n1.token"
        cli(n0.home, "cert", "issue", n1.peer_id, "--roles", "member", "--expires", "1d",
            "--bootstrap", n0.addr, "--out", str(tok))  # fmt: skip
        cli(n1.home, "join", str(tok))
        n0.start()
        n1.start([n0.addr])
        for n in (n0, n1):
            wait_for(n.up, c.start_timeout, f"daemon {n.home.name} API")
        c.wait_converged(timeout=30, nodes=[n0, n1])
        # n0's answers name n1 once n1 is in its routing table.
        wait_for(lambda: n1.peer_id in saved_table(n0), 30, "n1 in n0's routing table")

        n2.start([n0.addr])
        wait_for(n2.up, c.start_timeout, "daemon n02 API")
        assert n2.peer_id not in {r["id"] for r in n0.members()}  # an outsider indeed
        # Its bootstrap lookup went through n0 (already one answer naming n1).
        wait_for(lambda: n0.peer_id in saved_table(n2), 30, "n0 in n2's routing table")
        got = n2.api(30).call("POST", "/v1/dht/findpeer", {"peer": n1.peer_id})
        assert got["found"], got
        # Reached with the addresses of n0's answer: no dial of n1 went without one.
        # (Before the fix n2's first lookup, its bootstrap, logged exactly that.)
        blind = [ln for ln in n2.log.read_text().splitlines()
                 if f"no known address for {n1.peer_id}" in ln]
        assert not blind, blind[0]
        assert n1.peer_id in n2.api(10).call("GET", "/v1/peers")
        drops = n2.api(10).call("GET", "/v1/stats")["drops"]
        assert drops["dht.answer_addrs_dropped"] == 0, drops  # loopback: all in scope
        assert addr_counts(n0)["attached"] >= 1 and addr_counts(n2)["taken"] >= 1

        # The other way: n0 knew n2 only from n2's own (inbound) connection, and asked
        # it for its addresses (identify), so n0's answers name n2 with them too. The
        # peer book saves only table entries with an address (a bare one is no use
        # after a restart): n2 appears there once n0 knows one.
        wait_for(lambda: n2.peer_id in saved_table(n0), 30, "n2 in n0's saved table")
        assert addr_counts(n0)["identify_learned"] >= 1
    finally:
        c.close()
