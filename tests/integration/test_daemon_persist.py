"""The DHT routing table survives a restart, after SIGTERM and after kill -9 (DESIGN §9).

Four real daemons; node 3 is restarted with no bootstrap flag. After SIGTERM it must
come back with its routing table (as large as before) and find a provider. After
kill -9 the saved member list is deleted from peers.json first, so the routing table
saved by the running daemon (within a second of a change) is the only way back: the
node must still rejoin gossip, refill its table and find the provider.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def table_size(node: Node) -> int:
    text = node.api(10).call("GET", "/metrics").decode()
    for line in text.splitlines():
        if line.startswith("colony_dht_routing_table_size"):
            return int(float(line.split()[-1]))
    raise AssertionError("no colony_dht_routing_table_size in /metrics")


def saved_table(node: Node) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads((node.home / "peers.json").read_text())["dht"]
    return rows


def providers(node: Node, cid: str) -> list[str]:
    out: list[str] = node.api(30).call("POST", "/v1/dht/findprovs", {"cid": cid})["providers"]
    return out


def test_routing_table_survives_sigterm_and_kill9(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 4) as c:
        c.wait_converged(timeout=60)
        _, publisher, _, node = c.nodes
        data = tmp_path / "data.bin"
        data.write_bytes(deterministic_bytes(300_000, seed=7))
        cid = colony_cmd(publisher.home, "publish", str(data)).stdout.strip()
        wait_for(lambda: table_size(node) >= 3, 30, "node 3's table to hold every peer")
        wait_for(lambda: len(saved_table(node)) >= 3, 10, "the table saved to peers.json")
        before = table_size(node)

        # 1. SIGTERM: graceful stop, restart without --bootstrap.
        node.kill(signal.SIGTERM)
        assert node.proc is not None
        node.proc.wait(timeout=30)
        assert {r["id"] for r in saved_table(node)} >= {n.peer_id for n in c.nodes[:3]}
        node.start()
        wait_for(node.up, 60, "restarted node's API")
        wait_for(lambda: table_size(node) >= before, 30, f"table back to {before} peers")
        assert publisher.peer_id in providers(node, cid)

        # 2. kill -9, with the member list removed: only the saved table leads back.
        node.kill(signal.SIGKILL)
        path = node.home / "peers.json"
        saved = json.loads(path.read_text())
        assert len(saved["dht"]) >= 3
        path.write_text(json.dumps({"dht": saved["dht"]}))
        node.start()
        wait_for(node.up, 60, "node's API after kill -9")
        wait_for(lambda: table_size(node) >= before, 30, f"table back to {before} peers")
        assert publisher.peer_id in providers(node, cid)
        c.wait_converged(timeout=60)  # gossip rejoined through routing-table peers
