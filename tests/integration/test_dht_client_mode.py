"""`[dht] mode = "client"` on a real daemon: it looks up and provides, and no server
keeps it in its routing table (docs/dht.md, "Client mode").

Three daemons on 127.0.0.1; node 2 is a client. Servers learn of it from gossip
(AddPeer → PING) and from its requests (a verifying PING): a client registers no kad
handler, so every PING fails and it never enters their tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def saved_table(node: Node) -> set[str]:
    """Peer ids of the routing table the daemon saves (within a second of a change)."""
    try:
        rows: list[dict[str, Any]] = json.loads((node.home / "peers.json").read_text())["dht"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return set()
    return {str(r["id"]) for r in rows}


def providers(node: Node, cid: str) -> list[str]:
    out: list[str] = node.api(30).call("POST", "/v1/dht/findprovs", {"cid": cid})["providers"]
    return out


def test_client_daemon_looks_up_and_provides_but_stays_out_of_tables(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        server0, server1, client = c.nodes
        conf = client.home / "config.toml"
        text = conf.read_text()
        assert '# mode = "auto"' in text
        conf.write_text(text.replace('# mode = "auto"', 'mode = "client"'))
        c.launch()
        c.wait_converged(timeout=60)

        data = tmp_path / "from-client.bin"
        data.write_bytes(deterministic_bytes(200_000, seed=3))
        cid_c = colony_cmd(client.home, "publish", str(data)).stdout.strip()
        wait_for(lambda: client.peer_id in providers(server1, cid_c), 30,
                 "a server to find the client's provider record")
        data2 = tmp_path / "from-server.bin"
        data2.write_bytes(deterministic_bytes(200_000, seed=4))
        cid_s = colony_cmd(server0.home, "publish", str(data2)).stdout.strip()
        wait_for(lambda: server0.peer_id in providers(client, cid_s), 30,
                 "the client to find a server's provider record")

        # Servers know each other, the client knows both; no server holds the client.
        wait_for(lambda: server1.peer_id in saved_table(server0)
                 and server0.peer_id in saved_table(server1), 30, "servers in each other's table")
        wait_for(lambda: {server0.peer_id, server1.peer_id} <= saved_table(client), 30,
                 "both servers in the client's table")
        for s in (server0, server1):
            assert client.peer_id not in saved_table(s)
            stats = s.api(10).call("GET", "/v1/stats")["dht"]
            assert stats["role_checks_failed"] >= 1, stats
        assert client.api(10).call("GET", "/v1/stats")["dht"]["requests_served"] == 0
    finally:
        c.close()
